"""The trade-off study: every method along one strength knob, evaluated the same way, compared at
matched safety. ``mosr study --config experiments/studies/study.yaml --out runs/study``.

The knob is the training step: one run per method saves its adapter at ``frontier_steps`` (and at the
end), so each method gives a curve of (mean harmful ASR, mean over-refusal) points from one run, and
every point is a real adapter. ``seed_methods`` are trained again at the other ``seeds`` (final step
only), which gives the seed spread at the operating point.

Stages (each skipped when its output exists, so an interrupted study resumes)::

    train/<method>-s<seed>/     mosr train runs (adapter/, adapter-step-<N>/ for the frontier seed)
    eval/<point>/               mosr eval runs; point = base or <method>-s<seed>@<step>
    repr/<method>.pt            per prompt: cos(h', h) at the target layers (last prompt token) and
                                the base probe's malicious probability, for base and repr_methods
    results.json                every point's per-set rates, bootstrap CIs, the comparisons
    verdicts.jsonl              per point and prompt: answered (1) or not (0), under the current judge
    summary.md, frontier.png    the tables and the trade-off figure (paper Fig. 2 style)

Rates: ASR = share of harmful prompts answered; over-refusal RR = share of benign / pseudo-harmful
prompts not answered (refusal or degenerate), both by :func:`mosr.judge.judge` re-applied to the saved
responses. Means are macro means over sets. CIs: percentile bootstrap over prompts (1000 draws, seeded),
paired across methods because every point is evaluated on the same sampled prompts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mosr.config import Config
from mosr.errors import ConfigError
from mosr.frontier import (Point, boot_rate, bootstrap_draws, matched_asr, matched_difference, seed_difference,
                           seed_spread, verdict)
from mosr.models import DEFAULT_MODEL

ASR_SETS = ("jbb-harmful", "advbench", "harmbench", "strongreject")
RR_SETS = ("xstest-safe", "orbench-hard", "jbb-benign")


@dataclass
class StudyPlan(Config):
    """One trade-off study. Method configs are ``mosr train`` YAML files; ``set`` applies to all."""

    name: str = "study"
    model: str = DEFAULT_MODEL
    #: method name -> train config (YAML path)
    methods: dict[str, str] = field(default_factory=lambda: {"rr": "experiments/rr.yaml",
                                                             "mosr": "experiments/mosr.yaml"})
    #: ``key=value`` overrides applied to every method's config
    set: list[str] = field(default_factory=list)
    #: training steps at which the frontier seed also saves an adapter (the final step is always a point)
    frontier_steps: list[int] = field(default_factory=lambda: [20, 25, 30, 35])
    #: methods whose seeds[0] run saves the frontier (empty = all methods; the others give one point)
    frontier_methods: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    #: methods trained at every seed (the others at seeds[0] only)
    seed_methods: list[str] = field(default_factory=lambda: ["rr", "mosr"])
    harmful: list[str] = field(default_factory=lambda: list(ASR_SETS))
    overrefusal: list[str] = field(default_factory=lambda: list(RR_SETS))
    n: int = 30
    n_per_set: dict[str, int] = field(default_factory=lambda: {"orbench-hard": 200})
    max_new_tokens: int = 40
    eval_seed: int = 0
    #: capability NLL on held-out Self-Instruct answers at every point
    nll: bool = True
    #: methods whose final adapter (seeds[0]) gets the representation stage, besides the base model
    repr_methods: list[str] = field(default_factory=lambda: ["rr", "mosr"])
    #: training sets for the base model's benign-vs-harmful probe (representation stage)
    probe_benign: str = "self-instruct-retain"
    probe_harmful: str = "rd-harmful-train"
    probe_n: int = 128
    #: the method every other is compared with at matched ASR
    reference: str = "rr"
    bootstrap: int = 1000
    data_dir: str | None = None
    dtype: str = "float32"
    device: str | None = None

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError("study: methods is empty")
        if not self.seeds:
            raise ConfigError("study: seeds is empty")
        stray = [m for m in [*self.seed_methods, *self.repr_methods, *self.frontier_methods] if m not in self.methods]
        if stray:
            raise ConfigError(f"study: {stray} are not in methods {sorted(self.methods)}")
        if self.reference not in self.methods:
            raise ConfigError(f"study: reference {self.reference!r} is not in methods {sorted(self.methods)}")
        if not self.harmful or not self.overrefusal:
            raise ConfigError("study: name at least one harmful and one over-refusal set")

    def eval_sets(self) -> list[str]:
        return [*self.harmful, *self.overrefusal, *(["self-instruct-heldout"] if self.nll else [])]


# ---------------------------------------------------------------------------------------------------------------
# stages


def point_name(method: str, seed: int, step: int) -> str:
    return f"{method}-s{seed}@{step}"


def train_stage(plan: StudyPlan, out: Path, progress: bool = True, run: bool = True) -> dict[str, dict[int, Path]]:
    """Train every (method, seed) run that is missing (``run=False``: only collect the finished ones,
    e.g. for an evaluation worker beside a training process); returns run -> step -> adapter directory."""
    from mosr.config import apply_overrides
    from mosr.train import TrainConfig, train

    adapters: dict[str, dict[int, Path]] = {}
    # every method at the first seed first, then the other seeds: an interrupted study has one point of
    # each method before it has any seed spread
    order = [(method, config, seed) for seed in plan.seeds for method, config in plan.methods.items()
             if seed == plan.seeds[0] or method in plan.seed_methods]
    for method, config, seed in order:
        folder = out / "train" / f"{method}-s{seed}"
        cfg = TrainConfig.load(config)
        extra = [f"seed={seed}", f"model={plan.model}"]
        if seed == plan.seeds[0] and method in (plan.frontier_methods or plan.methods):
            extra.append(f"save_adapters=[{','.join(str(s) for s in plan.frontier_steps)}]")
        cfg = TrainConfig.from_dict(apply_overrides(cfg.to_dict(), [*plan.set, *extra]))
        cfg.progress = progress
        if not (folder / "adapter" / "adapter_config.json").is_file():
            if not run:
                continue
            resume = (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
            train(cfg, folder, resume=resume)
        found = {cfg.steps: folder / "adapter"}
        found.update({s: folder / f"adapter-step-{s}" for s in cfg.save_adapters if s < cfg.steps})
        adapters[f"{method}-s{seed}"] = found
    return adapters


def eval_stage(plan: StudyPlan, out: Path, adapters: dict[str, dict[int, Path]], progress: bool = True) -> None:
    """Evaluate the base model and every adapter that has no finished evaluation."""
    from mosr.evaluate import EvalConfig, evaluate

    # the base model, then every run's final point, then the intermediate frontier points
    todo: list[tuple[str, Path | None]] = [("base", None)]
    todo += [(f"{run}@{max(steps)}", steps[max(steps)]) for run, steps in adapters.items()]
    todo += [(f"{run}@{step}", path) for run, steps in adapters.items() for step, path in sorted(steps.items())
             if step != max(steps)]
    for name, adapter in todo:
        folder = out / "eval" / name
        if (folder / "metrics.json").is_file() or not _claim(folder):
            continue
        cfg = EvalConfig(model=plan.model, adapter=None if adapter is None else str(adapter), sets=plan.eval_sets(),
                         n=plan.n, n_per_set=dict(plan.n_per_set), seed=plan.eval_seed,
                         max_new_tokens=plan.max_new_tokens, data_dir=plan.data_dir, dtype=plan.dtype,
                         device=plan.device)
        try:
            evaluate(plan.model, cfg, folder, progress=progress)
        finally:
            (folder / LOCK).unlink(missing_ok=True)


LOCK = ".eval.lock"


def _claim(folder: Path) -> bool:
    """Take the point for this process (another evaluation worker may be on it): an exclusive lock file
    holding our pid; a lock whose process is gone is taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
                os.kill(pid, 0)
                return False  # a live worker holds it
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its worker died
                continue
            except PermissionError:
                return False
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def load_point(folder: Path) -> Point:
    """A :class:`Point` from an eval folder, judged again with the current judge. Only the rows of the
    prompts its config samples count (a folder resumed with another ``n`` keeps its older rows)."""
    from mosr.evaluate import EvalConfig, load_sets
    from mosr.io import read_rows
    from mosr.judge import Verdict, judge
    from mosr.metrics import subset_name

    wanted = {(name, i) for name, ps in load_sets(EvalConfig.load(folder / "config.yaml")).items() for i in ps.ids}
    rows = [r for r in read_rows(folder / "responses.jsonl") if (r["set"], r["id"]) in wanted]
    labels: dict[str, set[str]] = {}
    for r in rows:
        labels.setdefault(r["set"], set()).add(r["label"])
    answered: dict[str, list[int]] = {}
    ids: dict[str, list[str]] = {}
    nll: list[float] = []
    for r in sorted(rows, key=lambda r: (r["set"], r["id"])):
        if r.get("nll") is not None:
            nll.append(float(r["nll"]))
            continue
        key = subset_name(r["set"], r["label"], labels[r["set"]])
        answered.setdefault(key, []).append(int(judge(r.get("response") or "", prompt=r.get("prompt"))
                                                is Verdict.COMPLIANCE))
        ids.setdefault(key, []).append(r["id"])
    name = folder.name
    method, seed, step = "base", None, 0
    if name != "base":
        run, step_s = name.rsplit("@", 1)
        method, seed_s = run.rsplit("-s", 1)
        seed, step = int(seed_s), int(step_s)
    return Point(name, method, seed, step, {k: np.array(v) for k, v in answered.items()}, ids,
                 float(np.mean(nll)) if nll else None)


