"""Choosing a direction among the candidates, by refusal_direction's rules (``select_direction``).

For every candidate ``v`` (one per post-instruction position and layer, :func:`mean_diff`):

* **ablation score**: mean refusal log-odds (:func:`mosr.generate.refusal_log_odds` over
  ``lm.refusal_token_ids``, at the first response position) on the *target* prompts with ``v`` ablated
  from every block (:func:`~mosr.interventions.ablate`): harmful prompts for the refusal direction,
  pseudo-harmful ones for the false-refusal vector. Lower is better: the model stops refusing.
* **KL**: mean ``KL(p_base ‖ p_ablated)`` of the next-token distribution at the same position on
  harmless prompts: what the ablation costs where nothing should change.
* **addition score** (refusal direction only): mean refusal log-odds on harmless prompts with ``v``
  added (α = 1, all positions) at its own layer (:func:`~mosr.interventions.steer`): a refusal
  direction must be able to induce refusal.

A candidate is discarded when a score is NaN, its layer lies in the last ``prune_layer_fraction`` of
the model, KL > ``kl_threshold`` or (refusal direction) its addition score < ``induce_refusal_threshold``;
the one with the lowest ablation score among the rest is chosen. refusal_direction discards
``resid_pre`` layer ``l ≥ int(n·(1 − 0.2))``; that is this package's layer ``l − 1`` (the stream after
block ``l − 1``), so layer ``i`` is discarded when ``i + 1 ≥ int(n·(1 − fraction))``. Pruned layers are
not scored at all (they could not be chosen), which saves that fraction of the cost.

Cost: every scored candidate runs 2 (false-refusal) or 3 (refusal) forward passes over ``n_select``
prompts, with the logits of the last position only. :func:`score_candidates` records the forward passes
and the seconds spent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mosr.batching import Batch, plan_batches
from mosr.errors import MosrError
from mosr.generate import refusal_log_odds
from mosr.interventions.ablate import ablate
from mosr.interventions.directions import Candidates
from mosr.interventions.steer import steer
from mosr.models import LM, accepts_logits_to_keep
from mosr.types import Float


def pruned(layer: int, n_layers: int, fraction: float) -> bool:
    """Whether ``layer`` is in the last ``fraction`` of the model (refusal_direction's rule, see above)."""
    return fraction > 0 and layer + 1 >= int(n_layers * (1.0 - fraction))


def last_position(lm: LM, batches: Sequence[Batch]) -> list[Float[Tensor, "batch vocab"]]:
    """Logits of the last prompt position of each batch (one forward per batch, ``logits_to_keep=1``
    where the model takes it), float32 on the model's device, in batch order."""
    extra = {"logits_to_keep": 1} if accepts_logits_to_keep(lm.model) else {}
    with torch.inference_mode():
        return [
            lm.model(**b.to(lm.device).model_inputs(), use_cache=False, **extra).logits[:, -1].float() for b in batches
        ]


class Scorer:
    """Refusal log-odds and KL of the next-token distribution over fixed prompt batches (tokenized once)."""

    def __init__(
        self, lm: LM, target: list[str], harmless: list[str], batch_size: int = 16, system: str | None = None
    ) -> None:
        self.lm = lm
        self.target = plan_batches(lm, target, batch_size=batch_size, system=system)
        self.harmless = plan_batches(lm, harmless, batch_size=batch_size, system=system)
        self.refusal_ids = lm.refusal_token_ids
        if not self.refusal_ids:
            raise MosrError(f"{lm.name}: no refusal opener tokens found in the tokenizer")
        self.passes = 0
        self.base_logp = [torch.log_softmax(x, -1) for x in self.forward(self.harmless)]
        self.baseline = {
            "ablation_score": self.refusal(self.target),
            "addition_score": self.refusal(self.harmless),
            "kl": 0.0,
        }

    def forward(self, batches: list[Batch]) -> list[Tensor]:
        self.passes += len(batches)
        return last_position(self.lm, batches)

    def refusal(self, batches: list[Batch]) -> float:
        """Mean refusal log-odds over the prompts of ``batches``."""
        scores = torch.cat([refusal_log_odds(x, self.refusal_ids) for x in self.forward(batches)])
        return float(scores.double().mean())

    def kl(self) -> float:
        """Mean ``KL(p_base ‖ p)`` over the harmless prompts, under whatever intervention is active."""
        total, n = 0.0, 0
        for base, x in zip(self.base_logp, self.forward(self.harmless)):
            logp = torch.log_softmax(x, -1)
            total += float((base.exp() * (base - logp)).sum(-1).double().sum())
            n += x.shape[0]
        return total / n


def score_candidates(
    lm: LM,
    candidates: Candidates,
    scorer: Scorer,
    addition: bool = True,
    prune_layer_fraction: float = 0.2,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Ablation score, KL and (``addition``) addition score of every candidate not in a pruned layer.

    Returns one dict per candidate (position-major): ``position``, ``layer``, ``pruned`` and, when
    scored, ``ablation_score``, ``kl``, ``addition_score`` (None without ``addition``), ``seconds``."""
    rows: list[dict[str, Any]] = []
    todo = [(p, layer) for p in candidates.positions for layer in candidates.layers]
    bar = tqdm(
        total=sum(not pruned(la, lm.n_layers, prune_layer_fraction) for _, la in todo),
        desc="candidates",
        unit="cand",
        disable=not progress,
    )
    for position, layer in todo:
        row: dict[str, Any] = {
            "position": position,
            "layer": layer,
            "pruned": pruned(layer, lm.n_layers, prune_layer_fraction),
        }
        rows.append(row)
        if row["pruned"]:
            continue
        t0 = time.perf_counter()
        vector = candidates.at(position, layer)
        if not torch.isfinite(vector).all() or vector.norm() == 0:
            row |= {"ablation_score": math.nan, "kl": math.nan, "addition_score": math.nan if addition else None}
        else:
            with ablate(lm, vector):
                row["ablation_score"] = scorer.refusal(scorer.target)
                row["kl"] = scorer.kl()
            row["addition_score"] = None
            if addition:
                with steer(lm, vector, layers=[layer], alpha=1.0):
                    row["addition_score"] = scorer.refusal(scorer.harmless)
        row["seconds"] = round(time.perf_counter() - t0, 3)
        bar.update(1)
    bar.close()
    return rows


def filter_reason(
    row: dict[str, Any], kl_threshold: float | None, induce_refusal_threshold: float | None
) -> str | None:
    """Why refusal_direction's ``filter_fn`` would discard a scored candidate, or None if it passes."""
    if row["pruned"]:
        return "pruned layer"
    values = [row["ablation_score"], row["kl"]] + ([row["addition_score"]] if row["addition_score"] is not None else [])
    if any(math.isnan(v) for v in values):
        return "nan score"
    if kl_threshold is not None and row["kl"] > kl_threshold:
        return f"kl > {kl_threshold}"
    if (
        induce_refusal_threshold is not None
        and row["addition_score"] is not None
        and row["addition_score"] < induce_refusal_threshold
    ):
        return f"addition score < {induce_refusal_threshold}"
    return None


def choose(
    rows: list[dict[str, Any]], kl_threshold: float | None = 0.1, induce_refusal_threshold: float | None = 0.0
) -> dict[str, Any] | None:
    """Mark each row's ``passed`` / ``discarded`` and return the passing row with the lowest ablation score
    (ties: the earlier position, then the lower layer), or None when every candidate was discarded."""
    best: dict[str, Any] | None = None
    for row in rows:
        reason = filter_reason(row, kl_threshold, induce_refusal_threshold)
        row["passed"], row["discarded"] = reason is None, reason
        if reason is None and (best is None or row["ablation_score"] < best["ablation_score"]):
            best = row
    return best
