"""The smallest over-refusal difference a comparison at the study's sizes can detect (80% power, two-sided 5%).

Reads the base model's per-set refusal rates from an evaluation run folder and reports, per over-refusal set
and for their pooled prompts, the detectable difference unpaired and paired (McNemar; the pair of models
disagreeing on a share ``d`` of the prompts), from :func:`mosr.stats.detectable_difference`.

    python experiments/power.py --run runs/qwen-coder/eval-base --out experiments/results/qwen-coder/power
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from mosr.io import read_rows, script_provenance, write_json, write_text
from mosr.stats import detectable_difference

SETS = ("xstest-safe", "jbb-benign", "orbench-hard")
DISCORDANT = (0.1, 0.2, 0.3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the base model's evaluation run folder")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    refused: dict[str, list[bool]] = defaultdict(list)
    for r in read_rows(Path(args.run) / "responses.jsonl"):
        if r["set"] in sets and r.get("verdict"):
            refused[r["set"]].append(r["verdict"] != "compliance")
    groups = {name: refused[name] for name in sets} | {"pooled": [x for name in sets for x in refused[name]]}
    table = {}
    for name, ys in groups.items():
        n, rate = len(ys), sum(ys) / len(ys)
        table[name] = {
            "n": n,
            "base_rate": 100 * rate,
            "unpaired": 100 * detectable_difference(n, rate),
            **{f"paired_d{d}": 100 * detectable_difference(n, rate, discordant=d) for d in DISCORDANT},
        }
    out = Path(args.out)
    write_json(out / "power.json", {"run": args.run, "alpha": 0.05, "power": 0.8, "sets": table, **script_provenance()})
    lines = [
        "Smallest detectable over-refusal difference (points; 80% power, two-sided 5%)",
        "",
        "| set | n | base RR % | unpaired | " + " | ".join(f"paired, d = {d}" for d in DISCORDANT) + " |",
        "|---|---|---|---|" + "---|" * len(DISCORDANT),
    ]
    for name, t in table.items():
        lines.append(
            f"| {name} | {t['n']} | {t['base_rate']:.1f} | {t['unpaired']:.1f} | "
            + " | ".join(f"{t[f'paired_d{d}']:.1f}" for d in DISCORDANT)
            + " |"
        )
    write_text(out / "power.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
