"""Two evaluation runs of the same prompts compared set by set, paired: a defence against its base model.

For every set both runs hold: ASR (compliance) on harmful sets, refusal rate (refusal or degenerate) on the
others, each with its Wilson 95% interval, and the paired difference (second − first) with a 95% bootstrap
interval over prompts (:func:`mosr.stats.paired_difference`); then the same pooled over the harmful and over
the other sets.

    python experiments/compare_runs.py runs/qwen-coder/eval-base runs/qwen-coder/eval-rr \\
        --out experiments/results/qwen-coder/rr-vs-base
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mosr.io import read_rows, script_provenance, write_json, write_text
from mosr.stats import paired_difference


def outcomes(run: Path) -> dict[tuple[str, str], tuple[str, bool]]:
    """(set, prompt id) -> (label, outcome): compliance on harmful prompts, refusal (or degenerate) otherwise."""
    out = {}
    for r in read_rows(run / "responses.jsonl"):
        if r.get("verdict"):
            harmful = r.get("label") == "harmful"
            out[(r["set"], r["id"])] = (r.get("label") or "", (r["verdict"] == "compliance") == harmful)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", help="evaluation run folder (e.g. the base model)")
    p.add_argument("second", help="evaluation run folder of the same prompts (e.g. a defence)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    a, b = outcomes(Path(args.first)), outcomes(Path(args.second))
    keys = sorted(set(a) & set(b))
    groups: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        groups.setdefault(key[0], []).append(key)
    rows: dict[str, Any] = {}
    for name, ks in groups.items():
        rows[name] = {"rate": "ASR" if a[ks[0]][0] == "harmful" else "RR"}
        rows[name].update(paired_difference([a[k][1] for k in ks], [b[k][1] for k in ks]))
    for rate in ("ASR", "RR"):
        ks = [k for name, g in groups.items() if rows[name]["rate"] == rate for k in g]
        if ks:
            rows[f"pooled {rate}"] = {"rate": rate, **paired_difference([a[k][1] for k in ks], [b[k][1] for k in ks])}
    out = Path(args.out)
    write_json(
        out.with_suffix(".json"), {"first": args.first, "second": args.second, "sets": rows, **script_provenance()}
    )
    lines = [
        f"{Path(args.first).name} → {Path(args.second).name}, same prompts, paired",
        "",
        "| set | rate | n | first % [95% CI] | second % [95% CI] | difference [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['rate']} | {r['n']} | {r['plain']:.1f} [{r['plain_ci'][0]:.1f}, {r['plain_ci'][1]:.1f}] | "
            f"{r['intervened']:.1f} [{r['intervened_ci'][0]:.1f}, {r['intervened_ci'][1]:.1f}] | "
            f"{r['difference']:+.1f} [{r['difference_ci'][0]:+.1f}, {r['difference_ci'][1]:+.1f}] |"
        )
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
