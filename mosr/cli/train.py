"""``mosr train``: train a LoRA defence (MOSR, an ablation or a baseline) from one config file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mosr.cli._common import add_data_args, build_config


def register(sub: argparse._SubParsersAction) -> None:
    from mosr.train.config import METHODS  # the registry of methods (a light import)

    p = sub.add_parser(
        "train",
        help="train a LoRA defence from a config (experiments/<method>.yaml)",
        description="Train a LoRA defence from a config file; its method is one of "
        f"{', '.join(METHODS)}. Runs under `accelerate launch` unchanged for DDP / FSDP.",
    )
    p.add_argument("--config", required=True, help="YAML / JSON TrainConfig, e.g. experiments/mosr.yaml")
    p.add_argument("--out", required=True, help="run folder (config, log.jsonl, checkpoints/, adapter/)")
    p.add_argument("--steps", type=int, default=None, help="override the config's number of optimizer steps")
    p.add_argument(
        "--resume",
        action="store_true",
        help="insist on resuming (an --out without a started run is then an error); a re-run of the same "
        "command resumes from the newest checkpoint without it, and reports a finished run",
    )
    p.add_argument("--model", default=None, help="override the config's model")
    p.add_argument(
        "--device",
        default=None,
        help="cpu | cuda (default: the config's: cuda when a GPU is visible, unless it says cpu: true); "
        "pick GPUs with CUDA_VISIBLE_DEVICES",
    )
    add_data_args(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="no download, no real model: one step on a tiny random model of the configured layout, then "
        "write the resolved config and a memory estimate for the real model (mosr.train.dryrun) to --out",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (dotted keys for nested ones, YAML values), e.g. --set lr=5e-5 "
        "--set data.n_harmful=32; repeatable",
    )
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


def _cpu_flag(device: str | None) -> bool | None:
    """``--device`` as the config's ``cpu`` field (None: not given). Accelerate places the model, on every
    visible GPU, so a GPU is chosen with CUDA_VISIBLE_DEVICES, not cuda:N."""
    from mosr.errors import ConfigError
    from mosr.models import check_device

    if device is None or device == "cpu":
        return None if device is None else True
    if device.startswith("cuda:"):
        raise ConfigError(
            f"--device {device}: training uses every visible GPU; choose them with "
            f"CUDA_VISIBLE_DEVICES={device[5:]} and --device cuda"
        )
    if device != "cuda":
        raise ConfigError(f"--device {device!r}: training runs on cpu or cuda")
    check_device(device)  # a missing GPU fails here, before the model loads
    return False


def run(args: argparse.Namespace) -> int:
    from mosr.train import TrainConfig, train

    flags = {"model": args.model, "data.data_dir": args.data_dir, "cpu": _cpu_flag(args.device)}
    cfg = build_config(TrainConfig, args.config, args.set, flags)  # as the other verbs: file, --set, flags
    if args.dry_run:
        from mosr.io import write_provenance
        from mosr.train.dryrun import dry_run

        dry_run(cfg, args.out)
        write_provenance(args.out, args.argv)
        return 0
    from contextlib import nullcontext

    from accelerate import PartialState

    from mosr.io import folder_lock

    rank0 = int(os.environ.get("RANK", "0")) == 0  # set by `accelerate launch` / torchrun before any process group
    with folder_lock(args.out, "mosr train") if rank0 else nullcontext():  # a second run would share checkpoints
        result = train(cfg, args.out, resume=args.resume, steps=args.steps, on_data=lambda _d, out: draw_weights(out))
    if not PartialState().is_main_process:  # under `accelerate launch` only the main process reports
        return 0
    if result.finished_before:
        print(
            f"{result.out}: finished run ({cfg.method}, {result.steps} steps), nothing to train; adapter: "
            f"{result.adapter}"
        )
        return 0
    if result.last:
        print(
            f"{result.out}: {cfg.method} trained {result.steps} steps; last: "
            + ", ".join(f"{k}={v}" for k, v in result.last.items() if k != "step")
        )
    from mosr.io import write_provenance

    write_provenance(result.out, args.argv)
    print(f"adapter: {result.adapter}  (load with mosr.load({cfg.model!r}, adapter={str(result.adapter)!r}))")
    return 0
