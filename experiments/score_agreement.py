"""Where the logit refusal score (``mosr eval --mode score``, no generation) may stand in for generation.

For an evaluation run folder made in generate mode (every row has the judge's verdict and the first-token
refusal log-odds), per set: the AUROC (DeLong 95% CI) of the score for the judged refusal, and the refusal rate
the score gives against the judged one, at threshold 0 and at one threshold calibrated on the tuning sets
(the value that makes the score's rate over the tuning sets equal the judged rate there).

    python experiments/score_agreement.py --run runs/qwen-coder/eval-base \
        --out experiments/results/qwen-coder/score-agreement
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from mosr.io import read_rows, script_provenance, write_json, write_text
from mosr.stats import auroc_ci

TUNING = ("jbb-harmful", "advbench", "jbb-benign", "xstest-safe")


def calibrated_threshold(scores: np.ndarray, refused: np.ndarray) -> float:
    """The threshold whose share of scores above it equals the share of judged refusals."""
    return float(np.quantile(scores, 1 - refused.mean()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a mosr eval run folder (generate mode)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    by: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for r in read_rows(Path(args.run) / "responses.jsonl"):
        if r.get("verdict") and r.get("refusal_score") is not None:
            by[r["set"]].append((float(r["refusal_score"]), r["verdict"] != "compliance"))
    tune = np.array([x for s in TUNING for x in by.get(s, [])])
    t = calibrated_threshold(tune[:, 0], tune[:, 1].astype(bool)) if len(tune) else 0.0
    sets = {}
    for name, pairs in by.items():
        sc, y = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs], dtype=bool)
        auc, lo, hi = auroc_ci(sc, y)
        sets[name] = {
            "n": len(y),
            "auroc": auc,
            "auroc_ci": [lo, hi],
            "judged_rate": 100 * y.mean(),
            "score_rate_at_0": 100 * (sc > 0).mean(),
            "score_rate_calibrated": 100 * (sc > t).mean(),
        }
    out = Path(args.out)
    write_json(
        out / "agreement.json",
        {"run": args.run, "threshold_calibrated": t, "tuning_sets": list(TUNING), "sets": sets, **script_provenance()},
    )
    lines = [
        f"Logit refusal score vs the judge ({args.run}); calibrated threshold {t:+.2f} (tuning sets)",
        "",
        "| set | n | AUROC [95% CI] | judged refusal % | score > 0 % | score > calibrated % |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in sets.items():
        lines.append(
            f"| {name} | {s['n']} | {s['auroc']:.3f} [{s['auroc_ci'][0]:.3f}, {s['auroc_ci'][1]:.3f}] | "
            f"{s['judged_rate']:.1f} | {s['score_rate_at_0']:.1f} | {s['score_rate_calibrated']:.1f} |"
        )
    write_text(out / "agreement.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
