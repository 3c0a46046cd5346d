"""Generation- and score-based evaluation of a model on benchmark sets, resumable, with result tables.

``evaluate(model, EvalConfig(sets=[...]), out="runs/x")`` loads the sets, generates greedy responses
(:func:`mosr.generate.generate_full`: KV cache, left padding, length-sorted batches), judges them
(:mod:`mosr.evaluation.judge`) and appends one JSON line per prompt to ``out/responses.jsonl`` after every batch.
Re-running the same command resumes: prompts whose ``(set, id)`` is already in the file are not
generated again. ``mode="score"`` skips generation and records only the logit refusal score.

Capability sets (``nll_sets``; by default ``self-instruct-heldout`` when it is in ``sets``) are not
generated: each record's reference ``completion`` is scored by teacher forcing
(:func:`capability_nll`: mean per-token NLL of the answer given the chat-formatted prompt), one row
per prompt with ``nll`` and ``nll_tokens``, appended and resumed like the generated rows.

A set is a benchmark name (:func:`mosr.datasets.names`) or a prompt file: ``.jsonl`` records (lines
holding only ``{"prompt": ...}`` are enough) or ``.txt`` with one prompt per line; prompts without a
label get ``label`` (default ``unknown``: reported with an "answered" rate only, no RR / ASR).

Run folder: ``config.yaml`` (the resolved :class:`EvalConfig`: data directory, device and dtype filled
in; written once the model and the data have loaded, so a failed start leaves nothing behind),
``responses.jsonl``, ``metrics.json``, ``table.md`` and ``run.json`` (model, judge, per-invocation wall
time and throughput).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mosr.config import Config, changed_run_error
from mosr.batching import pad_id, plan_chunks
from mosr.data import ALL_LABELS, PromptSet, Record
from mosr.errors import ConfigError, DataError, MosrError
from mosr.io import append_jsonl, read_json, read_rows, write_json
from mosr.evaluation.judge import JudgeConfig, Verdict, make_judge
from mosr.evaluation.metrics import RunResult, extract_number, numbers_equal, score_validity, summarise, write_tables
from mosr.interventions.apply import InterventionConfig, intervene, resolve_intervention
from mosr.models import DEFAULT_MODEL, LM, accepts_logits_to_keep, default_device

#: shorthand set names expanded before loading
SET_ALIASES: dict[str, tuple[str, ...]] = {"jbb": ("jbb-harmful", "jbb-benign")}
#: config fields that define what a run folder contains; a resumed run must agree on them
RUN_DEFINING = ("model", "adapter", "seed", "mode", "max_new_tokens", "max_new_tokens_per_set", "system", "chat",
                "dtype", "judge", "nll_max_length", "label", "intervention")
MODES = ("generate", "score", "repr")
#: sets scored by capability NLL (not generated) when listed in ``sets`` and ``nll_sets`` is not given
DEFAULT_NLL_SETS: tuple[str, ...] = ("self-instruct-heldout",)


@dataclass
class EvalConfig(Config):
    """What to evaluate and how. Saved as ``config.yaml`` in the run folder."""

    model: str = DEFAULT_MODEL
    adapter: str | None = None
    sets: list[str] = field(default_factory=lambda: ["xstest", "jbb-harmful", "jbb-benign"])
    #: seeded sample of n prompts for each name in ``sets`` (None = all). A composite name, a mixed set
    #: (xstest) or an alias (jbb), shares its n among its subsets, drawn as one set: n=16 of xstest gave
    #: 10 safe + 6 unsafe; name the subsets (xstest-safe, xstest-unsafe) for n of each
    n: int | None = None
    #: overrides n for some names of ``sets`` (or subsets of a composite name, each then drawn alone)
    n_per_set: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    mode: str = "generate"  # generate | score (refusal score only, no generation)
    max_new_tokens: int = 64
    max_new_tokens_per_set: dict[str, int] = field(default_factory=dict)  # e.g. {"gsm8k": 256}
    batch_size: int = 16
    max_batch_tokens: int | None = 4096  # padded prompt tokens per batch (long prompts get smaller batches)
    system: str | None = None  # system prompt (None = the chat template's default)
    chat: bool = True
    data_dir: str | None = None
    dtype: str = "float32"
    device: str | None = None
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    #: sets scored by capability NLL of their reference ``completion`` instead of being generated
    #: (None = those of :data:`DEFAULT_NLL_SETS` that are in ``sets``; [] = none)
    nll_sets: list[str] | None = None
    nll_max_length: int = 1024  # prompt + answer tokens per NLL example (longer ones are cut on the right)
    #: ``mode: repr``: layers of the displacement 1 − cos(h', h) (None: ≈1/3 and 2/3 depth)
    repr_layers: list[int] | None = None
    #: label of prompts in prompt files that carry none (.txt files, {"prompt": ...} lines); None = unknown
    label: str | None = None
    intervention: InterventionConfig = field(default_factory=InterventionConfig)  # --ablate / --steer DIR, whole run

    def __post_init__(self) -> None:
        if self.label is not None and self.label not in ALL_LABELS:
            raise ConfigError(f"EvalConfig.label must be one of {ALL_LABELS}, got {self.label!r}")
        if self.mode not in MODES:
            raise ConfigError(f"EvalConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("EvalConfig.batch_size and max_new_tokens must be ≥ 1")
        if isinstance(self.sets, str):
            self.sets = [s.strip() for s in self.sets.split(",") if s.strip()]
        if not self.sets:
            raise ConfigError("EvalConfig.sets is empty: name at least one data set")
        if isinstance(self.nll_sets, str):
            self.nll_sets = [s.strip() for s in self.nll_sets.split(",") if s.strip()]
        if self.nll_sets is not None:
            stray = [s for s in self.nll_sets if s not in self.set_names()]
            if stray:
                raise ConfigError(f"EvalConfig.nll_sets {stray} are not in sets {self.set_names()}: an NLL set "
                                  "must also be listed in sets")
        if self.nll_max_length < 2:
            raise ConfigError("EvalConfig.nll_max_length must be ≥ 2")

    def set_names(self) -> list[str]:
        """Set names with aliases expanded, duplicates removed, order kept."""
        out: list[str] = []
        for name in self.sets:
            for s in SET_ALIASES.get(name, (name,)):
                if s not in out:
                    out.append(s)
        return out

    def nll_set_names(self) -> list[str]:
        """The sets scored by capability NLL (``nll_sets`` resolved; set order kept)."""
        chosen = self.nll_sets if self.nll_sets is not None else DEFAULT_NLL_SETS
        return [s for s in self.set_names() if s in chosen]

    def set_groups(self) -> list[tuple[str, list[str]]]:
        """Each name of ``sets`` with the sets it loads (an alias expanded; a set loaded once, by its
        first name)."""
        seen: set[str] = set()
        groups = []
        for name in self.sets:
            members = [s for s in SET_ALIASES.get(name, (name,)) if s not in seen]
            seen.update(members)
            if members:
                groups.append((name, members))
        return groups

    def check_per_set(self) -> None:
        """Raise :class:`ConfigError` for a ``n_per_set`` / ``max_new_tokens_per_set`` key that names no set
        of this run (a typo or a set missing from ``sets`` would otherwise be ignored)."""
        known = [*dict.fromkeys([*self.sets, *self.set_names()])]
        for field_name, flag in (("n_per_set", "--n-per-set"), ("max_new_tokens_per_set", "--max-new-tokens-per-set")):
            bad = [k for k in getattr(self, field_name) if k not in known]
            if bad:
                raise ConfigError(f"{field_name} ({flag}): {', '.join(map(repr, bad))} not among the sets of this "
                                  f"run ({', '.join(known)}); a key must name a set given in sets")

    def n_for(self, name: str) -> int | None:
        return self.n_per_set.get(name, self.n)

    def tokens_for(self, name: str) -> int:
        return self.max_new_tokens_per_set.get(name, self.max_new_tokens)


def load_set(name: str, data_dir: str | None = None, n: int | None = None, seed: int = 0,
             label: str | None = None) -> PromptSet:
    """A benchmark set by name (see :func:`mosr.datasets.names`) or a prompt file (``.jsonl`` / ``.txt``;
    ``label`` for its unlabelled prompts), seeded sample of ``n``."""
    from mosr import datasets

    ps = datasets.load(name, data_dir=data_dir, label=label)  # a set name or a prompt file
    if not len(ps):
        raise DataError(f"data set {name!r} is empty: nothing to evaluate")
    if n is not None and n < 1:
        raise DataError(f"n={n} for data set {name!r}: need at least 1 prompt")
    ids = ps.ids
    if len(set(ids)) != len(ids):
        raise DataError(f"data set {name!r} has duplicate ids; resuming needs unique ids")
    return ps.sample(n, seed)


def load_sets(cfg: EvalConfig) -> dict[str, PromptSet]:
    """Every set of ``cfg`` (errors for unknown or empty sets are raised before any model is loaded)."""
    from mosr import datasets

    for name in cfg.set_names():  # every name first: a typo is reported before a missing data directory
        datasets.check_name(name)
    sets: dict[str, PromptSet] = {}
    for group, names in cfg.set_groups():  # a composite name shares its n (mixed sets are loaded as one)
        alone = [s for s in names if s == group or s in cfg.n_per_set]
        sets.update({s: load_set(s, cfg.data_dir, cfg.n_for(s), cfg.seed, cfg.label) for s in alone})
        shared = [s for s in names if s not in alone]
        n = cfg.n_for(group)
        if shared and n is not None and n < 1:
            raise DataError(f"n={n} for data set {group!r}: need at least 1 prompt")
        parts = [load_set(s, cfg.data_dir, None, cfg.seed, cfg.label) for s in shared]
        sets.update(zip(shared, PromptSet.sample_together(parts, n, cfg.seed)))
    sets = {name: sets[name] for name in cfg.set_names()}
    for name in cfg.nll_set_names():
        bad = [r.id for r in sets[name] if not r.completion or r.label == "harmful"]
        if bad:
            raise DataError(f"data set {name!r} cannot be scored by capability NLL: {len(bad)} record(s) "
                            f"(e.g. {bad[:3]}) are harmful or have no reference 'completion'. NLL sets need "
                            "benign / pseudo-harmful records with good answers (e.g. self-instruct-heldout)")
    return sets


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


def _row(set_name: str, rec: Record, response: str | None, verdict: Verdict | None, score: float | None,
         new_tokens: int | None) -> dict[str, Any]:
    row: dict[str, Any] = {"id": rec.id, "set": set_name, "label": rec.label, "category": rec.category,
                           "prompt": rec.prompt, "response": response,
                           "verdict": verdict.value if verdict is not None else None,
                           "refusal_score": score, "new_tokens": new_tokens}
    answer = rec.extra.get("final_answer")
    if answer is not None:
        row["final_answer"] = str(answer)
        if response is not None:
            row["extracted"] = extract_number(response)
            row["correct"] = numbers_equal(row["extracted"], str(answer))
    return row


def _nll_row(set_name: str, rec: Record, nll: float | None, tokens: int) -> dict[str, Any]:
    return {"id": rec.id, "set": set_name, "label": rec.label, "category": rec.category, "prompt": rec.prompt,
            "response": None, "verdict": None, "refusal_score": None, "new_tokens": None, "nll": nll,
            "nll_tokens": tokens}


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


def evaluate(model: LM | str | os.PathLike[str], cfg: EvalConfig | None = None,
             out: str | os.PathLike[str] = "runs/eval", progress: bool = True) -> EvalResult:
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
    _check_resume(out, cfg)
    path = out / "responses.jsonl"
    rows = read_rows(path, missing_ok=True, repair=True)
    done = {(r["set"], r["id"]) for r in rows}
    pending = {name: [rec for rec in ps if (name, rec.id) not in done] for name, ps in sets.items()}
    n_pending = sum(len(v) for v in pending.values())
    t0 = time.perf_counter()
    stats: dict[str, Any] = {"prompts": 0, "new_tokens": 0, "resumed_rows": len(rows)}
    nll_names = cfg.nll_set_names()
    if nll_names and not cfg.chat:
        raise ConfigError("capability NLL needs the chat template (chat=True): drop the NLL sets or pass "
                          "--nll-sets none")
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


def _run_generate(lm: LM, cfg: EvalConfig, pending: dict[str, list[Record]], path: Path,
                  judge_fn: Any, stats: dict[str, Any], progress: bool) -> None:
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
            scores = b.refusal_scores or [None] * len(b.index)
            append_jsonl(path, [_row(name, rec, resp, v, s, t) for (name, rec), resp, v, s, t
                                in zip(batch_items, b.responses, verdicts, scores, b.new_tokens)])

        g = generate_full(lm, [rec.prompt for _, rec in items], max_new_tokens=max_new, batch_size=cfg.batch_size,
                          chat=cfg.chat, system=cfg.system, progress=progress, on_batch=on_batch, score=True,
                          max_batch_tokens=cfg.max_batch_tokens)
        stats["prompts"] += len(items)
        stats["new_tokens"] += sum(g.new_tokens)
        stats.setdefault("groups", []).append({"max_new_tokens": max_new, "prompts": len(items),
                                               "new_tokens": sum(g.new_tokens),
                                               "seconds": round(time.perf_counter() - t0, 2)})


def _run_score(lm: LM, cfg: EvalConfig, pending: dict[str, list[Record]], path: Path, stats: dict[str, Any],
               progress: bool) -> None:
    from mosr.evaluation.judge import refusal_scores

    items = [(name, rec) for name, recs in pending.items() for rec in recs]
    chunk = cfg.batch_size * 8  # append to the log every few batches
    bar = tqdm(total=len(items), desc="score", disable=not progress, unit="prompt")
    for s in range(0, len(items), chunk):
        part = items[s:s + chunk]
        scores = refusal_scores(lm, [rec.prompt for _, rec in part], batch_size=cfg.batch_size, chat=cfg.chat,
                                system=cfg.system, progress=False, max_batch_tokens=cfg.max_batch_tokens)
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
    values = displacement(lm, base, [rec.prompt for _, rec in items], cfg.repr_layers, cfg.batch_size, cfg.chat,
                          cfg.system)
    append_jsonl(path, [{**_row(name, rec, None, None, None, None), "displacement": round(float(v), 6)}
                        for (name, rec), v in zip(items, values)])
    stats["prompts"] += len(items)


def _run_nll(lm: LM, cfg: EvalConfig, pending: dict[str, list[Record]], path: Path, stats: dict[str, Any],
             progress: bool) -> None:
    items = [(name, rec) for name, recs in pending.items() for rec in recs]
    t0 = time.perf_counter()
    bar = tqdm(total=len(items), desc="capability NLL", disable=not progress, unit="prompt")

    def on_batch(index: list[int], values: list[tuple[float | None, int]]) -> None:
        append_jsonl(path, [_nll_row(*items[i], nll, tokens) for i, (nll, tokens) in zip(index, values)])
        bar.update(len(index))

    scored = capability_nll(lm, [rec.prompt for _, rec in items], [rec.completion or "" for _, rec in items],
                            batch_size=cfg.batch_size, max_batch_tokens=cfg.max_batch_tokens, system=cfg.system,
                            max_length=cfg.nll_max_length, on_batch=on_batch)
    bar.close()
    stats["prompts"] += len(items)
    stats["nll"] = {"prompts": len(items), "answer_tokens": sum(t for _, t in scored),
                    "seconds": round(time.perf_counter() - t0, 2)}


def capability_nll(lm: LM, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 16,
                   max_batch_tokens: int | None = 4096, system: str | None = None, max_length: int = 1024,
                   on_batch: Any = None) -> list[tuple[float | None, int]]:
    """Teacher-forced NLL of reference answers: per prompt ``(mean token NLL, answer tokens)``.

    Each pair is tokenized as an ``sft`` :class:`~mosr.encoding.TrainExample` (chat template, the
    answer tokens plus the end-of-turn EOS labelled, :func:`mosr.encoding.encode`), batched longest
    first (at most ``batch_size`` rows and ``max_batch_tokens`` padded tokens), left padded, run
    without gradients, and reduced with :func:`mosr.losses.token_nll` (float32, nats). Only the
    logits of the answer positions are computed where the model supports ``logits_to_keep``.
    A pair left without an answer token by ``max_length`` gives ``(None, 0)``.
    ``on_batch(index, values)`` is called after every batch (positions into ``prompts``).
    """
    import torch

    from mosr.encoding import TrainExample, collate, encode
    from mosr.losses import IGNORE_INDEX, token_nll

    if len(prompts) != len(completions):
        raise MosrError(f"capability_nll: {len(prompts)} prompts but {len(completions)} completions")
    if not prompts:
        return []
    examples = [TrainExample("sft", p, c, id=str(i)) for i, (p, c) in enumerate(zip(prompts, completions))]
    enc = encode(lm, examples, max_length=max_length, system=system, drop_empty=False)
    chunks = plan_chunks([len(e) for e in enc], batch_size, max_batch_tokens)  # longest first
    fill = pad_id(lm)
    keep_ok = accepts_logits_to_keep(lm.model)
    out: list[tuple[float | None, int]] = [(None, 0)] * len(enc)
    was_training = lm.model.training
    lm.model.eval()
    try:
        for chunk in chunks:
            batch = collate([enc[i] for i in chunk], fill, padding_side="left")
            labels = batch["labels"]
            # left padding: every labelled token sits in the last `keep - 1` positions
            keep = max(len(enc[i]) - enc[i].prompt_len for i in chunk) + 1
            keep = min(keep, labels.shape[1])
            inputs = {k: batch[k].to(lm.device) for k in ("input_ids", "attention_mask", "position_ids")}
            with torch.inference_mode():
                extra = {"logits_to_keep": keep} if keep_ok else {}
                logits = lm.model(**inputs, use_cache=False, **extra).logits[:, -keep:]
                per = token_nll(logits, labels[:, -keep:]).cpu()
            counts = (labels[:, 1:] != IGNORE_INDEX).sum(-1)
            values = [(float(per[j]) if int(counts[j]) else None, int(counts[j])) for j in range(len(chunk))]
            for i, v in zip(chunk, values):
                out[i] = v
            if on_batch is not None:
                on_batch(chunk, values)
    finally:
        lm.model.train(was_training)
    return out


def _finish(out: Path, cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> RunResult:
    history_path = out / "run.json"
    history = read_json(history_path) if history_path.is_file() else {"invocations": []}
    if stats["prompts"]:
        history["invocations"].append(stats)
    history.update(model=cfg.model, adapter=cfg.adapter, judge=cfg.judge.describe(), mode=cfg.mode,
                   total_wall_s=round(sum(s.get("wall_s", 0.0) for s in history["invocations"]), 2))
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
    return RunResult(name=out.name, path=str(out), model=model, judge=cfg.judge.describe() if cfg.mode == "generate"
                     else "logit refusal score (log-odds of refusal-opener tokens > 0)",
                     seed=cfg.seed, mode=cfg.mode, max_new_tokens=tokens, system=cfg.system,
                     metrics=summarise(rows), wall_s=history.get("total_wall_s"),
                     score_auroc=score_validity(rows) if cfg.mode == "generate" else None)


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


__all__ = ["DEFAULT_NLL_SETS", "EvalConfig", "EvalResult", "capability_nll", "evaluate", "load_run", "load_set",
           "load_sets", "compare"]
