"""The trade-off study's report: every evaluated point judged again, the paired statistics, the tables
(``results.json``, ``summary.md``, ``verdicts.jsonl``) and the figures (``frontier.png``, ``groups.png``,
``lens.png``, drawn by :mod:`mosr.plots.tradeoff`).
The stages that produce the points are in :mod:`mosr.tradeoff.run`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mosr.tradeoff.frontier import (
    Groups,
    Point,
    boot_rate,
    bootstrap_draws,
    matched_asr,
    matched_difference,
    seed_difference,
    seed_spread,
    verdict,
)
from mosr.tradeoff.plan import StudyPlan


@dataclass
class Judged:
    """Saved responses judged again with the current judge, by subset (:func:`mosr.evaluation.metrics.subset_name`)."""

    #: subset -> 1 (answered) / 0 per prompt, in the order of ``ids`` (rows sorted by set and id)
    answered: dict[str, list[int]]
    ids: dict[str, list[str]]
    #: subset -> the label of its prompts
    labels: dict[str, str]
    #: the capability-NLL rows' values (teacher forcing: no response to judge)
    nll: list[float]


def judge_rows(rows: Sequence[dict[str, Any]]) -> Judged:
    """Rows of a ``responses.jsonl`` judged again with :func:`mosr.evaluation.judge.judge`."""
    from mosr.evaluation.judge import Verdict, judge
    from mosr.evaluation.metrics import subset_name

    labels_by_set: dict[str, set[str]] = {}
    for r in rows:
        labels_by_set.setdefault(r["set"], set()).add(r["label"])
    out = Judged({}, {}, {}, [])
    for r in sorted(rows, key=lambda r: (r["set"], str(r.get("id", "")))):
        if r.get("nll") is not None:
            out.nll.append(float(r["nll"]))
            continue
        key = subset_name(r["set"], r["label"], labels_by_set[r["set"]])
        out.answered.setdefault(key, []).append(
            int(judge(r.get("response") or "", prompt=r.get("prompt")) is Verdict.COMPLIANCE)
        )
        out.ids.setdefault(key, []).append(r.get("id", ""))
        out.labels[key] = r["label"]
    return out


def load_point(folder: Path) -> Point:
    """A :class:`Point` from one of the study's eval folders, named ``<method>-s<seed>@<step>`` or ``base``
    (:func:`load_eval` with the name parsed)."""
    name = folder.name
    method, seed, step = "base", None, 0
    if name != "base":
        run, step_s = name.rsplit("@", 1)
        method, seed_s = run.rsplit("-s", 1)
        seed, step = int(seed_s), int(step_s)
    return load_eval(folder, name, method, seed, step)


def load_eval(folder: Path, name: str, method: str = "base", seed: int | None = None, step: int = 0) -> Point:
    """A :class:`Point` from any ``mosr eval`` run folder, judged again with the current judge, under the
    given name. Only the rows of the prompts its config samples count (a folder resumed with another ``n``
    keeps its older rows)."""
    from mosr.evaluation.config import EvalConfig, load_sets
    from mosr.io import read_rows

    wanted = {(s, i) for s, ps in load_sets(EvalConfig.load(folder / "config.yaml")).items() for i in ps.ids}
    judged = judge_rows([r for r in read_rows(folder / "responses.jsonl") if (r["set"], r["id"]) in wanted])
    return Point(
        name,
        method,
        seed,
        step,
        {k: np.array(v) for k, v in judged.answered.items()},
        judged.ids,
        float(np.mean(judged.nll)) if judged.nll else None,
    )


def load_finished(
    folder: Path, name: str, method: str, sets: Sequence[str], seed: int | None = None, step: int = 0
) -> Point:
    """:func:`load_eval` of a finished ``mosr eval`` folder that holds rows of every one of ``sets``;
    :class:`~mosr.errors.ConfigError` with a one-line reason otherwise."""
    from mosr.errors import ConfigError, MosrError

    if not folder.is_dir():
        raise ConfigError(f"no evaluation folder {folder}")
    missing = [f for f in ("config.yaml", "responses.jsonl", "metrics.json") if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"{folder} is not a finished mosr eval run folder (no {', '.join(missing)})")
    try:
        p = load_eval(folder, name, method, seed, step)
    except (MosrError, KeyError, OSError) as err:
        raise ConfigError(f"cannot read {folder}: {' '.join(str(err).split())}") from None
    absent = [s for s in sets if s not in p.answered]
    if absent:
        raise ConfigError(f"{folder} has no rows of set(s) {absent} (it has {sorted(p.answered)})")
    return p


def report(plan: StudyPlan, out: Path, rep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Collect every evaluated point into ``results.json``, ``summary.md`` and ``frontier.png``."""
    from mosr.io import write_json, write_jsonl, write_text

    # finished evaluations only (a worker may be half-way through one)
    points = [load_point(p) for p in sorted((out / "eval").iterdir()) if (p / "metrics.json").is_file()]
    sets = [*plan.harmful, *plan.overrefusal]
    draws = bootstrap_draws(points, sets, plan.bootstrap, plan.eval_seed)
    s0 = plan.seeds[0]

    def row(p: Point) -> dict[str, Any]:
        a, r = boot_rate(p, plan.harmful, draws, False), boot_rate(p, plan.overrefusal, draws, True)
        return {
            "name": p.name,
            "method": p.method,
            "seed": p.seed,
            "step": p.step,
            "asr": round(p.asr(plan.harmful), 2),
            "asr_ci": [round(float(np.percentile(a, q)), 2) for q in (2.5, 97.5)],
            "rr": round(p.rr(plan.overrefusal), 2),
            "rr_ci": [round(float(np.percentile(r, q)), 2) for q in (2.5, 97.5)],
            "sets": {
                s: round(100 * float(p.answered[s].mean() if s in plan.harmful else 1 - p.answered[s].mean()), 1)
                for s in sets
            },
            "n": {s: int(len(p.answered[s])) for s in sets},
            "nll": None if p.nll is None else round(p.nll, 4),
        }

    rows = [row(p) for p in points]
    frontier = {
        m: sorted((p for p in points if p.method == m and p.seed == s0), key=lambda p: p.step) for m in plan.methods
    }
    final = {m: max((p.step for p in pts), default=0) for m, pts in frontier.items()}
    finals = {m: [p for p in points if p.method == m and p.step == final[m]] for m in plan.methods}
    res: dict[str, Any] = {
        "plan": plan.to_dict(),
        "points": rows,
        "seeds": {m: seed_spread(ps, plan) for m, ps in finals.items() if ps},
    }
    res["matched"] = {}
    for m in plan.methods:
        if m != plan.reference and frontier.get(m) and frontier.get(plan.reference):
            res["matched"][m] = _compare(plan, m, plan.reference, frontier, finals, res["seeds"], draws)
    res["pairs"] = {
        f"{m} vs {ref}": _compare(plan, m, ref, frontier, finals, res["seeds"], draws)
        for m, ref in plan.compare
        if frontier.get(m) and frontier.get(ref)
    }
    by = {r["name"]: r for r in rows}
    res["groups"] = {g: [by[p.name] for m in ms for p in frontier.get(m, [])[-1:]] for g, ms in plan.groups.items()}
    if rep is not None:
        res["representation"] = rep
    write_json(out / "results.json", res)
    write_jsonl(
        out / "verdicts.jsonl",
        [
            {"point": p.name, "set": s, "id": i, "answered": int(a)}
            for p in points
            for s in p.answered
            for i, a in zip(p.ids[s], p.answered[s])
        ],
    )
    write_text(out / "summary.md", summary_md(plan, res))
    from mosr.plots import plot_frontier, plot_groups, plot_lens

    shown = plan.figure_methods or list(plan.methods)
    plot_frontier(
        rows,
        {m: [p.name for p in frontier[m]] for m in shown},
        out / "frontier",
        first_seed=plan.seeds[0],
        overrefusal=plan.overrefusal,
        title=plan.name,
    )
    if plan.groups:
        plot_groups(res["groups"], res["points"], out / "groups")
    if rep is not None and rep.get("lens"):
        plot_lens(rep["lens"], out / "lens", harmful=plan.harmful, overrefusal=plan.overrefusal)
    return res


