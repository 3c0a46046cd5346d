"""``mosr direction``: the refusal direction (Arditi et al. 2024) or the false-refusal vector (Wang et al.,
ICLR 2025) of a model, chosen and written to a folder.

* ``kind="refusal"``: candidates ``mean(harmful) − mean(harmless)`` at every post-instruction position
  and layer (:func:`~mosr.interventions.mean_diff`), chosen by refusal_direction's rules
  (:mod:`mosr.interventions.select`: ablation score on harmful prompts, addition score and KL on
  harmless ones).
* ``kind="false-refusal"``: candidates ``mean(pseudo-harmful) − mean(harmless)``, each partially
  orthogonalised against the refusal candidate of the same position and layer,
  ``v ← v − λ (v·r̂) r̂`` (:func:`~mosr.interventions.partial_orthogonalize`, ``lam``), chosen by the
  ablation score on pseudo-harmful prompts under the same KL and layer filters (no addition score).

Prompts: the training-side sets only (refusal_direction's ``harmful_train`` / ``harmless_train`` splits
and the OR-80K pseudo-harmful bank that training samples), never an evaluation set. Each set gives
``n_train + n_select`` seeded prompts, shuffled and split: the first ``n_train`` make the differences in
means, the other ``n_select`` score the candidates.

Cost: each scored candidate is 3 (refusal) or 2 (false-refusal) forward passes over ``n_select`` prompts.
Measured on Qwen2.5-0.5B-Instruct (24 layers, 18 scored after pruning) on 2 shared CPU cores: one pass
over 16 prompts ≈ 14 s, so a candidate ≈ 44 s at ``n_select=16``. The defaults (``n_select=8``, the last
post-instruction position only) make the refusal sweep 18 candidates, a few minutes there;
``positions=null`` sweeps every post-instruction token as refusal_direction does (5× the candidates on
ChatML). ``scores.json`` records the cost of every run (``cost``: seconds per stage, forward passes).

The folder: ``direction.safetensors`` / ``direction.json`` (:class:`~mosr.interventions.Direction`:
the chosen vector, where it came from, its scores, the baseline, the cost), ``scores.json`` (every
candidate's scores and why it was discarded), ``scores.png`` / ``.pdf`` and ``config.yaml``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mosr import datasets
from mosr.config import Config
from mosr.errors import ConfigError, DataError, MosrError
from mosr.interventions.directions import (
    KINDS,
    Candidates,
    Direction,
    mean_diff,
    partial_orthogonalize,
    post_instruction_positions,
)
from mosr.interventions.select import Scorer, choose, score_candidates
from mosr.io import write_json
from mosr.models import DEFAULT_MODEL, LM

SCORES_JSON = "scores.json"


@dataclass
class DirectionConfig(Config):
    """What ``mosr direction`` computes (saved as ``config.yaml`` in the folder; ``--set key=value``)."""

    kind: str = "refusal"  # refusal | false-refusal
    model: str = DEFAULT_MODEL
    adapter: str | None = None
    dtype: str = "float32"
    device: str | None = None
    data_dir: str | None = None
    harmful: str = "rd-harmful-train"
    harmless: str = "rd-harmless-train"
    pseudo_harmful: str = "orbench-80k-bank"  # false-refusal only: the training side's pseudo-harmful bank
    #: prompts per set for the differences in means, and (disjoint) for scoring each candidate
    n_train: int = 32
    n_select: int = 8
    #: candidate positions, offsets from the last prompt token (-1 = last); None = every post-instruction
    #: token, refusal_direction's sweep (5 positions with ChatML: 5x the scoring cost)
    positions: list[int] | None = field(default_factory=lambda: [-1])
    #: candidate layers (layer i = the stream after block i); None = all (the pruned last ones are never scored)
    layers: list[int] | None = None
    kl_threshold: float | None = 0.1
    #: keep only the harmful and pseudo-harmful prompts the model refuses and the harmless ones it answers
    #: (first-token refusal log-odds > 0 / ≤ 0), as refusal_direction's ``filter_train`` and Wang et al.'s
    #: ``filter_or`` do; each set is drawn from up to ``filter_pool`` × (n_train + n_select) prompts
    filter_prompts: bool = False
    filter_pool: int = 8
    induce_refusal_threshold: float | None = 0.0  # refusal only; None = no addition filter
    prune_layer_fraction: float = 0.2
    lam: float = 1.0  # false-refusal: λ of v − λ (v·r̂) r̂ (1 = orthogonal to the refusal candidate, 0 = raw)
    batch_size: int = 16
    system: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"DirectionConfig.kind must be one of {KINDS}, got {self.kind!r}")
        if self.n_train < 1 or self.n_select < 1 or self.batch_size < 1 or self.filter_pool < 1:
            raise ConfigError("DirectionConfig.n_train, n_select, batch_size and filter_pool must be ≥ 1")
        if not 0.0 <= self.prune_layer_fraction < 1.0:
            raise ConfigError(
                f"DirectionConfig.prune_layer_fraction must be in [0, 1), got {self.prune_layer_fraction}"
            )
        if self.positions is not None and (not self.positions or any(p >= 0 for p in self.positions)):
            raise ConfigError(
                "DirectionConfig.positions must be negative offsets from the last prompt token "
                f"(-1 = last) or null, got {self.positions}"
            )
        if self.layers is not None and not self.layers:
            raise ConfigError("DirectionConfig.layers is empty: list layers or use null (all)")
        for key in ("harmful", "harmless", "pseudo_harmful"):
            name = getattr(self, key)
            if any(name == e or name.startswith(e + "-") for e in datasets.EVAL_SETS):
                raise ConfigError(
                    f"DirectionConfig.{key}={name!r} is an evaluation set; directions are built from "
                    "training-side prompts only (e.g. rd-harmful-train, orbench-80k-bank)"
                )
            datasets.check_name(name)

    def sets(self) -> dict[str, str]:
        """Role -> data set name of the sets this kind reads."""
        roles = {"harmful": self.harmful, "harmless": self.harmless}
        return roles | ({"pseudo_harmful": self.pseudo_harmful} if self.kind == "false-refusal" else {})


def split_prompts(
    name: str, cfg: DirectionConfig, keep: Callable[[list[str]], list[bool]] | None = None
) -> tuple[list[str], list[str]]:
    """``n_train`` and ``n_select`` disjoint prompts of set ``name`` (a seeded sample, shuffled, then split).

    ``keep``: a filter over prompts (``cfg.filter_prompts``); the sample is then drawn from up to
    ``filter_pool`` times as many prompts, filtered, and cut to ``n_train + n_select``."""
    want = cfg.n_train + cfg.n_select
    pool = want * (cfg.filter_pool if keep is not None else 1)
    prompts = datasets.load(name, data_dir=cfg.data_dir, n=pool, seed=cfg.seed).prompts
    if keep is not None:
        drawn = len(prompts)
        prompts = [p for p, k in zip(prompts, keep(prompts)) if k][:want]
        if len(prompts) < want:
            raise DataError(
                f"data set {name!r}: {len(prompts)} of {drawn} prompts pass the refusal filter, fewer than "
                f"n_train + n_select = {want} (raise filter_pool or lower n_train / n_select)"
            )
    if len(prompts) < want:
        raise DataError(f"data set {name!r} has {len(prompts)} prompts, fewer than n_train + n_select = {want}")
    random.Random(cfg.seed).shuffle(prompts)
    return prompts[: cfg.n_train], prompts[cfg.n_train :]


def refusal_filter(lm: LM, refused: bool, cfg: DirectionConfig) -> Callable[[list[str]], list[bool]]:
    """A ``keep`` filter for :func:`split_prompts`: the prompts whose first-token refusal log-odds is
    above 0 (``refused``) or at most 0 (not refused)."""

    def keep(prompts: list[str]) -> list[bool]:
        from mosr.evaluation.judge import refusal_scores

        scores = refusal_scores(lm, prompts, batch_size=cfg.batch_size, system=cfg.system, progress=False)
        return [(v > 0) == refused for v in scores.tolist()]

    return keep


def find_direction(
    cfg: DirectionConfig, out: str | os.PathLike[str], lm: LM | None = None, progress: bool = True
) -> Direction:
    """Compute, score and choose a direction as ``cfg`` says; write the folder ``out``; return the choice.

    ``lm``: an already loaded model (``cfg.model`` then only names it). Raises a :class:`MosrError` after
    writing ``scores.json`` and the figure when every candidate is discarded."""
    out = Path(out)
    cost: dict[str, Any] = {}
    t0 = time.perf_counter()
    prompts = {role: split_prompts(name, cfg) for role, name in cfg.sets().items()}  # bad sets fail before the model
    if lm is None:
        from mosr.models import load

        lm = load(cfg.model, dtype=cfg.dtype, device=cfg.device, adapter=cfg.adapter)
    else:
        cfg.model = lm.name
    cfg.data_dir = datasets.resolved_data_dir(cfg.data_dir)
    cost["load_s"] = round(time.perf_counter() - t0, 2)
    if cfg.filter_prompts:
        t = time.perf_counter()
        prompts = {
            role: split_prompts(name, cfg, refusal_filter(lm, role != "harmless", cfg))
            for role, name in cfg.sets().items()
        }
        cost["filter_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    positions = cfg.positions or post_instruction_positions(lm, cfg.system)
    layers: Any = cfg.layers if cfg.layers is not None else "all"
    diff = {"positions": positions, "layers": layers, "batch_size": cfg.batch_size, "system": cfg.system}
    refusal = mean_diff(lm, prompts["harmful"][0], prompts["harmless"][0], **diff)
    info: dict[str, Any] = {}
    if cfg.kind == "refusal":
        candidates, target = refusal, prompts["harmful"][1]
    else:
        raw = mean_diff(lm, prompts["pseudo_harmful"][0], prompts["harmless"][0], **diff)
        candidates = Candidates(partial_orthogonalize(raw.vectors, refusal.vectors, cfg.lam), raw.positions, raw.layers)
        target = prompts["pseudo_harmful"][1]
        info["cos_with_refusal"] = {
            "raw": _cos(raw.vectors, refusal.vectors),
            "orthogonalised": _cos(candidates.vectors, refusal.vectors),
        }
    cost["mean_diff_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    scorer = Scorer(lm, target, prompts["harmless"][1], batch_size=cfg.batch_size, system=cfg.system)
    cost["baseline_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    rows = score_candidates(
        lm,
        candidates,
        scorer,
        addition=cfg.kind == "refusal",
        prune_layer_fraction=cfg.prune_layer_fraction,
        progress=progress,
    )
    scored = [r for r in rows if not r["pruned"]]
    cost |= {
        "scoring_s": round(time.perf_counter() - t, 2),
        "candidates_scored": len(scored),
        "candidates_pruned": len(rows) - len(scored),
        "forward_passes": scorer.passes,
        "prompts_per_pass_set": {"target": len(target), "harmless": len(prompts["harmless"][1])},
        "seconds_per_candidate": round(sum(r["seconds"] for r in scored) / max(len(scored), 1), 3),
        "device": str(lm.device),
        "threads": torch.get_num_threads(),
    }
    induce = cfg.induce_refusal_threshold if cfg.kind == "refusal" else None
    best = choose(rows, cfg.kl_threshold, induce)
    cost["total_s"] = round(time.perf_counter() - t0, 2)

    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    write_json(
        out / SCORES_JSON,
        {
            "kind": cfg.kind,
            "model": cfg.model,
            "n_layers": lm.n_layers,
            "baseline": scorer.baseline,
            "chosen": best,
            "cost": cost,
            "candidates": rows,
        },
    )
    from mosr.plots import plot_scores

    plot_scores(
        rows,
        scorer.baseline,
        best,
        out / "scores",
        kl_threshold=cfg.kl_threshold,
        title=f"{cfg.kind} direction candidates, {cfg.model}",
    )
    if best is None:
        raise MosrError(
            f"no {cfg.kind} candidate passed the filters (KL ≤ {cfg.kl_threshold}"
            + (f", addition score ≥ {induce}" if induce is not None else "")
            + f", not in the last {cfg.prune_layer_fraction:.0%} of layers): see {out / SCORES_JSON}; "
            "loosen them with --set kl_threshold=... / induce_refusal_threshold=null"
        )
    direction = Direction(
        candidates.at(best["position"], best["layer"]).clone(),
        best["layer"],
        best["position"],
        cfg.kind,
        cfg.model,
        info
        | {
            "scores": best,
            "baseline": scorer.baseline,
            "cost": cost,
            "lam": cfg.lam if cfg.kind == "false-refusal" else None,
            "config": cfg.to_dict(),
        },
        candidates,
    )
    direction.save(out)
    return direction


def _cos(a: torch.Tensor, b: torch.Tensor) -> list[list[float]]:
    """Cosine of matching rows (position layer d_model -> position layer), as nested lists for JSON."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).round(decimals=4).tolist()
