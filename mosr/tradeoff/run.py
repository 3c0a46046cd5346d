"""The trade-off study: every method along one strength knob, evaluated the same way, compared at
matched safety. ``mosr tradeoff --config experiments/studies/study.yaml --out runs/study``.

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
prompts not answered (refusal or degenerate), both by :func:`mosr.evaluation.judge.judge` re-applied to the saved
responses. Means are macro means over sets. CIs: percentile bootstrap over prompts (1000 draws, seeded),
paired across methods because every point is evaluated on the same sampled prompts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mosr.errors import FolderInUseError
from mosr.io import try_lock
from mosr.tradeoff.plan import StudyPlan, point_name

if TYPE_CHECKING:
    from mosr.evaluation.config import EvalConfig

# ---------------------------------------------------------------------------------------------------------------
# stages


def train_stage(plan: StudyPlan, out: Path, progress: bool = True, run: bool = True) -> dict[str, dict[int, Path]]:
    """Train every (method, seed) run that is missing (``run=False``: only collect the finished ones,
    e.g. for an evaluation worker beside a training process); returns run -> step -> adapter directory."""
    from mosr.config import apply_overrides
    from mosr.train import TrainConfig, train

    adapters: dict[str, dict[int, Path]] = {}
    # every method at the first seed first, then the other seeds: an interrupted study has one point of
    # each method before it has any seed spread
    order = [
        (method, config, seed)
        for seed in plan.seeds
        for method, config in plan.methods.items()
        if seed == plan.seeds[0] or method in plan.seed_methods
    ]
    for method, config, seed in order:
        folder = out / "train" / f"{method}-s{seed}"
        cfg = TrainConfig.load(config)
        extra = [f"seed={seed}", f"model={plan.model}"]
        if seed == plan.seeds[0] and method in (plan.frontier_methods or plan.methods):
            extra.append(f"save_adapters=[{','.join(str(s) for s in plan.frontier_steps)}]")
        cfg = TrainConfig.from_dict(
            apply_overrides(cfg.to_dict(), [*plan.set, *plan.method_set.get(method, []), *extra])
        )
        cfg.progress = progress
        if not (folder / "adapter" / "adapter_config.json").is_file():
            if not run:
                continue  # not asked to train
            lock = folder.parent / f".{folder.name}.lock"  # beside the run folder, which train() owns
            lock.parent.mkdir(parents=True, exist_ok=True)
            held = try_lock(lock)
            if held is None:
                continue  # another training worker is on it
            try:
                resume = (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
                train(cfg, folder, resume=resume)
            finally:
                lock.unlink(missing_ok=True)
                held.close()
        found = {cfg.steps: folder / "adapter"}
        found.update({s: folder / f"adapter-step-{s}" for s in cfg.save_adapters if s < cfg.steps})
        adapters[f"{method}-s{seed}"] = found
    return adapters


def eval_stage(plan: StudyPlan, out: Path, adapters: dict[str, dict[int, Path]], progress: bool = True) -> None:
    """Evaluate the base model and every adapter that has no finished evaluation."""
    from mosr.evaluation.config import EvalConfig
    from mosr.evaluation.run import evaluate

    # the base model, then every run's final point, then the intermediate frontier points
    todo: list[tuple[str, Path | None]] = [("base", None)]
    todo += [(f"{run}@{max(steps)}", steps[max(steps)]) for run, steps in adapters.items()]
    todo += [
        (f"{run}@{step}", path)
        for run, steps in adapters.items()
        for step, path in sorted(steps.items())
        if step != max(steps)
    ]
    for name, adapter in todo:
        folder = out / "eval" / name
        cfg = EvalConfig(
            model=plan.model,
            adapter=None if adapter is None else str(adapter),
            sets=plan.eval_sets(),
            n=plan.n,
            n_per_set=dict(plan.n_per_set),
            seed=plan.eval_seed,
            max_new_tokens=plan.max_new_tokens,
            data_dir=plan.data_dir,
            dtype=plan.dtype,
            device=plan.device,
        )
        if _finished(folder, cfg):
            continue
        try:
            evaluate(plan.model, cfg, folder, progress=progress)
        except FolderInUseError:
            continue  # another worker is evaluating this point


def _finished(folder: Path, cfg: EvalConfig) -> bool:
    """The point has metrics for the plan's sets and sizes. A point evaluated on fewer prompts (the plan's
    ``n`` / ``n_per_set`` raised since) is not: :func:`mosr.evaluation.run.evaluate` resumes it, generating only
    the new prompts (the seeded draw of a larger n contains the smaller one)."""
    from mosr.evaluation.config import EvalConfig

    if not (folder / "metrics.json").is_file():
        return False
    old = EvalConfig.load(folder / "config.yaml")
    return (old.sets, old.n, dict(old.n_per_set), old.nll_sets) == (cfg.sets, cfg.n, dict(cfg.n_per_set), cfg.nll_sets)


# ---------------------------------------------------------------------------------------------------------------
# representation before / after


def repr_stage(
    plan: StudyPlan, out: Path, adapters: dict[str, dict[int, Path]], progress: bool = True
) -> dict[str, Any] | None:
    """For the base model and each of ``repr_methods`` (final adapter, seeds[0]): the last-prompt-token
    states at the target layers on every evaluated prompt; from them

    - ``moved``: mean cos(h', h) per set (how far the defence moved each group's states; 1 = unmoved);
    - ``malicious``: share of each set that the base model's probe (:class:`~mosr.represent.probe.ProbeSet` on
      ``probe_benign`` vs ``probe_harmful`` states, at the deepest target layer) reads as malicious;
    - ``predicts_refusal``: AUROC (DeLong CI) of ``1 - cos(h', h)`` for predicting that the defended
      model does not answer, on the pseudo-harmful / over-refusal sets.

    - ``lens``: LogitLens at the last prompt token of every layer, per set: the mean refusal − compliance
      opener mass (:class:`mosr.represent.lens.LensResult`), for the layer-wise view of what each defence changed.

    States are cached in ``repr/<name>.pt`` and the lens in ``repr/<name>-lens.json`` (a re-run reuses them).
    Methods whose final adapter is not trained yet are left out (None when none is), so a worker beside a
    training process can do the models that are ready; a later run adds the others."""
    import torch

    from mosr.capture import capture
    from mosr.evaluation.config import load_set
    from mosr.evaluation.displacement import state_cosine
    from mosr.io import read_json, write_json
    from mosr.models import load
    from mosr.represent.lens import logit_lens
    from mosr.represent.probe import ProbeSet
    from mosr.stats import auroc_ci
    from mosr.tradeoff.report import load_point
    from mosr.train import TrainConfig

    folder = out / "repr"
    folder.mkdir(parents=True, exist_ok=True)
    base_pt = load_point(out / "eval" / "base") if (out / "eval" / "base" / "metrics.json").is_file() else None
    sets = {
        s: load_set(s, plan.data_dir, plan.n_per_set.get(s, plan.n), plan.eval_seed)
        for s in [*plan.harmful, *plan.overrefusal]
    }
    # methods not trained yet are left out (a worker beside a training process); a later run adds them
    names = [m for m in plan.repr_methods if f"{m}-s{plan.seeds[0]}" in adapters]
    if not names:
        return None
    # the target layers of the (resolved) config the first method was trained with
    layers = TrainConfig.load(out / "train" / f"{names[0]}-s{plan.seeds[0]}" / "config.yaml").target_layers or [-1]

    loaded: dict[str, Any] = {}  # one model load per name, shared by its states and its lens

    def model(name: str, adapter: Path | None) -> Any:
        if name not in loaded:
            loaded.clear()  # one model in memory at a time
            loaded[name] = load(plan.model, dtype=plan.dtype, device=plan.device, adapter=adapter)
        return loaded[name]

    def states(name: str, adapter: Path | None) -> dict[str, Any]:
        path = folder / f"{name}.pt"
        if path.is_file():
            return torch.load(path, weights_only=False)
        lm = model(name, adapter)
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

    def lens(name: str, adapter: Path | None) -> dict[str, Any]:
        path = folder / f"{name}-lens.json"
        if path.is_file():
            return read_json(path)
        lm = model(name, adapter)
        got = {}
        for s, ps in sets.items():
            res = logit_lens(lm, list(ps.prompts), layers="all", progress=False)
            got[s] = {
                "score": [round(float(v), 5) for v in res.mean_score()],
                "refusal": [round(float(v), 5) for v in res.refusal_mass.mean(0)],
                "compliance": [round(float(v), 5) for v in res.compliance_mass.mean(0)],
            }
        write_json(path, {"layers": res.layers, "sets": got})
        return read_json(path)

    base = states("base", None)
    # the base model's probe at the deepest target layer (mosr.represent.probe: standardised, C by cross-validation)
    x = torch.cat([base["probe-benign"]["acts"][:, -1:], base["probe-harmful"]["acts"][:, -1:]])
    y = [0] * len(base["probe-benign"]["ids"]) + [1] * len(base["probe-harmful"]["ids"])
    probe = ProbeSet.fit(x, y, layers=layers[-1:], progress=False)
    result: dict[str, Any] = {"layers": layers, "probe_layer": layers[-1], "models": {}, "lens": {}}
    for name in ["base", *names]:
        adapter: Path | None = None
        if name != "base":
            run = f"{name}-s{plan.seeds[0]}"
            step = max(adapters[run])
            adapter = adapters[run][step]
            folder_pt = out / "eval" / point_name(name, plan.seeds[0], step)
            got = states(name, adapter)
            pt = load_point(folder_pt) if (folder_pt / "metrics.json").is_file() else None  # not evaluated yet
        else:
            got, pt = base, base_pt
        if plan.lens:
            result["lens"][name] = lens(name, adapter)
        entry: dict[str, Any] = {"moved": {}, "malicious": {}, "predicts_refusal": {}}
        for s in sets:
            h, h0 = got[s]["acts"], base[s]["acts"]
            cos = state_cosine(h, h0)  # prompt; 1 - cos: the displacement score
            entry["moved"][s] = round(float(cos.mean()), 4)
            entry["malicious"][s] = round(float(probe.predict(h[:, -1], layer=layers[-1]).float().mean()), 4)
            if pt is not None and name != "base" and s in plan.overrefusal and got[s]["ids"] == pt.ids[s]:
                refused = 1 - pt.answered[s]
                auc, lo, hi = auroc_ci(1 - cos, refused.astype(bool))
                entry["predicts_refusal"][s] = {
                    "auroc": round(auc, 3),
                    "ci": [round(lo, 3), round(hi, 3)],
                    "refused": int(refused.sum()),
                    "n": int(len(refused)),
                }
        result["models"][name] = entry
    write_json(folder / "summary.json", result)
    return result


# ---------------------------------------------------------------------------------------------------------------
# the runner


def dry_run_plan(plan: StudyPlan) -> StudyPlan:
    """The same study on a tiny random model and the bundled demo prompts: every stage in seconds."""
    tiny = [
        "steps=2",
        "batch_size=4",
        "max_length=128",
        "target_layers=[1]",
        "lora.layers=null",
        "lora.rank=2",
        "data.harmful=demo-harmful",
        "data.n_harmful=8",
        "data.retain=demo-benign",
        "data.n_retain=8",
        "data.benign=demo-benign",
        "data.n_benign=8",
        "data.bank=demo-pseudo",
        "data.extra_retain=[]",
        "data.max_new_tokens=8",
        "data.completions_cache=null",
        "data.retain_answers=model",
        "weighting.k=2",
        "weighting.layers=null",
        "augment.k_max=2",
        "progress=false",
    ]
    return StudyPlan.from_dict(
        {
            **plan.to_dict(),
            "name": f"{plan.name} (dry run)",
            "model": "tiny:llama",
            "set": [*plan.set, *tiny],
            "frontier_steps": [1],
            "seeds": plan.seeds[:2],
            "harmful": ["demo-harmful"],
            "overrefusal": ["demo-pseudo", "demo-benign"],
            "n": 6,
            "n_per_set": {},
            "max_new_tokens": 4,
            "nll": False,
            "probe_benign": "demo-benign",
            "probe_harmful": "demo-harmful",
            "probe_n": 8,
            "bootstrap": 100,
        }
    )


def run_tradeoff(
    plan: StudyPlan,
    out: str | os.PathLike[str],
    stages: Sequence[str] = ("train", "eval", "repr", "report"),
    progress: bool = True,
) -> dict[str, Any]:
    """Run the study's stages into ``out`` (finished work is reused); returns ``results.json``'s content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan.save(out / "plan.yaml")
    adapters = train_stage(plan, out, progress, run="train" in stages)
    if "eval" in stages:
        eval_stage(plan, out, adapters, progress)
    rep = repr_stage(plan, out, adapters, progress) if "repr" in stages and plan.repr_methods else None
    if "report" not in stages:
        return {}
    from mosr.tradeoff.report import report

    return report(plan, out, rep)
