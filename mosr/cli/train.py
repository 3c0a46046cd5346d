"""``mosr train``: train a LoRA defence (MOSR, an ablation or a baseline) from one config file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mosr.config import apply_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA defence from a config (experiments/<method>.yaml)",
                       description="Train MOSR / rr / sft / psft / trigger_sft from a config file. Runs under "
                                   "`accelerate launch` unchanged for DDP / FSDP.")
    p.add_argument("--config", required=True, help="YAML / JSON TrainConfig, e.g. experiments/mosr.yaml")
    p.add_argument("--out", required=True, help="run folder (config, log.jsonl, checkpoints/, adapter/)")
    p.add_argument("--steps", type=int, default=None, help="override the config's number of optimizer steps")
    p.add_argument("--resume", action="store_true",
                   help="insist on resuming (an --out without a started run is then an error); a re-run of the same "
                        "command resumes from the newest checkpoint without it, and reports a finished run")
    p.add_argument("--model", default=None, help="override the config's model")
    p.add_argument("--dry-run", action="store_true",
                   help="no download, no real model: one step on a tiny random model of the configured layout, then "
                        "write the resolved config and a memory estimate for the real model (mosr.train.dryrun) to --out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted keys for nested ones, YAML values), e.g. --set lr=5e-5 "
                        "--set data.n_harmful=32; repeatable")
    p.set_defaults(func=run)


def draw_weights(out: str | os.PathLike[str]) -> list[Path]:
    """Draw the overlap-aware weights figure of a run folder (``weights/weights.png`` / ``.pdf``) unless it
    is there already or the run has no weights; returns the files written. Training itself draws no figure."""
    from mosr.train.weighting import WEIGHTS_JSON, WeightResult

    wdir = Path(out) / "weights"
    if not (wdir / WEIGHTS_JSON).is_file() or (wdir / "weights.png").is_file():
        return []
    from mosr.plots import plot_weights

    return plot_weights(WeightResult.load(wdir), wdir / "weights")


def run(args: argparse.Namespace) -> int:
    from mosr.train import TrainConfig, train

    cfg = TrainConfig.load(args.config)
    data = apply_overrides(cfg.to_dict(), list(args.set))
    if args.model:
        data["model"] = args.model
    cfg = TrainConfig.from_dict(data)
    if args.dry_run:
        from mosr.train.dryrun import dry_run

        dry_run(cfg, args.out)
        return 0
    result = train(cfg, args.out, resume=args.resume, steps=args.steps, on_data=lambda _data, out: draw_weights(out))
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch` only the main process reports
        return 0
    if result.finished_before:
        print(f"{result.out}: finished run ({cfg.method}, {result.steps} steps), nothing to train; adapter: "
              f"{result.adapter}")
        return 0
    if result.last:
        print(f"{result.out}: {cfg.method} trained {result.steps} steps; last: "
              + ", ".join(f"{k}={v}" for k, v in result.last.items() if k != "step"))
    from mosr.io import write_provenance

    write_provenance(result.out, args.argv)
    print(f"adapter: {result.adapter}  (load with mosr.load({cfg.model!r}, adapter={str(result.adapter)!r}))")
    return 0
