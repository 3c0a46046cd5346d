"""Result tables of evaluation runs: :class:`RunResult` (one run's summary) and the Markdown / JSON
comparison of several (:func:`markdown_table`, :func:`write_tables`), from the metrics of
:mod:`mosr.evaluation.metrics`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mosr.errors import MosrError
from mosr.evaluation.metrics import (
    AGGREGATE_FORMULA,
    PAPER_ASR_COLUMNS,
    PAPER_RR_COLUMNS,
    SetMetrics,
    answered_on_topic_point,
    paper_aggregate,
    tradeoff_point,
)
from mosr.io import write_json, write_text
from mosr.stats import Rate, fmt_auroc

ON_TOPIC_NOTE = (
    "answered+on-topic = (compliance whose response shares a content word with the prompt: lowercased, "
    "stopwords removed, suffixes stripped) / n, benign and pseudo-harmful sets only (higher is better)."
)
NLL_NOTE = (
    "capability NLL = mean over prompts of the per-token NLL (nats) of the reference answer given the "
    "chat-formatted prompt (teacher forcing), 95% Student-t CI over prompts (lower is better)."
)


@dataclass
class RunResult:
    """Summary of one evaluation run: what was evaluated, how, and its per-subset metrics."""

    name: str
    path: str
    model: str
    judge: str
    seed: int
    mode: str
    max_new_tokens: dict[str, int]
    system: str | None
    metrics: list[SetMetrics]
    wall_s: float | None = None
    #: :func:`score_validity` of the run's rows (generate mode with scores), else None
    score_auroc: dict[str, Any] | None = None

    def by_name(self) -> dict[str, SetMetrics]:
        return {m.name: m for m in self.metrics}

    def to_dict(self) -> dict[str, Any]:
        x, y = tradeoff_point(self.metrics)
        return {
            "name": self.name,
            "path": self.path,
            "model": self.model,
            "judge": self.judge,
            "seed": self.seed,
            "mode": self.mode,
            "max_new_tokens": self.max_new_tokens,
            "system": self.system,
            "wall_s": self.wall_s,
            "ci": "95% Wilson score interval per set (capability NLL: 95% t-interval)",
            "score_auroc": self.score_auroc,
            "sets": {m.name: m.to_dict() for m in self.metrics},
            "aggregate": paper_aggregate(self.metrics),
            "tradeoff": {"mean_rr": asdict(x), "mean_asr": asdict(y)},
            "answered_on_topic": asdict(answered_on_topic_point(self.metrics)),
            "capability_nll": {m.name: m.nll.to_dict() for m in self.metrics if m.nll},
        }


def _n_label(runs: Sequence[RunResult], name: str) -> str:
    ns = {r.by_name()[name].n for r in runs if name in r.by_name()}
    return f" (n={ns.pop()})" if len(ns) == 1 else ""


def markdown_table(runs: Sequence[RunResult]) -> str:
    """Markdown comparison of runs: header (model, judge, seed, n, CI), paper columns, per-set detail."""
    if not runs:
        raise MosrError("no runs to tabulate")
    lines = ["## Evaluation results", ""]
    for r in runs:
        sets = ", ".join(f"{m.name} (n={m.n})" for m in r.metrics)
        lines.append(
            f"- **{r.name}**: model `{r.model}`; judge: {r.judge}; seed {r.seed}; mode {r.mode}; "
            f"max new tokens {_fmt_tokens(r.max_new_tokens)}; system prompt "
            f"{'default' if r.system is None else repr(r.system)}; data: {sets}"
            + (f"; wall time {r.wall_s / 60:.1f} min" if r.wall_s else "")
            + (
                "; logit refusal score vs judged refusal: AUROC "
                f"{fmt_auroc(r.score_auroc['auroc'], r.score_auroc['low'], r.score_auroc['high'])} "
                f"({r.score_auroc['n_refusal']} refusals, {r.score_auroc['n_compliance']} compliances)"
                if r.score_auroc
                else ""
            )
        )
    lines += [
        "",
        "Cells: % with 95% Wilson CI. RR = (refusal + degenerate) / n; ASR = compliance / n. "
        + AGGREGATE_FORMULA
        + ". "
        + ON_TOPIC_NOTE
        + " "
        + NLL_NOTE,
        "",
    ]
    present = {m.name for r in runs for m in r.metrics}
    nll_names = sorted({m.name for r in runs for m in r.metrics if m.nll_n})
    rate_names = {m.name for r in runs for m in r.metrics if not m.nll_only}
    cols = [(c, "RR") for c in PAPER_RR_COLUMNS if c in rate_names] + [
        (c, "ASR") for c in PAPER_ASR_COLUMNS if c in rate_names
    ]
    others = sorted(rate_names - set(PAPER_RR_COLUMNS) - set(PAPER_ASR_COLUMNS))
    head = ["run"] + [f"{c} {kind}{_n_label(runs, c)}" for c, kind in cols]
    head += [f"{c} {_primary_kind(runs, c)}{_n_label(runs, c)}" for c in others]
    head += ["aggregate ↓", "mean RR (benign+pseudo)", "mean ASR (harmful)"]
    on_topic_any = any(m.answered_on_topic_rate is not None for r in runs for m in r.metrics)
    if on_topic_any:
        head.append("mean answered+on-topic (benign+pseudo) ↑")
    gsm = "gsm8k" in present
    if gsm:
        head.append("GSM8K acc")
    head += [f"{c} capability NLL ↓{_n_label(runs, c)}" for c in nll_names]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        by = r.by_name()
        cells = [r.name]
        for c, kind in cols:
            m = by.get(c)
            cells.append(_cell(m, kind))
        for c in others:
            m = by.get(c)
            cells.append(m.primary[1].fmt() if m else "–")
        agg = paper_aggregate(r.metrics)
        x, y = tradeoff_point(r.metrics)
        cells += [f"{agg['value']:.3f}" if agg["value"] is not None else "–", x.fmt(), y.fmt()]
        if on_topic_any:
            cells.append(answered_on_topic_point(r.metrics).fmt())
        if gsm:
            acc = by["gsm8k"].accuracy if "gsm8k" in by else None
            cells.append(acc.fmt() if acc else "–")
        for c in nll_names:
            nll = by[c].nll if c in by else None
            cells.append(nll.fmt() if nll else "–")
        lines.append("| " + " | ".join(cells) + " |")
    unknown_any = any(not m.has_rates for r in runs for m in r.metrics)
    head = [
        "run",
        "set",
        "label",
        "n",
        "refusal",
        "degenerate",
        "compliance",
        "RR % [95% CI]",
        "answered+on-topic % [95% CI]",
        "ASR % [95% CI] (harmful sets)",
        "answered % [95% CI] (other sets)",  # compliance / n: what a benign set's "ASR" would have been
    ]
    head += ["mean refusal score", "score>0 % [95% CI]", "capability NLL ↓ [95% CI]", "NLL tokens"]
    lines += [
        "",
        "Per set:"
        + (
            " (label `unknown`: the prompts' label was not given, so they have an answered "
            "rate = compliance / n and no RR or ASR)"
            if unknown_any
            else ""
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in runs:
        for m in r.metrics:
            rates = bool(m.judged) and m.has_rates
            topic = m.answered_on_topic_rate
            nll = m.nll
            cells = [
                r.name,
                m.name,
                m.label,
                str(m.n),
                str(m.refusal),
                str(m.degenerate),
                str(m.compliance),
                m.rr.fmt() if rates else "–",
                topic.fmt() if topic else "–",
                m.asr.fmt() if rates and m.label == "harmful" else "–",
                m.answered.fmt() if m.judged and m.label != "harmful" else "–",
            ]
            cells += [
                f"{m.mean_score:.2f}" if m.scored else "–",
                m.score_rr.fmt() if m.scored else "–",
                nll.fmt() if nll else "–",
                str(m.nll_tokens) if nll else "–",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt_tokens(tokens: Mapping[str, int]) -> str:
    values = sorted(set(tokens.values()))
    if not values:
        return "–"
    if len(values) == 1:
        return str(values[0])
    common = max(values, key=lambda v: sum(1 for t in tokens.values() if t == v))
    special = ", ".join(f"{k}: {v}" for k, v in tokens.items() if v != common)
    return f"{common} ({special})"


def _primary_kind(runs: Sequence[RunResult], name: str) -> str:
    for r in runs:
        if name in r.by_name():
            return r.by_name()[name].primary[0]
    return "RR"


def _cell(m: SetMetrics | None, kind: str) -> str:
    if m is None:
        return "–"
    if not m.judged:
        return (
            "score " + m.score_rr.fmt()
            if kind == "RR"
            else "score " + Rate(m.scored - m.score_positive, m.scored).fmt()
        )
    return (m.rr if kind == "RR" else m.asr).fmt()


def write_tables(runs: Sequence[RunResult], stem: str | Any) -> list[Any]:
    """Write ``<stem>.md`` and ``<stem>.json`` (atomically)."""
    from pathlib import Path

    stem = Path(stem)
    md = Path(f"{stem}.md") if stem.suffix != ".md" else stem
    js = md.with_suffix(".json")
    write_text(md, markdown_table(runs))
    write_json(
        js,
        {
            "ci": "95% Wilson score interval (capability NLL: 95% Student-t interval over prompts)",
            "aggregate_formula": AGGREGATE_FORMULA,
            "answered_on_topic": ON_TOPIC_NOTE,
            "capability_nll": NLL_NOTE,
            "runs": [r.to_dict() for r in runs],
        },
    )
    return [md, js]
