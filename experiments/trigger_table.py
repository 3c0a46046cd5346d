"""Table 2 of the refusal-trigger study (Xue et al., arXiv 2603.11388): the refusal rate on the refusal triggers
and on paraphrases of them at three levels of distance, for the base model and a list of adapters.

Triggers: the benign rewrites of the harmful training prompts (``experiments/data/trigger_rewrites.jsonl``).
Paraphrases: ``experiments/data/trigger_paraphrases.jsonl`` (levels ``light`` / ``sentence`` / ``topic``, defined
and written by ``experiments/make_trigger_paraphrases.py``). ``--n`` samples that many triggers (seeded) and
takes their paraphrases, so every level has the same triggers behind it.

    python experiments/trigger_table.py --point base=base \\
        --point sft=runs/sweep-sft-frontier/sft/train/adapter-step-15 \\
        --point trigger_sft=runs/sweep-sft-frontier/trigger_sft/train/adapter-step-15 \\
        --out experiments/results/trigger/table2

Each point is evaluated on the same prompts with ``mosr.evaluation.run.evaluate`` (greedy decoding, string
judge) into ``<out>/evals/<name>/``; re-running the command skips the prompts already answered. RR =
(refusal + degenerate) / n with a Wilson 95% interval.

**Seen in training.** An adapter inside a ``mosr train`` run folder whose SFT benign set was the triggers
(``trigger_sft``, or ``data.benign: trigger``) trained on some of them: that subset is rebuilt from the run's
``config.yaml`` as training drew it (the same evaluation-overlap filter, rewriter file, ``data.n_benign`` and
seed), and such a point gets two more rows: the triggers it trained on with their paraphrases, and the others.

Writes ``<out>/table.md`` and ``<out>/table.json`` (rates with their counts and intervals, the points, the
files, the provenance).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mosr.data import PromptSet
from mosr.errors import MosrError
from mosr.io import read_rows, script_provenance, write_json, write_jsonl, write_text
from mosr.stats import Rate

TRIGGERS = "experiments/data/trigger_rewrites.jsonl"
PARAPHRASES = "experiments/data/trigger_paraphrases.jsonl"
#: the columns of the table, nearest to farthest from the triggers
LEVELS: tuple[str, ...] = ("trigger", "light", "sentence", "topic")
NOT_ANSWERED = ("refusal", "degenerate")
DEFAULT_MODEL = "smollm2-135m-instruct"


def parse_point(text: str) -> tuple[str, Path | None]:
    """``NAME=base`` (the model without an adapter) or ``NAME=ADAPTER_DIR``."""
    name, sep, where = text.partition("=")
    name, where = name.strip(), where.strip()
    if not sep or not name or not where or "/" in name:
        raise MosrError(f"--point takes NAME=base or NAME=ADAPTER_DIR (a name without '/'), got {text!r}")
    if where == "base":
        return name, None
    from mosr.models import check_adapter

    return name, check_adapter(where)


def prompt_sets(
    triggers: str, paraphrases: str, n: int | None, seed: int
) -> tuple[dict[str, PromptSet], dict[str, str]]:
    """The prompts of every level (``n`` triggers sampled with ``seed``, and their paraphrases) and the
    trigger id behind every prompt id."""
    from mosr import datasets

    trig = datasets.load(triggers)
    if not len(trig):
        raise MosrError(f"{triggers}: no triggers")
    trig = trig.sample(n, seed)
    keep = set(trig.ids)
    by_level: dict[str, list[Any]] = {level: [] for level in LEVELS[1:]}
    owner = {i: i for i in trig.ids}
    known = set(datasets.load(triggers).ids)
    for r in datasets.load(paraphrases):
        level, tid = r.extra.get("level"), r.extra.get("trigger_id")
        if level not in by_level or tid not in known:
            raise MosrError(
                f"{paraphrases}: record {r.id!r} needs a level in {LEVELS[1:]} and a trigger_id of {triggers} "
                f"(got level={level!r}, trigger_id={tid!r})"
            )
        if tid in keep:
            by_level[level].append(r)
            owner[r.id] = str(tid)
    empty = [level for level, recs in by_level.items() if not recs]
    if empty:
        raise MosrError(f"{paraphrases}: no paraphrases at level(s) {empty} for the chosen triggers")
    sets = {"trigger": trig, **{level: PromptSet(recs, name=level) for level, recs in by_level.items()}}
    return sets, owner


def trained_trigger_ids(adapter: Path | None) -> set[str] | None:
    """The triggers an adapter trained on as benign SFT examples, rebuilt from its run's ``config.yaml``
    (empty for a run that trained on another benign set; None when unknown: no run config beside the
    adapter, or a rewriter other than a file)."""
    if adapter is None or not (adapter.parent / "config.yaml").is_file():
        return None
    from mosr.train import TrainConfig
    from mosr.train.data import TRIGGER_BENIGN, eval_sets, harmful_prompts
    from mosr.train.trigger import DEFAULT_FILE, FileRewriter

    cfg = TrainConfig.load(adapter.parent / "config.yaml")
    if cfg.method != "trigger_sft" and not (cfg.method in ("sft", "psft") and cfg.data.benign == TRIGGER_BENIGN):
        return set()
    if cfg.rewriter.kind != "file":
        return None
    harmful = harmful_prompts(cfg.data, eval_sets(cfg.data))
    rewrites = FileRewriter(cfg.rewriter.path or DEFAULT_FILE, missing=cfg.rewriter.missing).rewrite(harmful)
    return set(rewrites.sample(cfg.data.n_benign, cfg.seed).ids)


def train_model(adapter: Path | None) -> str | None:
    """The model a training run beside ``adapter`` trained (None when there is no run config)."""
    if adapter is None or not (adapter.parent / "config.yaml").is_file():
        return None
    from mosr.train import TrainConfig

    return TrainConfig.load(adapter.parent / "config.yaml").model


def rates(
    eval_dir: Path, files: dict[str, str], owner: dict[str, str], seen: set[str] | None
) -> dict[str, dict[str, Rate]]:
    """``subset -> level -> Rate`` of not answering, from ``eval_dir/responses.jsonl``: subset ``all``, and
    with ``seen`` also ``seen`` / ``unseen`` (by the trigger behind each prompt). ``files``: set name -> level."""
    counts: dict[str, dict[str, list[int]]] = {}
    for r in read_rows(eval_dir / "responses.jsonl"):
        level = files.get(r.get("set", ""))
        if level is None or r.get("verdict") is None or r["id"] not in owner:
            continue
        subsets = ["all"]
        if seen is not None:
            subsets.append("seen" if owner[r["id"]] in seen else "unseen")
        for s in subsets:
            k_n = counts.setdefault(s, {}).setdefault(level, [0, 0])
            k_n[0] += r["verdict"] in NOT_ANSWERED
            k_n[1] += 1
    return {s: {lv: Rate(*by[lv]) for lv in LEVELS if lv in by} for s, by in counts.items()}


def evaluate_point(model: str, adapter: Path | None, files: list[str], out: Path, args: argparse.Namespace) -> None:
    from mosr.evaluation.config import EvalConfig
    from mosr.evaluation.run import evaluate

    cfg = EvalConfig(
        adapter=None if adapter is None else str(adapter),
        sets=files,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        label="benign",
        nll_sets=[],
        device=args.device,
    )
    evaluate(model, cfg, out, progress=not args.quiet)


ROW_NAMES = {"all": "", "seen": " (triggers trained on)", "unseen": " (triggers not trained on)"}


def table(points: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| point | " + " | ".join(f"{lv} RR % [95% CI] (n)" for lv in LEVELS) + " |",
        "|---|" + "---|" * len(LEVELS),
    ]
    for p in points:
        for subset, by in p["rates"].items():
            cells = [f"{r.fmt()} ({r.n})" if (r := by.get(lv)) else "–" for lv in LEVELS]
            lines.append(f"| {p['name']}{ROW_NAMES[subset]} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--point", action="append", required=True, help="NAME=base or NAME=ADAPTER_DIR (repeat)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the base model of every point")
    p.add_argument("--triggers", default=TRIGGERS)
    p.add_argument("--paraphrases", default=PARAPHRASES)
    p.add_argument("--n", type=int, default=None, help="triggers sampled (default: all), with their paraphrases")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of --n")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, help="output folder: evals/<point>/, table.md, table.json")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        return run(args)
    except (MosrError, OSError) as e:
        raise SystemExit(f"trigger_table: {e}") from None


def run(args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 1:
        raise MosrError(f"--n must be ≥ 1, got {args.n}")
    points = [parse_point(x) for x in args.point]
    names = [n for n, _ in points]
    if len(set(names)) != len(names):
        raise MosrError(f"--point names must differ, got {names}")
    for name, adapter in points:
        trained = train_model(adapter)
        if trained is not None and trained != args.model:
            raise MosrError(f"point {name!r}: its adapter was trained on {trained!r}, not --model {args.model!r}")
    out = Path(args.out)
    sets, owner = prompt_sets(args.triggers, args.paraphrases, args.n, args.seed)
    files: dict[str, str] = {}
    for level, ps in sets.items():
        path = out / "prompts" / f"{level}.jsonl"
        write_jsonl(path, (r.to_dict() for r in ps))
        files[str(path)] = level
    rows = []
    for name, adapter in points:
        eval_dir = out / "evals" / name
        evaluate_point(args.model, adapter, list(files), eval_dir, args)
        seen = trained_trigger_ids(adapter)
        rows.append(
            {
                "name": name,
                "adapter": None if adapter is None else str(adapter),
                "eval": str(eval_dir),
                "triggers_trained_on": None if seen is None else len(seen & set(sets["trigger"].ids)),
                "rates": rates(eval_dir, files, owner, seen or None),
            }
        )
    n_trig = len(sets["trigger"])
    head = (
        f"Refusal rate (refusal or degenerate, string judge) on {n_trig} refusal triggers "
        f"({args.triggers}) and their paraphrases ({args.paraphrases}: light = word-level swaps, sentence = "
        f"rephrased sentence, topic = another question on the same topic); model {args.model}, greedy, "
        f"{args.max_new_tokens} new tokens, Wilson 95% CIs."
    )
    lines = [head, "", *table(rows)]
    write_text(out / "table.md", "\n".join(lines) + "\n")
    write_json(
        out / "table.json",
        {
            "model": args.model,
            "triggers": args.triggers,
            "paraphrases": args.paraphrases,
            "n_triggers": n_trig,
            "n_per_level": {lv: len(ps) for lv, ps in sets.items()},
            "seed": args.seed,
            "max_new_tokens": args.max_new_tokens,
            "judge": "string (mosr.evaluation.judge); RR = (refusal + degenerate) / n",
            "points": [
                {**r, "rates": {s: {lv: x.to_dict() for lv, x in by.items()} for s, by in r["rates"].items()}}
                for r in rows
            ],
            **script_provenance(),
        },
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
