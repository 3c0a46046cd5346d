"""Arditi et al.'s two checks of a refusal direction, from four evaluation run folders of the same prompts:

1. ablating the direction (``mosr eval --ablate DIR``) makes the model comply with harmful prompts it refused;
2. adding it (``mosr eval --steer DIR --alpha A``) makes the model refuse harmless prompts it answered.

Each check compares a plain and an intervened run on the same prompts: the judged refusal rate of each (Wilson
95% CI), the paired difference with a 95% bootstrap CI over prompts (10,000 resamples), and how many prompts
flip each way.

    python experiments/refusal_checks.py --ablate runs/qwen-coder/eval-base runs/qwen-coder/eval-ablate \\
        --steer runs/qwen-coder/eval-harmless runs/qwen-coder/eval-harmless-steer \\
        --out experiments/results/qwen-coder/refusal-checks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mosr.errors import DataError
from mosr.io import read_rows, script_provenance, write_json, write_text
from mosr.stats import paired_difference


def refusals(run: Path, set_name: str | None) -> dict[str, bool]:
    """Prompt id -> judged refusal (refusal or degenerate) for the rows of ``set_name`` (None: every set)."""
    out = {}
    for r in read_rows(run / "responses.jsonl"):
        if r.get("verdict") and (set_name is None or r["set"] == set_name):
            out[r["id"]] = r["verdict"] != "compliance"
    return out


def paired(plain: dict[str, bool], treated: dict[str, bool]) -> dict[str, Any]:
    """:func:`mosr.stats.paired_difference` over the prompts both runs share (refusal = 1)."""
    ids = sorted(set(plain) & set(treated))
    if not ids:
        raise DataError("the two runs share no prompt")
    out = paired_difference([plain[i] for i in ids], [treated[i] for i in ids])
    out["refused_then_complied"], out["complied_then_refused"] = out.pop("one_to_zero"), out.pop("zero_to_one")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ablate", nargs=2, metavar=("PLAIN", "ABLATED"), help="harmful prompts, plain and ablated")
    p.add_argument("--ablate-set", default="jbb-harmful")
    p.add_argument("--steer", nargs=2, metavar=("PLAIN", "STEERED"), help="harmless prompts, plain and steered")
    p.add_argument("--steer-set", default=None, help="set of the steer runs (default: every set in them)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    res: dict[str, Any] = {}
    if args.ablate:
        plain, ablated = (Path(x) for x in args.ablate)
        res["ablation"] = paired(refusals(plain, args.ablate_set), refusals(ablated, args.ablate_set))
        res["ablation"]["set"] = args.ablate_set
    if args.steer:
        plain, steered = (Path(x) for x in args.steer)
        res["addition"] = paired(refusals(plain, args.steer_set), refusals(steered, args.steer_set))
        res["addition"]["set"] = args.steer_set or "all"
    write_json(Path(args.out) / "checks.json", {**res, **script_provenance()})
    lines = [
        "| check | set | n | refusal % plain [95% CI] | refusal % intervened [95% CI] | difference [95% CI] | "
        "refused→complied | complied→refused |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        lines.append(
            f"| {name} | {r['set']} | {r['n']} | {r['plain']:.1f} [{r['plain_ci'][0]:.1f}, {r['plain_ci'][1]:.1f}] | "
            f"{r['intervened']:.1f} [{r['intervened_ci'][0]:.1f}, {r['intervened_ci'][1]:.1f}] | "
            f"{r['difference']:+.1f} [{r['difference_ci'][0]:+.1f}, {r['difference_ci'][1]:+.1f}] | "
            f"{r['refused_then_complied']} | {r['complied_then_refused']} |"
        )
    write_text(Path(args.out) / "checks.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
