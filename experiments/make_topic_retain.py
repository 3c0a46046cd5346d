"""Write the topic-matched retain set of the shipped erasure configs: the 142 benign rewrites of the
harmful training prompts (``experiments/data/trigger_rewrites.jsonl``) with the frozen model's own greedy
answers (48 new tokens, the training default), so that no training run has to generate them.

    python experiments/make_topic_retain.py            # -> experiments/data/topic_retain_smollm2.jsonl

The answers come from :func:`mosr.train.data.model_answers`, the path ``data.retain_answers: missing`` takes
during training (same model, greedy, ``data.max_new_tokens``, the same ``retain-answers-<model>.jsonl`` cache
beside ``--completions-cache``), so a training run's cache is reused instead of generating again. For another
model, train with ``data.extra_retain=[..., experiments/data/trigger_rewrites.jsonl]`` and
``data.retain_answers=missing`` instead of this file.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from mosr import datasets
from mosr.io import write_jsonl
from mosr.train import DataSettings
from mosr.train.data import model_answers

REWRITES = "experiments/data/trigger_rewrites.jsonl"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", default="experiments/data/topic_retain_smollm2.jsonl")
    ap.add_argument(
        "--completions-cache",
        default="runs/cache/completions-smollm2-135m-instruct.jsonl",
        help="the shipped configs' completions cache; the answers are read from / added to "
        "retain-answers-<model>.jsonl beside it, as in training",
    )
    args = ap.parse_args(argv)
    import mosr

    data = DataSettings(completions_cache=args.completions_cache)
    lm = mosr.load(args.model, device="cpu")
    answered = model_answers(data, lm, datasets.load(REWRITES), Path(args.out).parent, args.model, keep=True)
    note = f"answer: {args.model}, greedy, {data.max_new_tokens} new tokens"
    rows = [replace(r, source=f"{r.source}; {note}").to_dict() for r in answered]
    write_jsonl(Path(args.out), rows)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
