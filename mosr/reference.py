"""Frozen reference states for training, computed once.

The erase and retain losses compare the trained model's hidden states ``h'`` with the frozen model's
``h`` on the same tokens. A training example's frozen states never change, so they are computed in
one pre-pass over every example before training (adapters not yet attached, no grad, the forward
stopped after the deepest hooked layer) and looked up per batch: no reference forward runs inside the
training step.

The pre-pass also gives the centre ``μ_ℓ`` of the centred erase cosine (:func:`mosr.losses.erase_loss`):
the frozen model's mean state of layer ℓ over the tokens of the retain examples, leaving out
attention-sink tokens (norm above ``sink_factor`` × the layer's median token norm). On SmolLM2 the
first token's state has norm ≈ 25,000 at layers 15 / 20 against a median of ≈ 200: left in, it adds
≈ 250 along one direction to the mean of 100-token examples, and centring on that mean would put a
shared direction back into every state instead of taking one out.

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
                      max_batch_tokens: int = 4096, sink_factor: float = 10.0,
                      progress: bool = True) -> ReferenceStates:
    """Frozen block outputs of ``layers`` for every example of ``pools`` (``lm`` must carry no active
    adapter), and the mean state per layer over the tokens of the ``center_kinds`` pools, attention
    sinks (norm > ``sink_factor`` × the median token norm of the layer) left out.

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
    finally:
        lm.model.train(was_training)
    done = {k: [t for t in v if t is not None] for k, v in states.items()}
    center = mean_state(done, layers, center_kinds, sink_factor, lm.d_model, device)
    assert all(len(done[k]) == len(pools[k]) for k in pools)
    return ReferenceStates(layers=list(layers), states=done, center=center)


def mean_state(states: Mapping[str, Sequence[Tensor]], layers: Sequence[int], kinds: Sequence[str],
               sink_factor: float, d_model: int, device: torch.device) -> dict[int, Tensor]:
    """``layer -> Tensor[d_model]``: mean over the tokens of ``kinds`` whose norm is at most
    ``sink_factor`` × the layer's median token norm (zeros when there is no such token)."""
    rows = [t for k in kinds for t in states.get(k, [])]  # each: layer seq d_model
    if not rows:
        return {layer: torch.zeros(d_model, device=device) for layer in layers}
    center = {}
    for li, layer in enumerate(layers):
        h = torch.cat([t[li] for t in rows]).double()  # tokens d_model
        norms = h.norm(dim=-1)
        keep = norms <= sink_factor * norms.median()
        center[layer] = h[keep].mean(0).float()
    return center


def megabytes(ref: ReferenceStates) -> float:
    """Memory held by the cached states, in MB."""
    total = sum(t.numel() * t.element_size() for pool in ref.states.values() for t in pool)
    return math.ceil(total / 1e5) / 10