# ---------------------------------------------------------------------------------------------------------------
# representation before / after


def repr_stage(plan: StudyPlan, out: Path, adapters: dict[str, dict[int, Path]], progress: bool = True) -> dict[str, Any]:
    """For the base model and each of ``repr_methods`` (final adapter, seeds[0]): the last-prompt-token
    states at the target layers on every evaluated prompt; from them

    - ``moved``: mean cos(h', h) per set (how far the defence moved each group's states; 1 = unmoved);
    - ``malicious``: share of each set that the base model's probe (logistic regression on
      ``probe_benign`` vs ``probe_harmful`` states, at the deepest target layer) reads as malicious;
    - ``predicts_refusal``: AUROC (DeLong CI) of ``1 - cos(h', h)`` for predicting that the defended
      model does not answer, on the pseudo-harmful / over-refusal sets.

    States are cached in ``repr/<name>.pt`` (a re-run reuses them)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from mosr.capture import capture
    from mosr.evaluate import load_set
    from mosr.io import write_json
    from mosr.models import load
    from mosr.probe import auroc_ci
    from mosr.train import TrainConfig

    folder = out / "repr"
    folder.mkdir(parents=True, exist_ok=True)
    base_pt = load_point(out / "eval" / "base")
    sets = {s: load_set(s, plan.data_dir, plan.n_per_set.get(s, plan.n), plan.eval_seed)
            for s in [*plan.harmful, *plan.overrefusal]}
    first = plan.repr_methods[0] if plan.repr_methods else plan.reference
    # the target layers of the (resolved) config the first method was trained with
    layers = TrainConfig.load(out / "train" / f"{first}-s{plan.seeds[0]}" / "config.yaml").target_layers or [-1]

    def states(name: str, adapter: Path | None) -> dict[str, Any]:
        path = folder / f"{name}.pt"
        if path.is_file():
            return torch.load(path, weights_only=False)
        lm = load(plan.model, dtype=plan.dtype, device=plan.device, adapter=adapter)
        got: dict[str, Any] = {}
        for s, ps in sets.items():
            order = sorted(range(len(ps)), key=lambda i: ps.ids[i])  # the order of Point.ids
            acts = capture(lm, [ps.prompts[i] for i in order], layers=layers, progress=False)
            got[s] = {"ids": [ps.ids[i] for i in order], "acts": acts}  # prompt layer d_model
        if name == "base":
            for role, s in (("benign", plan.probe_benign), ("harmful", plan.probe_harmful)):
                ps = load_set(s, plan.data_dir, plan.probe_n, plan.eval_seed)
                got[f"probe-{role}"] = {"ids": ps.ids, "acts": capture(lm, ps.prompts, layers=layers, progress=False)}
        tmp = path.with_suffix(".tmp")
        torch.save(got, tmp)
        os.replace(tmp, path)
        return got

    base = states("base", None)
    x = torch.cat([base["probe-benign"]["acts"][:, -1], base["probe-harmful"]["acts"][:, -1]]).numpy()
    y = np.r_[np.zeros(len(base["probe-benign"]["ids"])), np.ones(len(base["probe-harmful"]["ids"]))]
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(x, y)
    result: dict[str, Any] = {"layers": layers, "probe_layer": layers[-1], "models": {}}
    for name in ["base", *plan.repr_methods]:
        run = f"{name}-s{plan.seeds[0]}"
        if name != "base":
            step = max(adapters[run])
            folder_pt = out / "eval" / point_name(name, plan.seeds[0], step)
            got = states(name, adapters[run][step])
            pt = load_point(folder_pt) if (folder_pt / "metrics.json").is_file() else None  # not evaluated yet
        else:
            got, pt = base, base_pt
        entry: dict[str, Any] = {"moved": {}, "malicious": {}, "predicts_refusal": {}}
        for s in sets:
            h, h0 = got[s]["acts"], base[s]["acts"]
            cos = torch.nn.functional.cosine_similarity(h, h0, dim=-1).mean(dim=1).numpy()  # prompt
            entry["moved"][s] = round(float(cos.mean()), 4)
            entry["malicious"][s] = round(float(probe.predict(h[:, -1].numpy()).mean()), 4)
            if pt is not None and name != "base" and s in plan.overrefusal and got[s]["ids"] == pt.ids[s]:
                refused = 1 - pt.answered[s]
                auc, lo, hi = auroc_ci(1 - cos, refused.astype(bool))
                entry["predicts_refusal"][s] = {"auroc": round(auc, 3), "ci": [round(lo, 3), round(hi, 3)],
                                                "refused": int(refused.sum()), "n": int(len(refused))}
        result["models"][name] = entry
    write_json(folder / "summary.json", result)
    return result


# ---------------------------------------------------------------------------------------------------------------
# report


def report(plan: StudyPlan, out: Path, rep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Collect every evaluated point into ``results.json``, ``summary.md`` and ``frontier.png``."""
    from mosr.io import write_json, write_jsonl, write_text

    points = [load_point(p) for p in sorted((out / "eval").iterdir()) if (p / "responses.jsonl").is_file()]
    sets = [*plan.harmful, *plan.overrefusal]
    draws = bootstrap_draws(points, sets, plan.bootstrap, plan.eval_seed)
    s0 = plan.seeds[0]

    def row(p: Point) -> dict[str, Any]:
        a, r = boot_rate(p, plan.harmful, draws, False), boot_rate(p, plan.overrefusal, draws, True)
        return {"name": p.name, "method": p.method, "seed": p.seed, "step": p.step,
                "asr": round(p.asr(plan.harmful), 2), "asr_ci": [round(float(np.percentile(a, q)), 2) for q in (2.5, 97.5)],
                "rr": round(p.rr(plan.overrefusal), 2), "rr_ci": [round(float(np.percentile(r, q)), 2) for q in (2.5, 97.5)],
                "sets": {s: round(100 * float(p.answered[s].mean() if s in plan.harmful else 1 - p.answered[s].mean()), 1)
                         for s in sets},
                "n": {s: int(len(p.answered[s])) for s in sets}, "nll": None if p.nll is None else round(p.nll, 4)}
    rows = [row(p) for p in points]
    frontier = {m: sorted((p for p in points if p.method == m and p.seed == s0), key=lambda p: p.step)
                for m in plan.methods}
    final = {m: max((p.step for p in pts), default=0) for m, pts in frontier.items()}
    finals = {m: [p for p in points if p.method == m and p.step == final[m]] for m in plan.methods}
    res: dict[str, Any] = {"plan": plan.to_dict(), "points": rows,
                           "seeds": {m: seed_spread(ps, plan) for m, ps in finals.items() if ps}}
    ref = plan.reference
    res["matched"] = {}
    for m in plan.methods:
        if m == ref or not frontier.get(m) or not frontier.get(ref):
            continue
        at, why = matched_asr(frontier[m], frontier[ref], res["seeds"][ref]["asr_mean"], plan)
        d = matched_difference(frontier[m], frontier[ref], at, plan, draws)
        d["at_reason"] = why
        d["verdict"] = verdict(d)
        if len(finals[m]) > 1 and len(finals[ref]) > 1:
            d["final_step_over_seeds"] = seed_difference(finals[m], finals[ref], plan, draws)
        res["matched"][m] = d
    if rep is not None:
        res["representation"] = rep
    write_json(out / "results.json", res)
    write_jsonl(out / "verdicts.jsonl", [{"point": p.name, "set": s, "id": i, "answered": int(a)}
                                         for p in points for s in p.answered for i, a in zip(p.ids[s], p.answered[s])])
    write_text(out / "summary.md", summary_md(plan, res))
    plot_frontier(plan, rows, frontier, out / "frontier")
    return res


