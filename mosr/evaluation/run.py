"""Generation- and score-based evaluation of a model on benchmark sets, resumable, with result tables.

``evaluate(model, EvalConfig(sets=[...]), out="runs/x")`` loads the sets, generates greedy responses
(:func:`mosr.generate.generate_full`: KV cache, left padding, length-sorted batches), judges them
(:mod:`mosr.evaluation.judge`) and appends one JSON line per prompt to ``out/responses.jsonl`` after every batch.
Re-running the same command resumes: prompts whose ``(set, id)`` is already in the file are not
generated again. ``mode="score"`` skips generation and records only the logit refusal score.

Capability sets (``nll_sets``; by default ``self-instruct-heldout`` when it is in ``sets``) are not
generated: each record's reference ``completion`` is scored by teacher forcing
(:func:`mosr.evaluation.nll.capability_nll`: mean per-token NLL of the answer given the chat-formatted prompt), one row
per prompt with ``nll`` and ``nll_tokens``, appended and resumed like the generated rows.

A set is a benchmark name (:func:`mosr.datasets.names`) or a prompt file: ``.jsonl`` records (lines
holding only ``{"prompt": ...}`` are enough) or ``.txt`` with one prompt per line; prompts without a
label get ``label`` (default ``unknown``: reported with an "answered" rate only, no RR / ASR).

The configuration and the loading of the sets are :mod:`mosr.evaluation.config`.

Run folder: ``config.yaml`` (the resolved :class:`~mosr.evaluation.config.EvalConfig`: data directory, device and
dtype filled in; written once the model and the data have loaded, so a failed start leaves nothing behind),
``responses.jsonl``, ``metrics.json``, ``table.md`` and ``run.json`` (model, judge, per-invocation wall
time and throughput).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mosr.config import changed_run_error
from mosr.data import PromptSet, Record
from mosr.errors import ConfigError, MosrError
from mosr.evaluation.config import RUN_DEFINING, EvalConfig, load_sets
from mosr.evaluation.judge import Verdict, make_judge
from mosr.evaluation.metrics import extract_number, numbers_equal, score_validity, summarise
from mosr.evaluation.nll import capability_nll
from mosr.evaluation.tables import RunResult, write_tables
from mosr.interventions.apply import intervene, resolve_intervention
from mosr.io import append_jsonl, folder_lock, read_json, read_rows, write_json, write_jsonl
from mosr.models import LM, default_device


def _check_resume(out: Path, cfg: EvalConfig) -> None:
    saved = out / "config.yaml"
    if not saved.is_file():
        return
    old_cfg = EvalConfig.load(saved)
    old, new = old_cfg.to_dict(), cfg.to_dict()
    diff = [k for k in RUN_DEFINING if old.get(k) != new.get(k)]
    common = set(old_cfg.set_names()) & set(cfg.set_names())
    old_nll, new_nll = sorted(set(old_cfg.nll_set_names()) & common), sorted(set(cfg.nll_set_names()) & common)
    if old_nll != new_nll:  # a set's rows would mix generated and NLL-scored prompts
        diff.append("nll_sets")
        old["nll_sets"], new["nll_sets"] = old_nll, new_nll
    if diff:
        raise changed_run_error(out, diff, old)


def _row(
    set_name: str,
    rec: Record,
    response: str | None,
    verdict: Verdict | None,
    score: float | None,
    new_tokens: int | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": rec.id,
        "set": set_name,
        "label": rec.label,
        "category": rec.category,
        "prompt": rec.prompt,
        "response": response,
        "verdict": verdict.value if verdict is not None else None,
        "refusal_score": score,
        "new_tokens": new_tokens,
    }
    answer = rec.extra.get("final_answer")
    if answer is not None:
        row["final_answer"] = str(answer)
        if response is not None:
            row["extracted"] = extract_number(response)
            row["correct"] = numbers_equal(row["extracted"], str(answer))
    return row


def _nll_row(set_name: str, rec: Record, nll: float | None, tokens: int) -> dict[str, Any]:
    return {
        "id": rec.id,
        "set": set_name,
        "label": rec.label,
        "category": rec.category,
        "prompt": rec.prompt,
        "response": None,
        "verdict": None,
        "refusal_score": None,
        "new_tokens": None,
        "nll": nll,
        "nll_tokens": tokens,
    }


def _load_model(model: LM | str | os.PathLike[str], cfg: EvalConfig) -> LM:
    if isinstance(model, LM):
        return model
    from mosr.models import check_device, load

    check_device(cfg.device)  # a missing GPU is a one-line error before the load
    return load(str(model), dtype=cfg.dtype, device=cfg.device, adapter=cfg.adapter)


def _resolve(cfg: EvalConfig, model: LM | str | os.PathLike[str]) -> None:
    """Fill in what the run will use: the model name, the data directory and, for a loaded LM, its dtype."""
    from mosr import datasets

    if isinstance(model, LM):
        if cfg.adapter is not None:
            raise MosrError("pass adapter= only with a model name or directory, not with a loaded LM")
        cfg.model = model.name
        cfg.dtype = str(next(model.model.parameters()).dtype).removeprefix("torch.")
    else:
        cfg.model = str(model)
    cfg.data_dir = datasets.resolved_data_dir(cfg.data_dir)


def _save_config(out: Path, cfg: EvalConfig, lm: LM | None) -> None:
    """Write the resolved config (device filled in) once the model and data have loaded."""
    cfg.device = str(lm.device) if lm is not None else (cfg.device or default_device())
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")


@dataclass
class EvalResult:
    """What :func:`evaluate` returns: the run folder, its rows and its summary."""

    out: Path
    rows: list[dict[str, Any]]
    run: RunResult
    stats: dict[str, Any]


def evaluate(
    model: LM | str | os.PathLike[str],
    cfg: EvalConfig | None = None,
    out: str | os.PathLike[str] = "runs/eval",
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``model`` (an :class:`LM`, a model name / directory, + ``cfg.adapter``) on ``cfg.sets``.

    Resumes from ``out/responses.jsonl``; writes metrics and tables into ``out``.
    """
    cfg = cfg or EvalConfig()
    if cfg.mode == "repr" and cfg.adapter is None:
        raise ConfigError("mode repr compares an adapter with its base model: give an adapter (--adapter)")
    _resolve(cfg, model)
    resolve_intervention(cfg.intervention, cfg.mode)  # a missing direction folder fails here, before the model loads
    out = Path(out)
    sets = load_sets(cfg)  # unknown / empty sets fail here, before the model loads
    with folder_lock(out, "mosr eval"):  # two processes on one folder would write every row twice
        return _evaluate(model, cfg, out, sets, progress)


