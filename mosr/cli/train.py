"""``mosr train``: train a LoRA defence (MOSR, an ablation or a baseline) from one config file."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from mosr.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA defence from a config (experiments/<method>.yaml)",
                       description="Train MOSR / rr / sft / psft / trigger_sft from a config file. Runs under "
                                   "`accelerate launch` unchanged for DDP / FSDP.")
    p.add_argument("--config", required=True, help="YAML / JSON TrainConfig, e.g. experiments/mosr.yaml")
    p.add_argument("--out", required=True, help="run folder (config, log.jsonl, checkpoints/, adapter/)")
    p.add_argument("--steps", type=int, default=None, help="override the config's number of optimizer steps")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--model", default=None, help="override the config's model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted keys for nested ones, YAML values), e.g. --set lr=5e-5 "
                        "--set data.n_harmful=32; repeatable")
    p.set_defaults(func=run)


def apply_overrides(data: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a config mapping.

    Values are coerced to the field types later, by ``Config.from_dict``. A YAML boolean word for a
    field that holds a string (``--set mixed_precision=no``) stays the string as typed."""
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a nested config")
            node = child
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"--set {key}: cannot parse value {value!r} as YAML ({problem})") from None
        if isinstance(parsed, bool) and isinstance(node.get(parts[-1]), str):
            parsed = value.strip()
        node[parts[-1]] = parsed
    return data


def run(args: argparse.Namespace) -> int:
    from mosr.train import TrainConfig, train

    cfg = TrainConfig.load(args.config)
    data = apply_overrides(cfg.to_dict(), list(args.set))
    if args.model:
        data["model"] = args.model
    cfg = TrainConfig.from_dict(data)
    result = train(cfg, args.out, resume=args.resume, steps=args.steps)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch` only the main process reports
        return 0
    if result.last:
        print(f"{result.out}: {cfg.method} trained {result.steps} steps; last: "
              + ", ".join(f"{k}={v}" for k, v in result.last.items() if k != "step"))
    print(f"adapter: {result.adapter}  (load with mosr.load({cfg.model!r}, adapter={str(result.adapter)!r}))")
    return 0