def _fmt_ci(v: float, ci: Sequence[float]) -> str:
    return f"{v:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def summary_md(plan: StudyPlan, res: dict[str, Any]) -> str:
    """The study's tables as markdown: operating points over seeds, comparisons at matched ASR, every
    point of every frontier, and the representation stage."""
    sets = [*plan.harmful, *plan.overrefusal]
    n = {s: res["points"][0]["n"][s] for s in sets} if res["points"] else {}
    lines = [f"# {plan.name}", "",
             f"Model {plan.model}. Judge: `mosr.judge` (string match + degenerate detector) on {plan.max_new_tokens} new "
             f"tokens. Prompts per set: {', '.join(f'{s} {k}' for s, k in n.items())} (eval seed {plan.eval_seed}). "
             f"ASR = mean over {', '.join(plan.harmful)}; over-refusal RR = mean over {', '.join(plan.overrefusal)}. "
             "CIs: 95% bootstrap over prompts.", "",
             "## Operating points (final step, mean ± sd over seeds)", "",
             "| method | seeds | ASR ↓ | over-refusal RR ↓ | capability NLL ↓ |", "|---|---|---|---|---|"]
    base = next((r for r in res["points"] if r["method"] == "base"), None)
    if base:
        lines.append(f"| base model | – | {base['asr']:.1f} | {base['rr']:.1f} | {base['nll'] or '–'} |")
    for m, s in res["seeds"].items():
        sd = (lambda v: "" if not np.isfinite(v) else f" ± {v:.1f}")
        lines.append(f"| {m} | {len(s['seeds'])} | {s['asr_mean']:.1f}{sd(s['asr_sd'])} | {s['rr_mean']:.1f}{sd(s['rr_sd'])} "
                     f"| {s['nll_mean'] if s['nll_mean'] is not None else '–'} |")
    lines += ["", f"## Over-refusal at matched ASR, against {plan.reference}", "",
              "Negative = less over-refusal than the reference at the same ASR (interpolated along each frontier).", "",
              "| method | at ASR | why this ASR | RR difference [95% CI] | verdict | final step over seeds: RR diff [CI], ASR diff [CI] |",
              "|---|---|---|---|---|---|"]
    for m, d in res["matched"].items():
        fs = d.get("final_step_over_seeds")
        extra = (f"{fs['rr_difference']:.1f} [{fs['rr_ci'][0]:.1f}, {fs['rr_ci'][1]:.1f}], "
                 f"{fs['asr_difference']:.1f} [{fs['asr_ci'][0]:.1f}, {fs['asr_ci'][1]:.1f}]") if fs else "–"
        lines.append(f"| {m} | {d['at_asr']:.1f} | {d['at_reason']} | {_fmt_ci(d['difference'], d['ci'])} | {d['verdict']} "
                     f"| {extra} |")
    lines += ["", "## Every point", "", "| point | step | ASR [CI] | RR [CI] | " + " | ".join(sets) + " | NLL |",
              "|" + "---|" * (len(sets) + 5)]
    for r in sorted(res["points"], key=lambda r: (r["method"] != "base", r["method"], r["seed"] or 0, r["step"])):
        lines.append(f"| {r['name']} | {r['step']} | {_fmt_ci(r['asr'], r['asr_ci'])} | {_fmt_ci(r['rr'], r['rr_ci'])} | "
                     + " | ".join(f"{r['sets'][s]:.1f}" for s in sets) + f" | {r['nll'] or '–'} |")
    rep = res.get("representation")
    if rep:
        rs = [*plan.harmful, *plan.overrefusal]
        lines += ["", f"## Representations (last prompt token, target layers {rep['layers']})", "",
                  "mean cos(h', h) against the base model (1 = not moved):", "",
                  "| model | " + " | ".join(rs) + " |", "|" + "---|" * (len(rs) + 1)]
        for name, e in rep["models"].items():
            lines.append(f"| {name} | " + " | ".join(f"{e['moved'][s]:.3f}" for s in rs) + " |")
        lines += ["", f"share read as malicious by the base model's probe (layer {rep['probe_layer']}):", "",
                  "| model | " + " | ".join(rs) + " |", "|" + "---|" * (len(rs) + 1)]
        for name, e in rep["models"].items():
            lines.append(f"| {name} | " + " | ".join(f"{100 * e['malicious'][s]:.1f}" for s in rs) + " |")
        lines += ["", "1 − cos(h', h) as a predictor of not answering (AUROC, DeLong 95% CI):", "",
                  "| model | set | AUROC | not answered / n |", "|---|---|---|---|"]
        for name, e in rep["models"].items():
            for s, v in e["predicts_refusal"].items():
                lines.append(f"| {name} | {s} | {v['auroc']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}] | {v['refused']} / {v['n']} |")
    return "\n".join(lines) + "\n"


