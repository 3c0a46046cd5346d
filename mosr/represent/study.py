"""The representation study (paper Fig. 3–5) as one function: :func:`run_representation_study`.

Steps, all from one capture of every prompt's last-position hidden state at every layer:

1. per-layer benign-vs-harmful probes (held-out accuracy / AUROC with 95% CIs, best layer);
2. the probes applied to pseudo-harmful sets (share classified malicious per layer, probabilities);
3. geometry: centroid distances and benign→harmful axis positions per layer, PCA at the chosen layer;
4. LogitLens on the captured states (refusal − compliance opener mass per layer and group, top tokens);
5. over-refusal risk: greedy responses to the pseudo-harmful prompts, refusal judged by phrase list,
   AUROC of the per-prompt boundary score for predicting a refusal;
6. the summary table and figures (:mod:`mosr.represent.report`).

Run folder layout::

    config.yaml  results.json  summary.md  prompts.jsonl  responses.jsonl  probes/  figures/*.png|pdf
    acts/        the captured last-position states of every layer (ActivationStore; reused on a re-run)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mosr.config import Config
from mosr.data import PromptSet, normalise_prompt
from mosr.errors import ConfigError, DataError
from mosr.io import append_jsonl, read_rows, write_json, write_jsonl, write_text
from mosr.models import DEFAULT_MODEL, LM
from mosr.represent.boundary import refused_vs_answered
from mosr.represent.geometry import centroid_geometry, pca_projection
from mosr.represent.lens import LensResult, decode_layers, logit_lens
from mosr.represent.probe import ProbeConfig, ProbeEvaluation, evaluate_probes
from mosr.represent.report import plot_representation_study, summary_table
from mosr.stats import auroc_ci, wilson

GROUPS = ("benign", "harmful", "pseudo_harmful")


@dataclass
class RepresentationConfig(Config):
    """One representation study: model, prompt sets per group, probe and lens settings."""

    name: str = "study"
    model: str = DEFAULT_MODEL
    adapter: str | None = None
    dtype: str = "float32"
    device: str | None = None
    data_dir: str | None = None
    #: set name -> number of prompts to sample (null = all); names as in ``mosr datasets`` or .jsonl paths
    benign: dict[str, int | None] = field(default_factory=lambda: {"demo-benign": None})
    harmful: dict[str, int | None] = field(default_factory=lambda: {"demo-harmful": None})
    pseudo_harmful: dict[str, int | None] = field(default_factory=lambda: {"demo-pseudo": None})
    seed: int = 0
    batch_size: int = 16
    #: captured states are kept in ``<out>/acts`` (an ActivationStore); a re-run resumes from finished shards
    shard_size: int = 128
    store_dtype: str = "float32"
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    #: layer for the boundary score, PCA and lens table; null = the probes' best layer
    layer: int | None = None
    lens_top_k: int = 5
    #: layers shown in the top-token table figure; null = every other layer plus the last
    lens_table_layers: list[int] | None = None
    #: optional [benign, harmful, over-refusal] example prompts for the table figure (default: chosen from the data)
    examples: list[str] = field(default_factory=list)
    #: generate responses for the pseudo-harmful prompts and test whether the boundary score predicts refusal
    risk: bool = True
    risk_max_new_tokens: int = 40
    figures: bool = True

    def __post_init__(self) -> None:
        for group in GROUPS:
            sets = getattr(self, group)
            if not isinstance(sets, dict) or not sets:
                raise ConfigError(
                    f"RepresentationConfig.{group}: give a mapping set-name -> n (null = all), got {sets!r}"
                )
            for name, n in sets.items():
                if n is not None and (not isinstance(n, int) or n < 1):
                    raise ConfigError(
                        f"RepresentationConfig.{group}.{name}: n must be a positive int or null, got {n!r}"
                    )
        if self.examples and len(self.examples) != 3:
            raise ConfigError(
                f"RepresentationConfig.examples: give 3 prompts (benign, harmful, over-refusal), "
                f"got {len(self.examples)}"
            )
        if self.lens_top_k < 1:
            raise ConfigError(f"RepresentationConfig.lens_top_k must be ≥ 1, got {self.lens_top_k}")


@dataclass
class RepresentationData:
    """All prompts of a study, deduplicated, with their set and group."""

    prompts: PromptSet
    set_of: list[str]
    group_of: list[str]
    n_requested: dict[str, int | None]
    dropped_duplicates: int

    def rows(self, group: str | None = None, set_name: str | None = None) -> list[int]:
        return [
            i
            for i, (g, s) in enumerate(zip(self.group_of, self.set_of))
            if (group is None or g == group) and (set_name is None or s == set_name)
        ]


def load_representation_data(config: RepresentationConfig) -> RepresentationData:
    """Load and sample every set; drop prompts already seen in an earlier set (normalised text)."""
    from mosr import datasets

    records, set_of, group_of, requested = [], [], [], {}
    seen: set[str] = set()
    dropped = 0
    for group in GROUPS:
        for name, n in getattr(config, group).items():
            ps = datasets.load(name, data_dir=config.data_dir, n=n, seed=config.seed)
            requested[name] = n
            for rec in ps:
                key = normalise_prompt(rec.prompt)
                if key in seen:
                    dropped += 1
                    continue
                seen.add(key)
                records.append(rec)
                set_of.append(name)
                group_of.append(group)
    data = RepresentationData(PromptSet(records, name=config.name), set_of, group_of, requested, dropped)
    for group in GROUPS:
        if not data.rows(group):
            raise DataError(f"study {config.name!r}: the {group} group is empty after loading and deduplication")
    return data


def _quantiles(x: np.ndarray) -> dict[str, float]:
    q = np.quantile(x, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]) if len(x) else [float("nan")] * 7
    return dict(zip(("min", "p10", "p25", "median", "p75", "p90", "max"), (float(v) for v in q)))


def _fraction_with_ci(pred: Tensor) -> tuple[list[float], list[tuple[float, float]]]:
    """pred: prompt layer (bool) -> per-layer share and Wilson CI."""
    k = pred.sum(0).tolist()
    n = pred.shape[0]
    return [v / n for v in k], [wilson(int(v), n) for v in k]


def _risk(
    lm: LM,
    config: RepresentationConfig,
    data: RepresentationData,
    out: Path,
    probs: Tensor,
    lens: LensResult,
    layer_slot: int,
    progress: bool,
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """Greedy responses to the pseudo-harmful prompts (resumable log), refusal judgement, AUROCs."""
    from mosr.evaluation.judge import is_refusal
    from mosr.generate import generate

    rows = data.rows("pseudo_harmful")
    log = out / "responses.jsonl"
    done: dict[str, str] = {r["id"]: r["response"] for r in read_rows(log, missing_ok=True, repair=True)}
    ids = data.prompts.ids
    todo = [i for i in rows if ids[i] not in done]
    t0 = time.perf_counter()
    if todo:

        def on_batch(batch_rows: list[int], texts: list[str]) -> None:
            append_jsonl(
                log,
                (
                    {"id": ids[todo[j]], "prompt": data.prompts[todo[j]].prompt, "response": t}
                    for j, t in zip(batch_rows, texts)
                ),
            )

        responses = generate(
            lm,
            [data.prompts[i].prompt for i in todo],
            max_new_tokens=config.risk_max_new_tokens,
            batch_size=config.batch_size,
            progress=progress,
            on_batch=on_batch,
        )
        done.update({ids[i]: r for i, r in zip(todo, responses)})
    seconds = time.perf_counter() - t0
    refused = np.array([is_refusal(done[ids[i]]) for i in rows], dtype=bool)
    per_prompt: dict[int, dict[str, Any]] = {
        i: {"response": done[ids[i]], "refused": bool(r)} for i, r in zip(rows, refused)
    }
    n_ref = int(refused.sum())

    def auc(score: np.ndarray) -> dict[str, Any]:
        a, lo, hi = auroc_ci(score, refused)
        return {"auroc": a, "ci": [lo, hi]}

    p = probs[rows].numpy()
    result: dict[str, Any] = {
        "n": len(rows),
        "n_refused": n_ref,
        "refusal_rate": n_ref / len(rows),
        "refusal_rate_ci": list(wilson(n_ref, len(rows))),
        "judge": "mosr.evaluation.judge.is_refusal (refusal phrase list)",
        "max_new_tokens": config.risk_max_new_tokens,
        "generation_seconds": round(seconds, 1),
        "generated_now": len(todo),
        "per_set": {},
        "boundary_layer": lens.layers[layer_slot],
        "boundary_score": auc(p[:, layer_slot]),
        "per_layer_auroc": [auroc_ci(p[:, j], refused)[0] for j in range(p.shape[1])],
        "lens_last_layer_score": auc(lens.score[rows, -1].numpy()),
        "refused_vs_answered": refused_vs_answered(
            p,
            refused,
            layers=list(lens.layers),
            threshold=config.probe.threshold,
            lens=lens.score[rows].numpy(),
            lens_harmful=lens.score[data.rows("harmful")].numpy(),
            lens_layers=list(lens.layers),
        ),
    }
    for name in dict.fromkeys(data.set_of[i] for i in rows):
        set_rows = data.rows(set_name=name)
        k = sum(per_prompt[i]["refused"] for i in set_rows)
        result["per_set"][name] = {
            "n": len(set_rows),
            "n_refused": k,
            "refusal_rate_ci": list(wilson(k, len(set_rows))),
        }
    if n_ref == 0 or n_ref == len(rows):
        result["note"] = (
            f"the model {'never' if n_ref == 0 else 'always'} refused these prompts, so the AUROC "
            "of any score for predicting refusal is undefined (nan)"
        )
    elif min(n_ref, len(rows) - n_ref) < 10:
        result["note"] = f"only {min(n_ref, len(rows) - n_ref)} prompts in the smaller class: the AUROC is very noisy"
    return result, per_prompt


def _choose_examples(
    data: RepresentationData, ev: ProbeEvaluation, probs: Tensor, slot: int, per_prompt: dict[int, dict[str, Any]]
) -> list[tuple[str, int]]:
    """(title, row) for one benign test prompt, one harmful test prompt and one over-refusal prompt:
    the refused pseudo-harmful prompt with the highest boundary probability, or — if the model
    refused none — the pseudo-harmful prompt with the highest probability."""
    bh = data.rows("benign") + data.rows("harmful")
    test_rows = [bh[i] for i in ev.test_index]
    benign = next(i for i in test_rows if data.group_of[i] == "benign")
    harmful = next(i for i in test_rows if data.group_of[i] == "harmful")
    pseudo = data.rows("pseudo_harmful")
    refused = [i for i in pseudo if per_prompt.get(i, {}).get("refused")]
    pool, title = (refused, "over-refusal (refused)") if refused else (pseudo, "pseudo-harmful (highest P(harmful))")
    over = max(pool, key=lambda i: float(probs[i, slot]))
    return [("benign", benign), ("harmful", harmful), (title, over)]


def run_representation_study(
    config: RepresentationConfig, out: str | os.PathLike[str], lm: LM | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run the whole study and write its run folder; returns the results dict (also ``results.json``).

    ``lm`` overrides ``config.model`` (e.g. a tiny test model).
    """
    from mosr import datasets
    from mosr.capture import resolve_layers
    from mosr.models import load
    from mosr.store import capture_to_store

    out = Path(out)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = load_representation_data(config)
    if lm is None:
        lm = load(config.model, dtype=config.dtype, device=config.device, adapter=config.adapter)
    else:
        config.model = lm.name
    timings["load"] = time.perf_counter() - t0
    if config.layer is not None:
        resolve_layers(lm, config.layer)  # LayerError before any heavy work
    if config.lens_table_layers:
        resolve_layers(lm, config.lens_table_layers)
    # the resolved config, written once the data and the model have loaded
    config.data_dir = datasets.resolved_data_dir(config.data_dir)
    config.device = str(lm.device)
    config.dtype = str(next(lm.model.parameters()).dtype).removeprefix("torch.")
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "config.yaml")

    t = time.perf_counter()
    store = capture_to_store(
        lm,
        data.prompts,
        out / "acts",
        layers="all",
        position="last",
        shard_size=config.shard_size,
        batch_size=config.batch_size,
        dtype=config.store_dtype,
        progress=progress,
    )
    acts = store.load().float()  # prompt layer d_model
    timings["capture"] = time.perf_counter() - t
    layers = list(range(lm.n_layers))

    # 1. probes on benign vs harmful (held-out split)
    t = time.perf_counter()
    bh = data.rows("benign") + data.rows("harmful")
    ev = evaluate_probes(
        acts[bh], [data.group_of[i] for i in bh], layers=layers, config=config.probe, progress=progress
    )
    timings["probes"] = time.perf_counter() - t
    probes = ev.probes
    probes.save(out / "probes")
    layer = probes.best_layer if config.layer is None else config.layer
    slot = probes.slot(layer)
    layer = layers[slot]
    probs = probes.proba(acts)  # prompt layer
    boundary = probes.boundary_score(acts, layer)

    # 2. probes on every group: benign/harmful test split + each pseudo-harmful set
    test_rows = [bh[i] for i in ev.test_index]
    eval_groups: dict[str, list[int]] = {
        "benign (test)": [i for i in test_rows if data.group_of[i] == "benign"],
        "harmful (test)": [i for i in test_rows if data.group_of[i] == "harmful"],
    }
    for name in config.pseudo_harmful:
        if data.rows(set_name=name):
            eval_groups[name] = data.rows(set_name=name)
    threshold = config.probe.threshold
    fraction, fraction_ci, dist = {}, {}, {}
    for name, rows in eval_groups.items():
        fraction[name], fraction_ci[name] = _fraction_with_ci(probs[rows] > threshold)
        dist[name] = _quantiles(probs[rows, slot].numpy())

    # 3. geometry
    geo_groups = {"benign": acts[data.rows("benign")], "harmful": acts[data.rows("harmful")]}
    geo_groups.update(
        {name: acts[data.rows(set_name=name)] for name in config.pseudo_harmful if data.rows(set_name=name)}
    )
    geometry = centroid_geometry(geo_groups, layers=layers)
    pca, coords = pca_projection({k: v[:, slot] for k, v in geo_groups.items()})

    # 4. LogitLens on the captured states (no second forward pass)
    t = time.perf_counter()
    lens = decode_layers(lm, acts, k=config.lens_top_k, layers=layers, prompts=data.prompts.prompts, progress=progress)
    timings["lens"] = time.perf_counter() - t
    lens_groups = {
        k: (data.rows("benign") if k == "benign" else data.rows("harmful") if k == "harmful" else data.rows(set_name=k))
        for k in geo_groups
    }
    lens_mean = {k: lens.mean_score(rows).tolist() for k, rows in lens_groups.items()}
    lens_ref = {k: lens.refusal_mass[rows].mean(0).tolist() for k, rows in lens_groups.items()}
    lens_comp = {k: lens.compliance_mass[rows].mean(0).tolist() for k, rows in lens_groups.items()}

    # 5. over-refusal risk
    risk: dict[str, Any] | None = None
    per_prompt: dict[int, dict[str, Any]] = {}
    if config.risk:
        t = time.perf_counter()
        risk, per_prompt = _risk(lm, config, data, out, probs, lens, slot, progress)
        timings["risk"] = time.perf_counter() - t

    # examples for the top-token table
    if config.examples:
        ex_lens = logit_lens(lm, config.examples, k=config.lens_top_k, batch_size=config.batch_size, progress=False)
        examples: list[dict[str, Any]] = [
            {"title": title, "prompt": p, "tokens": ex_lens.top_tokens[j], "score": ex_lens.score[j].tolist()}
            for j, (title, p) in enumerate(zip(("benign", "harmful", "over-refusal"), config.examples))
        ]
    else:
        examples = [
            {
                "title": title,
                "prompt": data.prompts[i].prompt,
                "tokens": lens.top_tokens[i],
                "score": lens.score[i].tolist(),
                "id": data.prompts[i].id,
                "prob": float(probs[i, slot]),
            }
            for title, i in _choose_examples(data, ev, probs, slot, per_prompt)
        ]

    # per-prompt table
    split = {bh[i]: "train" for i in ev.train_index} | {bh[i]: "test" for i in ev.test_index}
    write_jsonl(
        out / "prompts.jsonl",
        (
            {
                "id": r.id,
                "set": data.set_of[i],
                "group": data.group_of[i],
                "split": split.get(i, "score-only"),
                "prompt": r.prompt,
                "prob": float(boundary.prob[i]),
                "logit": float(boundary.logit[i]),
                "margin": float(boundary.margin[i]),
                "lens_score_last_layer": float(lens.score[i, -1]),
                "lens_top1_last_layer": lens.top_tokens[i][-1][0],
                **per_prompt.get(i, {}),
            }
            for i, r in enumerate(data.prompts)
        ),
    )

    n_sets = {s: len(data.rows(set_name=s)) for s in dict.fromkeys(data.set_of)}
    best = ev.metrics[slot]
    summary = {
        "chosen_layer": layer,
        "best_layer": probes.best_layer,
        "accuracy": best.accuracy,
        "accuracy_ci": list(best.accuracy_ci),
        "auroc": best.auroc,
        "auroc_ci": list(best.auroc_ci),
        "fraction_malicious_at_layer": {k: v[slot] for k, v in fraction.items()},
        "fraction_malicious_ci_at_layer": {k: list(v[slot]) for k, v in fraction_ci.items()},
        "axis_position_at_layer": {k: v[slot] for k, v in geometry["axis_mean"].items()},
        "lens_score_last_layer": {k: v[-1] for k, v in lens_mean.items()},
    }
    if risk is not None:
        summary["risk"] = {k: risk[k] for k in ("n", "n_refused", "boundary_score", "lens_last_layer_score")}
    timings["total"] = time.perf_counter() - t0
    results: dict[str, Any] = {
        "name": config.name,
        "model": lm.name,
        "model_info": {k: v for k, v in lm.info.items() if not k.startswith("_")},
        "n_layers": lm.n_layers,
        "d_model": lm.d_model,
        "seed": config.seed,
        "n_per_set": n_sets,
        "n_requested": data.n_requested,
        "dropped_duplicates": data.dropped_duplicates,
        "summary": summary,
        "probes": ev.to_dict() | {"fit_seconds": probes.meta.get("fit_seconds")},
        "fraction_malicious": {
            "threshold": threshold,
            "layers": layers,
            "n": {k: len(v) for k, v in eval_groups.items()},
            "fraction": fraction,
            "ci": fraction_ci,
            "prob_quantiles_at_layer": dist,
        },
        "geometry": geometry
        | {
            "pca": {
                "layer": layer,
                "explained": pca.explained.tolist(),
                "fit_on": ["benign", "harmful"],
                "coords": {k: v.float().round(decimals=4).tolist() for k, v in coords.items()},
            }
        },
        "lens": {
            "layers": layers,
            "refusal_minus_compliance": lens_mean,
            "refusal_mass": lens_ref,
            "compliance_mass": lens_comp,
            "n": {k: len(v) for k, v in lens_groups.items()},
            "refusal_tokens": [lm.tokenizer.decode([t]) for t in lens.refusal_token_ids],
            "compliance_tokens": [lm.tokenizer.decode([t]) for t in lens.compliance_token_ids],
            "examples": examples,
        },
        "risk": risk,
        "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
        "torch_threads": torch.get_num_threads(),
    }
    results["lens"]["table_layers"] = (
        resolve_layers(lm, config.lens_table_layers)
        if config.lens_table_layers
        else sorted(set(layers[::2]) | {layers[-1]})
    )
    write_json(out / "results.json", results)
    write_text(out / "summary.md", summary_table(results) + "\n")
    if config.figures:
        results["figures"] = [str(p.relative_to(out)) for p in plot_representation_study(out)]
    write_json(out / "results.json", results)
    return results
