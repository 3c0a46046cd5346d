"""Frozen reference states for training, computed once.

The erase and retain losses compare the trained model's hidden states ``h'`` with the frozen model's
``h`` on the same tokens. A training example's frozen states never change, so they are computed in
one pre-pass over every example before training (adapters not yet attached, no grad, the forward
stopped after the deepest hooked layer) and looked up per batch: no reference forward runs inside the
training step.

The pre-pass also gives the centre ``μ_ℓ`` of the centred erase cosine (:func:`mosr.losses.erase_loss`):
the frozen model's mean state of layer ℓ over every token of the retain examples.

States are kept in memory as float32 ``Tensor[layer seq d_model]`` per example, on the training
device: 64 + 64 + 64 examples of ≈100 tokens at 2 layers of d_model 576 take ≈ 60 MB. Right padding
and causal attention make a token's state independent of the other rows of its batch, so the cached
states equal those of an in-step reference forward up to float rounding (tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mosr.capture import StopForward, hooked
from mosr.errors import MosrError
from mosr.io import load_tensors, save_tensors
from mosr.models import LM
from mosr.traindata import EncodedExample, collate

CENTER_FILE = "center.safetensors"


@dataclass
class ReferenceStates:
    """Per-kind frozen states ``kind -> [Tensor[layer seq d_model]]`` (one per pool example, in pool
    order) at ``layers``, and the per-layer centre ``layer -> Tensor[d_model]``."""

    layers: list[int]
    states: dict[str, list[Tensor]]
    center: dict[int, Tensor]

    def batch(self, items: Sequence[tuple[str, int]], width: int) -> Tensor:
        """Stack the states of ``(kind, pool index)`` items, right-padded with zeros to ``width``.

        Returns ``Tensor[batch layer seq d_model]`` (the layout of the in-step reference forward).
        """
        rows = [self.states[kind][i] for kind, i in items]
        if not rows:
            raise MosrError("ReferenceStates.batch: no items")
        n_layers, _, d = rows[0].shape
        out = rows[0].new_zeros((len(rows), n_layers, width, d))
        for j, h in enumerate(rows):
            if h.shape[1] > width:
                raise MosrError(f"cached reference states ({h.shape[1]} tokens) longer than the batch ({width})")
            out[j, :, : h.shape[1]] = h
        return out

    def save_center(self, folder: Path) -> Path:
        return save_tensors(folder / CENTER_FILE, {str(k): v.cpu() for k, v in self.center.items()})


def load_center(folder: Path) -> dict[int, Tensor] | None:
    """The centre saved by :meth:`ReferenceStates.save_center`, or None."""
    path = folder / CENTER_FILE
    if not path.is_file():
        return None
    return {int(k): v for k, v in load_tensors(path).items()}


@torch.no_grad()
def compute_reference(lm: LM, pools: Mapping[str, Sequence[EncodedExample]], layers: Sequence[int], pad_id: int,
                      device: torch.device | str | None = None, center_kinds: Sequence[str] = ("retain",),
                      max_batch_tokens: int = 4096, progress: bool = True) -> ReferenceStates:
    """Frozen block outputs of ``layers`` for every example of ``pools`` (``lm`` must carry no active
    adapter), and the mean state per layer over every token of the ``center_kinds`` pools.

    Examples are sorted by length and batched up to ``max_batch_tokens`` padded tokens.
    """
    layers = sorted(set(layers))
    if not layers:
        raise MosrError("compute_reference: no layers")
    device = torch.device(device) if device is not None else next(lm.model.parameters()).device
    items = [(kind, i, len(e)) for kind, pool in pools.items() for i, e in enumerate(pool)]
    items.sort(key=lambda x: -x[2])
    batches: list[list[tuple[str, int, int]]] = []
    for it in items:
        if batches and (len(batches[-1]) + 1) * batches[-1][0][2] <= max_batch_tokens:
            batches[-1].append(it)
        else:
            batches.append([it])
    states: dict[str, list[Tensor | None]] = {k: [None] * len(p) for k, p in pools.items()}
    sums = {layer: torch.zeros(lm.d_model, dtype=torch.float64, device=device) for layer in layers}
    count = 0
    was_training = lm.model.training
    lm.model.eval()
    try:
        for group in tqdm(batches, desc="reference states", disable=not progress, unit="batch"):
            enc = collate([pools[k][i] for k, i, _ in group], pad_id)
            inputs = {k: enc[k].to(device) for k in ("input_ids", "attention_mask", "position_ids")}
            with hooked(lm, layers, stop=True) as store:
                try:
                    lm.model(**inputs, use_cache=False)
                except StopForward:
                    pass
            h = torch.stack([store[layer].float() for layer in layers], dim=1)  # batch layer seq d_model
            for j, (kind, i, n) in enumerate(group):
                states[kind][i] = h[j, :, :n].clone()
                if kind in center_kinds:
                    for li, layer in enumerate(layers):
                        sums[layer] += h[j, li, :n].double().sum(0)
                    count += n
    finally:
        lm.model.train(was_training)
    if count == 0:
        center = {layer: torch.zeros(lm.d_model, device=device) for layer in layers}
    else:
        center = {layer: (s / count).float() for layer, s in sums.items()}
    done = {k: [t for t in v if t is not None] for k, v in states.items()}
    assert all(len(done[k]) == len(pools[k]) for k in pools)
    return ReferenceStates(layers=list(layers), states=done, center=center)


def megabytes(ref: ReferenceStates) -> float:
    """Memory held by the cached states, in MB."""
    total = sum(t.numel() * t.element_size() for pool in ref.states.values() for t in pool)
    return math.ceil(total / 1e5) / 10
