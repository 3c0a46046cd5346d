"""Micro-batches: how many examples of each kind (:func:`mix_counts`), which ones (:func:`sample_batch`,
stateless and seeded, so a resumed run draws the batches of an uninterrupted one) and the collated
tensors of one step (:func:`make_inputs` -> :class:`StepInputs`).

A micro-batch has two groups: ``hidden`` (erase + retain rows: losses on hidden states only, so the
forward may stop after the deepest hooked layer) and ``logits`` (refusal + sft rows: an NLL term, so the
full model runs). Each group is a dict of ``batch seq`` tensors from :func:`mosr.encoding.collate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mosr.encoding import KINDS, EncodedExample, collate
from mosr.errors import ConfigError
from mosr.train.data import TrainingData
from mosr.train.reference import ReferenceStates

#: kinds collated into the truncatable group (states only, the forward may stop at the deepest hooked layer)
HIDDEN_KINDS: tuple[str, ...] = ("erase", "retain", "boundary")

__all__ = ["StepInputs", "collate", "make_inputs", "mix_counts", "sample_batch"]


def mix_counts(mix: dict[str, float], batch_size: int) -> dict[str, int]:
    """Examples of each kind in a micro-batch (largest remainder; every kind with share > 0 gets ≥ 1)."""
    kinds = [k for k in KINDS if mix.get(k, 0) > 0]
    if batch_size < len(kinds):
        raise ConfigError(f"batch_size {batch_size} is smaller than the number of example kinds {kinds}")
    total = sum(mix[k] for k in kinds)
    raw = {k: mix[k] / total * batch_size for k in kinds}
    counts = {k: max(1, int(math.floor(raw[k]))) for k in kinds}
    while sum(counts.values()) < batch_size:
        k = max(kinds, key=lambda k: raw[k] - counts[k])
        counts[k] += 1
    while sum(counts.values()) > batch_size:
        k = max((k for k in kinds if counts[k] > 1), key=lambda k: counts[k] - raw[k])
        counts[k] -= 1
    return counts


def sample_batch(
    pools: Mapping[str, Sequence[Any]], counts: Mapping[str, int], seed: int, step: int, micro: int, rank: int = 0
) -> dict[str, list[int]]:
    """Pool indices per kind for one micro-batch. Stateless: a function of (seed, step, micro, rank),
    so a resumed run draws exactly the batches an uninterrupted run would, and every step, micro-batch
    and process draws its own. Without replacement when the pool holds ``counts[kind]`` examples or
    more, else with replacement."""
    rng = np.random.default_rng([seed, step, micro, rank])
    out = {}
    for kind in KINDS:
        c = counts.get(kind, 0)
        if c:
            n = len(pools[kind])
            out[kind] = rng.choice(n, size=c, replace=n < c).tolist()
    return out


@dataclass
class StepInputs:
    """Collated groups of one micro-batch and which rows hold which kind."""

    #: erase + retain rows: :func:`~mosr.encoding.collate` tensors (``batch seq``; ``weight``: ``batch``)
    hidden: dict[str, Tensor] | None
    #: refusal + sft rows, the same tensors
    logits: dict[str, Tensor] | None
    #: kind -> (group, row indices into that group)
    rows: dict[str, tuple[str, list[int]]]
    #: kind -> example ids, in row order
    ids: dict[str, list[str]]
    #: cached frozen states per group (``batch layer seq d_model``); empty without a cache
    refs: dict[str, Tensor] = field(default_factory=dict)


def make_inputs(
    data: TrainingData,
    picks: Mapping[str, Sequence[int]],
    pad_id: int,
    device: torch.device,
    reference: ReferenceStates | None = None,
) -> StepInputs:
    """Collate erase + retain examples into the truncatable group, refusal + sft into the full one
    (rows in :data:`~mosr.encoding.KINDS` order, right-padded with ``pad_id``); with ``reference``, also
    their cached frozen states (``batch layer seq d_model``, when every row of the group is cached)."""
    groups: dict[str, list[EncodedExample]] = {"hidden": [], "logits": []}
    keys: dict[str, list[tuple[str, int]]] = {"hidden": [], "logits": []}
    rows: dict[str, tuple[str, list[int]]] = {}
    ids: dict[str, list[str]] = {}
    for kind in KINDS:
        if kind not in picks:
            continue
        group = "hidden" if kind in HIDDEN_KINDS else "logits"
        start = len(groups[group])
        groups[group].extend(data.pools[kind][i] for i in picks[kind])
        keys[group].extend((kind, i) for i in picks[kind])
        rows[kind] = (group, list(range(start, len(groups[group]))))
        ids[kind] = [data.pools[kind][i].id for i in picks[kind]]
    batches = {
        g: ({k: v.to(device) for k, v in collate(enc, pad_id).items()} if enc else None) for g, enc in groups.items()
    }
    refs: dict[str, Tensor] = {}
    if reference is not None:
        for g, b in batches.items():
            if b is not None and reference.has(keys[g]):
                refs[g] = reference.batch(keys[g], b["input_ids"].shape[1]).to(device)
    return StepInputs(batches["hidden"], batches["logits"], rows, ids, refs)
