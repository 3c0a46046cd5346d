"""``mosr direction``: the refusal direction or the false-refusal vector of a model, into a folder."""

from __future__ import annotations

import argparse

from mosr.cli._common import add_data_args, add_model_args, add_set_arg, build_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "direction",
        help="refusal direction / false-refusal vector: candidates, selection, folder",
        description="Compute difference-in-means candidates at the post-instruction positions of every "
        "layer, score them by refusal log-odds under ablation (and addition) with a KL "
        "guard, and write the chosen direction, every candidate's scores and a figure to "
        "--out (read by `mosr eval --ablate DIR` / `--steer DIR`). "
        "See mosr.interventions.find for the rules and the cost.",
    )
    p.add_argument("--kind", default=None, help="refusal (default) | false-refusal")
    p.add_argument(
        "--out",
        required=True,
        help="direction folder (direction.safetensors, direction.json, scores.json, scores.png, config.yaml)",
    )
    p.add_argument("--config", default=None, help="DirectionConfig YAML / JSON (default: the built-in defaults)")
    add_set_arg(p, "--set n_select=16 --set 'positions=[-2,-1]' --set lam=0.5")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mosr.interventions.find import SCORES_JSON, DirectionConfig, find_direction

    flags = {
        "kind": args.kind,
        "model": args.model,
        "adapter": args.adapter,
        "dtype": args.dtype,
        "device": args.device,
        "data_dir": args.data_dir,
    }
    cfg = build_config(DirectionConfig, args.config, args.set, flags)
    d = find_direction(cfg, args.out, progress=not args.quiet)
    s, base, cost = d.info["scores"], d.info["baseline"], d.info["cost"]
    print(
        f"{args.out}: {cfg.kind} direction of {cfg.model}: layer {d.layer}, position {d.position}, "
        f"norm {float(d.vector.norm()):.3f}"
    )
    print(
        f"  refusal log-odds on {'harmful' if cfg.kind == 'refusal' else 'pseudo-harmful'} prompts: "
        f"{base['ablation_score']:.3f} -> {s['ablation_score']:.3f} ablated; KL on harmless {s['kl']:.4f}"
    )
    if s.get("addition_score") is not None:
        print(
            f"  refusal log-odds on harmless prompts: {base['addition_score']:.3f} -> {s['addition_score']:.3f} "
            "with the direction added"
        )
    print(
        f"  {cost['candidates_scored']} candidates scored ({cost['candidates_pruned']} in pruned layers), "
        f"{cost['forward_passes']} forward passes, {cost['total_s']:.1f}s; all scores in {args.out}/{SCORES_JSON}"
    )
    return 0
