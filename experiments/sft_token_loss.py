"""Where does a safety-SFT run's benign term act? Per-token NLL of its training examples, decision token apart.

SFT's loss is the mean NLL over each example's answer tokens, so an answer's first token, the one that decides
between answering and refusing, weighs 1 / (answer length): a long benign answer holds its first token far more
weakly than a short refusal template pushes its own. This script reads a training run's examples (rebuilt from
its ``config.yaml`` and caches, exactly as training built them: :func:`mosr.train.data.build_data` with
generation off) and reports, for the base model and the trained adapter, per kind (``sft`` = benign answers,
``refusal``): the mean NLL of the first answer token, the mean NLL of the other answer tokens, the mean answer
length, and the probability that the first answer token is a refusal opener (the judge's refusal prefixes'
first tokens, ``LM.refusal_token_ids``: "I", "Sorry", "As", ...).

    python experiments/sft_token_loss.py --run runs/study-trigger/train/trigger_sft-s0 \\
        --out experiments/results/trigger/token-loss/trigger_sft

Writes ``<out>/token_loss.json`` and ``<out>/token_loss.md``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mosr.errors import MosrError
from mosr.io import script_provenance, write_json, write_text


def per_token(lm: Any, encoded: list[Any], batch_size: int) -> list[tuple[Tensor, float]]:
    """For each encoded example: ``Tensor[n_answer]`` NLL of its trained answer tokens (EOS included), and the
    probability mass on refusal openers at the position that predicts the first answer token."""
    from mosr.encoding import collate

    openers = lm.refusal_token_ids
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    out: list[tuple[Tensor, float]] = []
    for i in range(0, len(encoded), batch_size):
        batch = collate(encoded[i : i + batch_size], pad)
        with torch.no_grad():
            logits = lm.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
            ).logits.float()
        logp = logits[:, :-1].log_softmax(-1)  # position t predicts token t+1
        labels = batch["labels"][:, 1:]
        for b in range(labels.shape[0]):
            pos = (labels[b] != -100).nonzero().flatten()
            if not len(pos):
                continue
            nll = -logp[b, pos, labels[b, pos]]
            mass = float(logp[b, pos[0], openers].exp().sum())
            out.append((nll, mass))
    return out


def summarise(rows: list[tuple[Tensor, float]]) -> dict[str, float]:
    first = torch.stack([n[0] for n, _ in rows])
    rest = torch.cat([n[1:] for n, _ in rows])
    return {
        "n": len(rows),
        "first_token_nll": float(first.mean()),
        "other_tokens_nll": float(rest.mean()) if len(rest) else float("nan"),
        "answer_tokens": float(sum(len(n) for n, _ in rows) / len(rows)),
        "first_token_weight": float(sum(1 / len(n) for n, _ in rows) / len(rows)),
        "refusal_opener_mass": float(sum(m for _, m in rows) / len(rows)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a training run folder (config.yaml, adapter/)")
    p.add_argument("--adapter", default=None, help="adapter folder (default: <run>/adapter)")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    try:
        return run(args)
    except MosrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    import mosr
    from mosr.train import TrainConfig
    from mosr.train.data import build_data

    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise MosrError(f"{run_dir} is not a training run folder (no config.yaml)")
    adapter = Path(args.adapter) if args.adapter else run_dir / "adapter"
    cfg = TrainConfig.load(run_dir / "config.yaml")
    if cfg.method not in ("sft", "psft", "trigger_sft"):
        raise MosrError(f"{run_dir}: method {cfg.method!r} is not an SFT-family method")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = mosr.load(cfg.model)
    cfg = cfg.resolved(base)
    data = build_data(replace(cfg.data, generate=False), cfg.example_plan(), base, out / "data", False)
    result: dict[str, Any] = {"run": str(run_dir), "adapter": str(adapter), "method": cfg.method, "kinds": {}}
    trained = mosr.load(cfg.model, adapter=str(adapter))
    for kind in ("sft", "refusal"):
        pool = data.pools.get(kind, [])
        result["kinds"][kind] = {
            "base": summarise(per_token(base, pool, args.batch_size)),
            "adapter": summarise(per_token(trained, pool, args.batch_size)),
        }
    result["provenance"] = script_provenance()
    write_json(out / "token_loss.json", result)
    lines = [
        f"Per-token NLL of {cfg.method}'s training examples ({run_dir}), base model and adapter. first = the first"
        " answer token (answer or refuse); weight = its mean share of the example's loss (1 / answer tokens);"
        " opener mass = probability of a refusal opener as the first answer token.",
        "",
        "| kind | model | n | answer tokens | first-token weight | first-token NLL | other tokens NLL | opener mass |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, by in result["kinds"].items():
        for model, s in by.items():
            lines.append(
                f"| {kind} | {model} | {s['n']} | {s['answer_tokens']:.1f} | {s['first_token_weight']:.3f} |"
                f" {s['first_token_nll']:.3f} | {s['other_tokens_nll']:.3f} | {s['refusal_opener_mass']:.3f} |"
            )
    write_text(out / "token_loss.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