def _evaluate(
    model: LM | str | os.PathLike[str], cfg: EvalConfig, out: Path, sets: dict[str, PromptSet], progress: bool
) -> EvalResult:
    _check_resume(out, cfg)
    path = out / "responses.jsonl"
    rows = _unique_rows(path, read_rows(path, missing_ok=True, repair=True))
    done = {(r["set"], r["id"]) for r in rows}
    pending = {name: [rec for rec in ps if (name, rec.id) not in done] for name, ps in sets.items()}
    n_pending = sum(len(v) for v in pending.values())
    t0 = time.perf_counter()
    stats: dict[str, Any] = {"prompts": 0, "new_tokens": 0, "resumed_rows": len(rows)}
    nll_names = cfg.nll_set_names()
    if nll_names and not cfg.chat:
        raise ConfigError(
            "capability NLL needs the chat template (chat=True): drop the NLL sets or pass --nll-sets none"
        )
    pending_nll = {name: recs for name, recs in pending.items() if name in nll_names}
    pending = {name: recs for name, recs in pending.items() if name not in nll_names}
    if not n_pending:
        _save_config(out, cfg, model if isinstance(model, LM) else None)
    else:
        lm = _load_model(model, cfg)
        stats["load_s"] = round(time.perf_counter() - t0, 2)
        generating = cfg.mode == "generate" and any(pending.values())
        judge_fn = make_judge(cfg.judge) if generating else None  # an unreachable LLM judge fails here
        _save_config(out, cfg, lm)  # only now: a model or judge that fails leaves no config behind
        with intervene(lm, cfg.intervention):  # restored when the run ends (mosr.interventions)
            if any(pending.values()):
                if judge_fn is not None:
                    _run_generate(lm, cfg, pending, path, judge_fn, stats, progress)
                elif cfg.mode == "repr":
                    _run_repr(lm, cfg, pending, path, stats)
                else:
                    _run_score(lm, cfg, pending, path, stats, progress)
            if any(pending_nll.values()):
                _run_nll(lm, cfg, pending_nll, path, stats, progress)
        rows = read_rows(path, missing_ok=True, repair=True)
    wall = time.perf_counter() - t0
    stats["wall_s"] = round(wall, 2)
    wanted = {(name, rec.id) for name, ps in sets.items() for rec in ps}
    rows = [r for r in rows if (r["set"], r["id"]) in wanted]
    run = _finish(out, cfg, rows, stats)
    return EvalResult(out, rows, run, stats)


