"""How close are a run's harmful training prompts to the evaluated prompts? Exact matches are removed by the
overlap filter (:func:`mosr.train.sources.remove_overlap`); near relatives are not. For each evaluated set (the
sample ``mosr eval`` draws at ``--n`` / ``--seed``), the share of prompts whose nearest training prompt shares at
least a given fraction of word types (Jaccard of lower-cased word sets)::

    python experiments/near_duplicates.py --config runs/qwen-h533/rr-h533-s120/train/config.yaml \\
        --sets jbb-harmful,advbench,harmbench,strongreject --n 100 \\
        --out experiments/results/qwen-coder/qwen-h533/near-duplicates

Writes ``near_duplicates.json`` / ``.md`` (with the two nearest pairs per set as examples).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mosr.train import TrainConfig

THRESHOLDS = (0.5, 0.7, 0.9)


def words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def training_words(cfg: TrainConfig) -> list[tuple[str, frozenset[str]]]:
    """The harmful training prompts of a :class:`mosr.train.TrainConfig` (after the overlap filter and its
    sample), each with its word set."""
    from mosr.train.data import eval_sets, harmful_prompts

    train = harmful_prompts(cfg.data, eval_sets(cfg.data)).sample(cfg.data.n_harmful, cfg.seed)
    return [(r.prompt, words(r.prompt)) for r in train]


def nearest(prompt: str, train_words: list[tuple[str, frozenset[str]]]) -> tuple[float, str]:
    """``(Jaccard, training prompt)`` of the training prompt nearest to ``prompt``."""
    w = words(prompt)
    return max((jaccard(w, tw), tp) for tp, tw in train_words)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a mosr train config (its data settings give the prompts)")
    p.add_argument("--sets", default="jbb-harmful,advbench,harmbench,strongreject")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from mosr.evaluation.config import load_set
    from mosr.io import script_provenance
    from mosr.train import TrainConfig

    cfg = TrainConfig.load(args.config)
    train_words = training_words(cfg)
    rows: dict[str, Any] = {}
    for name in args.sets.split(","):
        ev = load_set(name, cfg.data.data_dir, args.n, args.seed)
        pairs = []
        for r in ev:
            sim, prompt = nearest(r.prompt, train_words)
            pairs.append((sim, r.prompt, prompt))
        sims = [s for s, _, _ in pairs]
        rows[name] = {
            "n": len(sims),
            "share_at_least": {str(t): round(sum(s >= t for s in sims) / len(sims), 3) for t in THRESHOLDS},
            "mean_nearest": round(sum(sims) / len(sims), 3),
            "examples": [{"jaccard": round(s, 3), "eval": e, "train": t} for s, e, t in sorted(pairs)[-2:]],
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "provenance": script_provenance(),
        "config": args.config,
        "n_train": len(train_words),
        "seed": args.seed,
        "sets": rows,
    }
    (out / "near_duplicates.json").write_text(json.dumps(result, indent=1) + "\n")
    head = "| set | n | " + " | ".join(f"share ≥ {t}" for t in THRESHOLDS) + " | mean nearest |"
    lines = [f"# Nearest harmful training prompt ({len(train_words)} prompts) per evaluated prompt (word Jaccard)", ""]
    lines += [head, "|---" * (3 + len(THRESHOLDS)) + "|"]
    for name, r in rows.items():
        shares = " | ".join(f"{100 * r['share_at_least'][str(t)]:.0f}%" for t in THRESHOLDS)
        lines.append(f"| {name} | {r['n']} | {shares} | {r['mean_nearest']:.2f} |")
    (out / "near_duplicates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