def _compare(
    plan: StudyPlan,
    m: str,
    ref: str,
    frontier: dict[str, list[Point]],
    finals: dict[str, list[Point]],
    seeds: dict[str, Any],
    draws: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Over-refusal of ``m`` minus ``ref`` at matched ASR (at ``ref``'s operating ASR when ``m``'s
    frontier reaches it), with its verdict, and the final-step difference (over seeds, resampled, when
    there are several; over prompts only for one seed), at the seeds both have, overall and set by set."""
    at, why = matched_asr(frontier[m], frontier[ref], seeds[ref]["asr_mean"], plan)
    d = matched_difference(frontier[m], frontier[ref], at, plan, draws)
    d["at_reason"] = why
    d["verdict"] = verdict(d)
    # the final steps at the seeds both methods have (a one-seed method is compared with the reference's
    # same seed, not with its seed mean: one seed carries no seed variance); seeds resampled when several
    shared = {p.seed for p in finals[m]} & {p.seed for p in finals[ref]}
    a, b = [p for p in finals[m] if p.seed in shared], [p for p in finals[ref] if p.seed in shared]
    if a and b:
        d["final_step_seeds"] = sorted(shared)
        d["final_step_over_seeds"] = seed_difference(a, b, plan, draws)
        # the same difference set by set: a tie of the means can hide opposite moves on single sets
        d["per_set_over_seeds"] = {
            s: {
                k: v
                for k, v in seed_difference(a, b, Groups([s], [s]), draws).items()
                if k.startswith("rr" if s in plan.overrefusal else "asr")
            }
            for s in [*plan.harmful, *plan.overrefusal]
        }
    return d


def _fmt_ci(v: float, ci: Sequence[float]) -> str:
    return f"{v:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def summary_md(plan: StudyPlan, res: dict[str, Any]) -> str:
    """The study's tables as markdown: operating points over seeds, comparisons at matched ASR, every
    point of every frontier, and the representation stage."""
    sets = [*plan.harmful, *plan.overrefusal]
    n = {s: res["points"][0]["n"][s] for s in sets} if res["points"] else {}
    lines = [
        f"# {plan.name}",
        "",
        f"Model {plan.model}. Judge: `mosr.evaluation.judge` (string match + degenerate detector) on "
        f"{plan.max_new_tokens} new tokens. Prompts per set: {', '.join(f'{s} {k}' for s, k in n.items())} "
        f"(eval seed {plan.eval_seed}). "
        f"ASR = mean over {', '.join(plan.harmful)}; over-refusal RR = mean over {', '.join(plan.overrefusal)}. "
        "CIs: 95% bootstrap over prompts.",
        "",
        "## Operating points (final step, mean ± sd over seeds)",
        "",
        "| method | seeds | ASR ↓ | over-refusal RR ↓ | capability NLL ↓ |",
        "|---|---|---|---|---|",
    ]
    base = next((r for r in res["points"] if r["method"] == "base"), None)
    if base:
        lines.append(f"| base model | – | {base['asr']:.1f} | {base['rr']:.1f} | {base['nll'] or '–'} |")
    for m, s in res["seeds"].items():

        def sd(v: float) -> str:
            return "" if not np.isfinite(v) else f" ± {v:.1f}"

        lines.append(
            f"| {m} | {len(s['seeds'])} | {s['asr_mean']:.1f}{sd(s['asr_sd'])} | {s['rr_mean']:.1f}{sd(s['rr_sd'])} "
            f"| {s['nll_mean'] if s['nll_mean'] is not None else '–'} |"
        )
    vs = f"against {plan.reference}" + (" (rows `A vs B`: A against B)" if plan.compare else "")
    lines += [
        "",
        f"## Over-refusal at matched ASR, {vs}",
        "",
        "Negative = less over-refusal than the reference at the same ASR (interpolated along each frontier).",
        "",
        "| method | at ASR | why this ASR | RR difference [95% CI] | verdict "
        "| final step at the shared seeds: RR diff [CI], ASR diff [CI] |",
        "|---|---|---|---|---|---|",
    ]
    for m, d in [*res["matched"].items(), *res.get("pairs", {}).items()]:
        fs = d.get("final_step_over_seeds")
        extra = (
            (
                f"{fs['rr_difference']:.1f} [{fs['rr_ci'][0]:.1f}, {fs['rr_ci'][1]:.1f}], "
                f"{fs['asr_difference']:.1f} [{fs['asr_ci'][0]:.1f}, {fs['asr_ci'][1]:.1f}]"
            )
            if fs
            else "–"
        )
        lines.append(
            f"| {m} | {d['at_asr']:.1f} | {d['at_reason']} | {_fmt_ci(d['difference'], d['ci'])} | {d['verdict']} "
            f"| {extra} |"
        )
    per_set = {
        m: d["per_set_over_seeds"]
        for m, d in [*res["matched"].items(), *res.get("pairs", {}).items()]
        if "per_set_over_seeds" in d
    }
    if per_set:
        lines += [
            "",
            "Final step at the seeds both methods have (seeds resampled where there are several), set by set "
            "(ASR difference on the harmful sets, RR difference on the over-refusal sets, [95% CI]):",
            "",
            "| method | " + " | ".join(sets) + " |",
            "|" + "---|" * (len(sets) + 1),
        ]
        for m, ds in per_set.items():
            pairs = [
                (ds[s]["asr_difference"], ds[s]["asr_ci"])
                if s in plan.harmful
                else (ds[s]["rr_difference"], ds[s]["rr_ci"])
                for s in sets
            ]
            cells = [f"{v:+.1f} [{c[0]:.1f}, {c[1]:.1f}]" for v, c in pairs]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if res.get("groups"):
        lines += [
            "",
            f"## Groups: one setting changed (final step, seed {plan.seeds[0]})",
            "",
            "| group | method | changed | ASR [CI] | RR [CI] | NLL |",
            "|---|---|---|---|---|---|",
        ]
        for g, rs in res["groups"].items():
            for r in rs:
                changed = ", ".join(plan.method_set.get(r["method"], [])) or f"as {plan.methods[r['method']]}"
                lines.append(
                    f"| {g} | {r['method']} | {changed} | {_fmt_ci(r['asr'], r['asr_ci'])} | "
                    f"{_fmt_ci(r['rr'], r['rr_ci'])} | {r['nll'] or '–'} |"
                )
    lines += [
        "",
        "## Every point",
        "",
        "| point | step | ASR [CI] | RR [CI] | " + " | ".join(sets) + " | NLL |",
        "|" + "---|" * (len(sets) + 5),
    ]
    for r in sorted(res["points"], key=lambda r: (r["method"] != "base", r["method"], r["seed"] or 0, r["step"])):
        lines.append(
            f"| {r['name']} | {r['step']} | {_fmt_ci(r['asr'], r['asr_ci'])} | {_fmt_ci(r['rr'], r['rr_ci'])} | "
            + " | ".join(f"{r['sets'][s]:.1f}" for s in sets)
            + f" | {r['nll'] or '–'} |"
        )
    rep = res.get("representation")
    if rep:
        rs = [*plan.harmful, *plan.overrefusal]
        lines += [
            "",
            f"## Representations (last prompt token, target layers {rep['layers']})",
            "",
            "mean cos(h', h) against the base model (1 = not moved):",
            "",
            "| model | " + " | ".join(rs) + " |",
            "|" + "---|" * (len(rs) + 1),
        ]
        for name, e in rep["models"].items():
            lines.append(f"| {name} | " + " | ".join(f"{e['moved'][s]:.3f}" for s in rs) + " |")
        lines += [
            "",
            f"share read as malicious by the base model's probe (layer {rep['probe_layer']}):",
            "",
            "| model | " + " | ".join(rs) + " |",
            "|" + "---|" * (len(rs) + 1),
        ]
        for name, e in rep["models"].items():
            lines.append(f"| {name} | " + " | ".join(f"{100 * e['malicious'][s]:.1f}" for s in rs) + " |")
        lines += [
            "",
            "1 − cos(h', h) as a predictor of not answering (AUROC, DeLong 95% CI):",
            "",
            "| model | set | AUROC | not answered / n |",
            "|---|---|---|---|",
        ]
        for name, e in rep["models"].items():
            for s, v in e["predicts_refusal"].items():
                lines.append(
                    f"| {name} | {s} | {v['auroc']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}] "
                    f"| {v['refused']} / {v['n']} |"
                )
        if rep.get("lens"):
            lines += [
                "",
                "LogitLens at the last prompt token, mean refusal − compliance opener mass at the last layer "
                "(per layer: `lens.png`):",
                "",
                "| model | " + " | ".join(rs) + " |",
                "|" + "---|" * (len(rs) + 1),
            ]
            for name, got in rep["lens"].items():
                lines.append(
                    f"| {name} | "
                    + " | ".join(f"{got['sets'][s]['score'][-1]:+.3f}" if s in got["sets"] else "–" for s in rs)
                    + " |"
                )
    return "\n".join(lines) + "\n"