def _unique_rows(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with one row per ``(set, id)``, the first; a file that holds a prompt twice (written by two
    processes at once, before :func:`~mosr.io.folder_lock`) is rewritten without the repeats."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for r in rows:
        key = (r["set"], r["id"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    if len(unique) < len(rows):
        write_jsonl(path, unique)
    return unique


def _run_generate(
    lm: LM,
    cfg: EvalConfig,
    pending: dict[str, list[Record]],
    path: Path,
    judge_fn: Any,
    stats: dict[str, Any],
    progress: bool,
) -> None:
    from mosr.generate import GeneratedBatch, generate_full

    groups: dict[int, list[tuple[str, Record]]] = {}
    for name, recs in pending.items():
        for rec in recs:
            groups.setdefault(cfg.tokens_for(name), []).append((name, rec))
    for max_new, items in sorted(groups.items()):
        t0 = time.perf_counter()

        def on_batch(b: GeneratedBatch, items: list[tuple[str, Record]] = items) -> None:
            batch_items = [items[i] for i in b.index]
            verdicts = judge_fn([rec.prompt for _, rec in batch_items], b.responses)
            scores: list[float | None] = list(b.refusal_scores) if b.refusal_scores else [None] * len(b.index)
            append_jsonl(
                path,
                [
                    _row(name, rec, resp, v, s, t)
                    for (name, rec), resp, v, s, t in zip(batch_items, b.responses, verdicts, scores, b.new_tokens)
                ],
            )

        g = generate_full(
            lm,
            [rec.prompt for _, rec in items],
            max_new_tokens=max_new,
            batch_size=cfg.batch_size,
            chat=cfg.chat,
            system=cfg.system,
            progress=progress,
            on_batch=on_batch,
            score=True,
            max_batch_tokens=cfg.max_batch_tokens,
        )
        stats["prompts"] += len(items)
        stats["new_tokens"] += sum(g.new_tokens)
        stats.setdefault("groups", []).append(
            {
                "max_new_tokens": max_new,
                "prompts": len(items),
                "new_tokens": sum(g.new_tokens),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )


def _run_score(
    lm: LM, cfg: EvalConfig, pending: dict[str, list[Record]], path: Path, stats: dict[str, Any], progress: bool
) -> None:
    from mosr.evaluation.judge import refusal_scores

    items = [(name, rec) for name, recs in pending.items() for rec in recs]
    chunk = cfg.batch_size * 8  # append to the log every few batches
    bar = tqdm(total=len(items), desc="score", disable=not progress, unit="prompt")
    for s in range(0, len(items), chunk):
        part = items[s : s + chunk]
        scores = refusal_scores(
            lm,
            [rec.prompt for _, rec in part],
            batch_size=cfg.batch_size,
            chat=cfg.chat,
            system=cfg.system,
            progress=False,
            max_batch_tokens=cfg.max_batch_tokens,
        )
        append_jsonl(path, [_row(name, rec, None, None, float(sc), None) for (name, rec), sc in zip(part, scores)])
        bar.update(len(part))
    bar.close()
    stats["prompts"] += len(items)


def _run_repr(lm: LM, cfg: EvalConfig, pending: dict[str, list[Record]], path: Path, stats: dict[str, Any]) -> None:
    """``mode: repr``: each prompt's representation displacement against the base model
    (:mod:`mosr.evaluation.displacement`), no generation."""
    from mosr.evaluation.displacement import displacement
    from mosr.models import load

    base = load(cfg.model, dtype=cfg.dtype, device=str(lm.device))
    items = [(name, rec) for name, recs in pending.items() for rec in recs]
    values = displacement(
        lm, base, [rec.prompt for _, rec in items], cfg.repr_layers, cfg.batch_size, cfg.chat, cfg.system
    )
    append_jsonl(
        path,
        [
            {**_row(name, rec, None, None, None, None), "displacement": round(float(v), 6)}
            for (name, rec), v in zip(items, values)
        ],
    )
    stats["prompts"] += len(items)


def _run_nll(
    lm: LM, cfg: EvalConfig, pending: dict[str, list[Record]], path: Path, stats: dict[str, Any], progress: bool
) -> None:
    items = [(name, rec) for name, recs in pending.items() for rec in recs]
    t0 = time.perf_counter()
    bar = tqdm(total=len(items), desc="capability NLL", disable=not progress, unit="prompt")

    def on_batch(index: list[int], values: list[tuple[float | None, int]]) -> None:
        append_jsonl(path, [_nll_row(*items[i], nll, tokens) for i, (nll, tokens) in zip(index, values)])
        bar.update(len(index))

    scored = capability_nll(
        lm,
        [rec.prompt for _, rec in items],
        [rec.completion or "" for _, rec in items],
        batch_size=cfg.batch_size,
        max_batch_tokens=cfg.max_batch_tokens,
        system=cfg.system,
        max_length=cfg.nll_max_length,
        on_batch=on_batch,
    )
    bar.close()
    stats["prompts"] += len(items)
    stats["nll"] = {
        "prompts": len(items),
        "answer_tokens": sum(t for _, t in scored),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _finish(out: Path, cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> RunResult:
    history_path = out / "run.json"
    history = read_json(history_path) if history_path.is_file() else {"invocations": []}
    if stats["prompts"]:
        history["invocations"].append(stats)
    history.update(
        model=cfg.model,
        adapter=cfg.adapter,
        judge=cfg.judge.describe(),
        mode=cfg.mode,
        total_wall_s=round(sum(s.get("wall_s", 0.0) for s in history["invocations"]), 2),
    )
    write_json(history_path, history)
    run = run_from_rows(out, cfg, rows, history)
    write_tables([run], out / "table")
    metrics = run.to_dict()
    if cfg.mode == "repr":
        from mosr.evaluation.displacement import per_set

        metrics["displacement"] = per_set(rows)
    write_json(out / "metrics.json", metrics)
    return run


def run_from_rows(out: Path, cfg: EvalConfig, rows: Sequence[dict[str, Any]], history: dict[str, Any]) -> RunResult:
    model = cfg.model + (f" + adapter {cfg.adapter}" if cfg.adapter else "")
    nll = cfg.nll_set_names()
    tokens = {name: cfg.tokens_for(name) for name in cfg.set_names() if name not in nll}
    return RunResult(
        name=out.name,
        path=str(out),
        model=model,
        judge=cfg.judge.describe()
        if cfg.mode == "generate"
        else "logit refusal score (log-odds of refusal-opener tokens > 0)",
        seed=cfg.seed,
        mode=cfg.mode,
        max_new_tokens=tokens,
        system=cfg.system,
        metrics=summarise(rows),
        wall_s=history.get("total_wall_s"),
        score_auroc=score_validity(rows) if cfg.mode == "generate" else None,
    )


def load_run(path: str | os.PathLike[str]) -> RunResult:
    """Summary of a run folder (recomputed from its ``responses.jsonl``, so partial runs work too)."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise MosrError(f"{path} is not an evaluation run folder (no config.yaml); run `mosr eval --out {path}` first")
    cfg = EvalConfig.load(path / "config.yaml")
    rows = read_rows(path / "responses.jsonl", missing_ok=True, repair=True)
    if not rows:
        raise MosrError(f"{path} has no evaluated prompts yet (responses.jsonl is empty)")
    history = read_json(path / "run.json") if (path / "run.json").is_file() else {}
    return run_from_rows(path, cfg, rows, history)


def compare(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> list[RunResult]:
    """Comparison table (``out.md`` + ``out.json``) of several run folders."""
    runs = [load_run(p) for p in paths]
    write_tables(runs, out)
    return runs


__all__ = ["EvalResult", "compare", "evaluate", "load_run", "run_from_rows"]