def plot_frontier(plan: StudyPlan, rows: list[dict[str, Any]], frontier: dict[str, list[Point]], stem: Path) -> None:
    """Mean harmful ASR against mean over-refusal, one curve per method (points = training steps), CI
    bars, other seeds' final points hollow, the base model as a star."""
    import matplotlib.pyplot as plt

    from mosr.plots import STYLE, save_figure

    by = {r["name"]: r for r in rows}
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.4, 4.0))
        for m, pts in frontier.items():
            rs = [by[p.name] for p in pts]
            if not rs:
                continue
            x, y = [r["rr"] for r in rs], [r["asr"] for r in rs]
            xerr = np.array([[r["rr"] - r["rr_ci"][0], r["rr_ci"][1] - r["rr"]] for r in rs]).T
            yerr = np.array([[r["asr"] - r["asr_ci"][0], r["asr_ci"][1] - r["asr"]] for r in rs]).T
            line = ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", ms=4, lw=1.2, capsize=2, elinewidth=0.6, label=m)
            for r in rs:
                ax.annotate(str(r["step"]), (r["rr"], r["asr"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
            others = [r for r in rows if r["method"] == m and r["seed"] != plan.seeds[0]]
            ax.scatter([r["rr"] for r in others], [r["asr"] for r in others], s=22, facecolors="none",
                       edgecolors=line.lines[0].get_color(), zorder=3)
        base = next((r for r in rows if r["method"] == "base"), None)
        if base:
            ax.scatter([base["rr"]], [base["asr"]], marker="*", s=120, color="k", zorder=4, label="base model")
        ax.set(xlabel="over-refusal: mean RR on " + ", ".join(plan.overrefusal) + " (%) ↓",
               ylabel="mean ASR (%) ↓", xlim=(-2, 102), ylim=(-2, 102),
               title=f"{plan.name}: numbers = training step; hollow = other seeds")
        ax.legend(fontsize=7, loc="upper right")
        save_figure(fig, stem)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# the runner


def dry_run_plan(plan: StudyPlan) -> StudyPlan:
    """The same study on a tiny random model and the bundled demo prompts: every stage in seconds."""
    tiny = ["steps=2", "batch_size=4", "max_length=128", "target_layers=[1]", "lora.layers=null", "lora.rank=2",
            "data.harmful=demo-harmful", "data.n_harmful=8", "data.retain=demo-benign", "data.n_retain=8",
            "data.benign=demo-benign", "data.n_benign=8", "data.bank=demo-pseudo", "data.extra_retain=[]",
            "data.max_new_tokens=8", "data.completions_cache=null", "data.retain_answers=model", "weighting.k=2", "weighting.layers=null",
            "augment.k_max=2", "progress=false"]
    return StudyPlan.from_dict({**plan.to_dict(), "name": f"{plan.name} (dry run)", "model": "tiny:llama",
                                "set": [*plan.set, *tiny], "frontier_steps": [1], "seeds": plan.seeds[:2],
                                "harmful": ["demo-harmful"], "overrefusal": ["demo-pseudo", "demo-benign"],
                                "n": 6, "n_per_set": {}, "max_new_tokens": 4, "nll": False,
                                "probe_benign": "demo-benign", "probe_harmful": "demo-harmful", "probe_n": 8,
                                "bootstrap": 100})


def run_study(plan: StudyPlan, out: str | os.PathLike[str], stages: Sequence[str] = ("train", "eval", "repr", "report"),
              progress: bool = True) -> dict[str, Any]:
    """Run the study's stages into ``out`` (finished work is reused); returns ``results.json``'s content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan.save(out / "plan.yaml")
    adapters = train_stage(plan, out, progress, run="train" in stages)
    if "eval" in stages:
        eval_stage(plan, out, adapters, progress)
    rep = repr_stage(plan, out, adapters, progress) if "repr" in stages and plan.repr_methods else None
    return report(plan, out, rep) if "report" in stages else {}
