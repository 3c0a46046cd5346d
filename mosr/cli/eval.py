"""``mosr eval`` (evaluate a model on benchmark sets) and ``mosr table`` (compare run folders)."""

from __future__ import annotations

import argparse

from mosr.cli._common import add_data_args, add_model_args, add_set_arg
from mosr.cli._common import build_config as build_from
from mosr.errors import ConfigError
from mosr.io import PROVENANCE, write_provenance


def _pairs(text: str | None, what: str) -> dict[str, int]:
    """``'orbench-hard=200,gsm8k=100'`` -> ``{'orbench-hard': 200, 'gsm8k': 100}``."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise ConfigError(f"{what}: expected name=int pairs separated by commas, got {part!r}")
        out[name.strip()] = int(value)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="generate + judge (or score) a model's responses on benchmark sets")
    add_model_args(p)
    add_data_args(p)
    p.add_argument(
        "--config", default=None, help="EvalConfig YAML/JSON; --set and the flags given on the command line override it"
    )
    add_set_arg(p, "--set judge.kind=llm --set chat=false")
    p.add_argument(
        "--sets",
        default=None,
        help="comma-separated set names or prompt files, e.g. "
        "xstest,jbb-harmful,jbb-benign,advbench,orbench-hard,koala,gsm8k ('jbb' = both JBB sets); "
        'a .jsonl file of records or of {"prompt": ...} lines, or a .txt file with one prompt per line',
    )
    p.add_argument(
        "--label",
        default=None,
        choices=("harmful", "benign", "pseudo_harmful", "unknown"),
        help="label of the prompts of prompt files that carry none (default: unknown, reported with an "
        "'answered' rate only, no RR / ASR)",
    )
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="seeded sample of n prompts for each name in --sets (default: all). A composite name shares "
        "its n among its subsets: a mixed set (xstest) and an alias (jbb = jbb-harmful + jbb-benign) are "
        "each sampled as a whole, so their subsets get about their share of n (--sets xstest --n 16 gave "
        "10 xstest-safe + 6 xstest-unsafe; --sets xstest,jbb --n 8 gives 8 xstest and 8 jbb prompts); "
        "name the subsets (xstest-safe,xstest-unsafe) for n of each",
    )
    p.add_argument(
        "--n-per-set",
        default=None,
        help="per-set sample sizes, e.g. orbench-hard=200,gsm8k=100; each key "
        "must name a set of --sets (or a subset of one)",
    )
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default 0)")
    p.add_argument(
        "--mode",
        choices=("generate", "score", "repr"),
        default=None,
        help="generate + judge (default), logit refusal score only, or repr: how far the adapter moved "
        "each prompt's state, 1 - cos(h', h) at --set repr_layers=[...] (no generation)",
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget (default 64)")
    p.add_argument("--max-new-tokens-per-set", default=None, help="per-set budgets, e.g. gsm8k=256")
    p.add_argument("--batch-size", type=int, default=None, help="prompts per batch (default 16)")
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="padded prompt tokens per batch (default 4096; long prompts get smaller batches)",
    )
    p.add_argument("--system", default=None, help="system prompt (default: the chat template's own)")
    p.add_argument("--judge", choices=("string", "llm"), default=None, help="string (default) or llm")
    p.add_argument(
        "--judge-url", default=None, help="OpenAI-compatible base URL for --judge llm, e.g. http://127.0.0.1:8000/v1"
    )
    p.add_argument("--judge-model", default=None, help="model name for --judge llm")
    p.add_argument(
        "--nll-sets",
        default=None,
        help="sets (also in --sets) scored by capability NLL of their reference answers instead of "
        "being generated; default: self-instruct-heldout when listed; 'none' = no NLL set",
    )
    p.add_argument(
        "--nll-max-length",
        type=int,
        default=None,
        help="prompt + answer tokens per NLL example (default 1024; longer ones are cut)",
    )
    act = p.add_mutually_exclusive_group()
    act.add_argument(
        "--ablate",
        default=None,
        metavar="DIR",
        help="ablate the direction of a `mosr direction` folder from every block for the whole run",
    )
    act.add_argument(
        "--steer",
        default=None,
        metavar="DIR",
        help="add --alpha times the vector of a `mosr direction` folder at its layer for the whole run "
        "(other layers / positions: --set intervention.layers=[...] / intervention.positions=last)",
    )
    p.add_argument("--alpha", type=float, default=None, help="steering coefficient for --steer (default 1.0)")
    p.add_argument("--out", required=True, help="run folder (an interrupted run resumes)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run the configured evaluation on a tiny random model of the same family and block count "
        "(2 prompts per set, 4 new tokens; no download) and write the config to --out",
    )
    p.set_defaults(func=run_eval)

    t = sub.add_parser("table", help="compare evaluation run folders (markdown + JSON table, trade-off plot)")
    t.add_argument("runs", nargs="+", help="run folders written by `mosr eval`")
    t.add_argument("--out", required=True, help="output stem: writes <out>.md and <out>.json")
    t.add_argument("--plot", default=None, help="also write the trade-off scatter to <plot>.png/.pdf")
    t.set_defaults(func=run_table)


def build_config(args: argparse.Namespace):  # noqa: ANN201 - returns EvalConfig
    """The EvalConfig of the command line: ``--config`` (or the defaults), then ``--set``, then the flags given."""
    from mosr.evaluation.config import EvalConfig

    flags = {
        "model": args.model,
        "sets": args.sets,
        "n": args.n,
        "seed": args.seed,
        "mode": args.mode,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "system": args.system,
        "data_dir": args.data_dir,
        "adapter": args.adapter,
        "device": args.device,
        "dtype": args.dtype,
        "label": args.label,
        "nll_max_length": args.nll_max_length,
        "judge.kind": args.judge,
        "judge.url": args.judge_url,
        "judge.model": args.judge_model,
    }
    if args.nll_sets is not None:
        text = args.nll_sets.strip()
        flags["nll_sets"] = [] if text.lower() in ("", "none") else [s.strip() for s in text.split(",") if s.strip()]
    if args.n_per_set:
        flags["n_per_set"] = _pairs(args.n_per_set, "--n-per-set")
    if args.max_new_tokens_per_set:
        flags["max_new_tokens_per_set"] = _pairs(args.max_new_tokens_per_set, "--max-new-tokens-per-set")
    if args.alpha is not None and args.steer is None:
        raise ConfigError("--alpha is the coefficient of --steer DIR; give --steer too")
    if args.ablate or args.steer:
        flags |= {
            "intervention.kind": "ablate" if args.ablate else "steer",
            "intervention.direction": args.ablate or args.steer,
            "intervention.alpha": args.alpha,
        }
    if args.model is None and args.adapter and not _model_given(args.config, args.set):
        from mosr.adapters import adapter_base_model

        flags["model"] = adapter_base_model(args.adapter)  # evaluate an adapter on the model it was trained on
    cfg = build_from(EvalConfig, args.config, args.set, flags)
    cfg.check_per_set()  # a key naming no set of the run is an error, not ignored
    return cfg


def _model_given(config: str | None, overrides: list[str] | None) -> bool:
    """Whether ``--config`` or ``--set`` names the model."""
    import yaml

    if any(o.split("=", 1)[0].strip() == "model" for o in overrides or []):
        return True
    if config:
        try:
            data = yaml.safe_load(open(config, encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return False  # the config's own loading reports the problem
        return isinstance(data, dict) and data.get("model") is not None
    return False


def run_eval(args: argparse.Namespace) -> int:
    from mosr.evaluation.run import evaluate

    cfg = build_config(args)
    if args.dry_run:
        from mosr.train.dryrun import dry_run_eval

        dry_run_eval(cfg, args.out)
        return 0
    result = evaluate(cfg.model, cfg, out=args.out, progress=not args.quiet)
    if result.stats["prompts"] or not (result.out / PROVENANCE).is_file():  # a no-op re-run produced nothing
        write_provenance(result.out, args.argv)
    print((result.out / "table.md").read_text(encoding="utf-8"))
    if cfg.mode == "repr":
        from mosr.evaluation.displacement import per_set

        for name, v in per_set(result.rows).items():
            print(f"displacement 1 - cos(h', h)  {name}: {v['mean']:.4f} (n={v['n']})")
    s = result.stats
    if s["prompts"]:
        rate = s["prompts"] / s["wall_s"] if s["wall_s"] else float("nan")
        print(
            f"{s['prompts']} prompts in {s['wall_s']:.1f}s ({rate:.2f} prompts/s, {s['new_tokens']} new tokens); "
            f"{s['resumed_rows']} rows resumed from an earlier invocation"
        )
    else:
        print(f"nothing to do: all {s['resumed_rows']} prompts were already evaluated in {result.out}")
    return 0


def run_table(args: argparse.Namespace) -> int:
    from mosr.evaluation.run import compare

    runs = compare(args.runs, args.out)
    if args.plot:
        from mosr.plots import plot_tradeoff

        plot_tradeoff(runs, args.plot)
    out = args.out[:-3] if args.out.endswith(".md") else args.out
    print(open(f"{out}.md", encoding="utf-8").read())
    return 0
