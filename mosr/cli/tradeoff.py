"""``mosr tradeoff``: the trade-off study (train → evaluate → representations → tables / figures)."""

from __future__ import annotations

import argparse

STAGES = ("train", "eval", "repr", "report")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tradeoff",
        help="trade-off study: frontiers, seeds, matched-ASR comparison, representations",
        description="Train every method of the plan along one strength knob (training steps), "
        "evaluate every point the same way, compare at matched ASR, and study the "
        "representations before / after. Finished stages are reused: re-run to resume.",
    )
    p.add_argument("--config", required=True, help="StudyPlan YAML, e.g. experiments/studies/study.yaml")
    p.add_argument("--out", required=True, help="study folder (train/, eval/, repr/, results.json, summary.md)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a plan field (YAML values), e.g. --set n=60 --set 'seeds=[0,1]'; repeatable",
    )
    p.add_argument(
        "--stages",
        default=",".join(STAGES),
        help=f"comma-separated stages (default {','.join(STAGES)}); without train, only finished "
        "training runs are evaluated (an evaluation worker beside a training process)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run every stage on a tiny random model and the bundled demo prompts (seconds)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mosr.config import apply_overrides
    from mosr.errors import ConfigError
    from mosr.tradeoff.plan import StudyPlan
    from mosr.tradeoff.run import dry_run_plan, run_tradeoff

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ConfigError(f"--stages: unknown {bad}; choose from {', '.join(STAGES)}")
    plan = StudyPlan.from_dict(apply_overrides(StudyPlan.load(args.config).to_dict(), args.set))
    if args.dry_run:
        plan = dry_run_plan(plan)
    res = run_tradeoff(plan, args.out, stages, progress=not args.quiet)
    from mosr.io import write_provenance

    write_provenance(args.out, args.argv)
    if "report" in stages:
        print(f"mosr tradeoff: {args.out}/summary.md, {args.out}/frontier.png, {args.out}/results.json")
        for m, d in res.get("matched", {}).items():
            print(
                f"  {m} vs {plan.reference} at ASR {d['at_asr']}: over-refusal {d['difference']:+.1f} "
                f"[{d['ci'][0]:.1f}, {d['ci'][1]:.1f}] -> {d['verdict']}"
            )
    return 0
