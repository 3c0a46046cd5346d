"""Frozen reference states for training, computed once.

The erase and retain losses compare the trained model's hidden states ``h'`` with the frozen model's
``h`` on the same tokens. A training example's frozen states never change, so each is computed once,
the first time the example is drawn (adapters disabled, no grad, the forward stopped after the deepest
hooked layer), and looked up from then on: a reference forward runs only for examples never seen
before, and never more examples than the pools hold. Examples are computed in fixed chunks of
:data:`CHUNK` consecutive pool indices, so the batches (and hence the float rounding) do not depend
on the order of first use.

A pre-pass over the retain examples gives the centre ``μ_ℓ`` of the centred erase cosine
(:func:`mosr.losses.erase_loss`):
the frozen model's mean state of layer ℓ over the tokens of the retain examples, leaving out
attention-sink tokens (norm above ``sink_factor`` × the layer's median token norm). On SmolLM2 the
first token's state has norm ≈ 25,000 at layers 15 / 20 against a median of ≈ 200: left in, it adds
≈ 250 along one direction to the mean of 100-token examples, and centring on that mean would put a
shared direction back into every state instead of taking one out.

States are kept in memory as ``Tensor[layer seq d_model]`` per example, on the training device and in
the model's dtype (a bf16 run keeps bf16 states, half the memory of float32; the losses upcast to
float32 either way, as they do for an in-step reference forward): 64 + 64 + 64 examples of ≈100 tokens
at 2 layers of d_model 576 take ≈ 60 MB in float32 (the run's ``summary.json`` records the size). Right padding
and causal attention make a token's state independent of the other rows of its batch, so the cached
states equal those of an in-step reference forward up to float rounding (tested).

With ``reference_cache`` set (:class:`~mosr.train.refcache.RefCache`), states also persist on disk,
one file per example keyed by the model, the hooked layers and the example's token ids, and are shared
between runs: :meth:`ReferenceStates.fill` reads each missing example of a chunk from the disk first and
runs one forward over the chunk's examples still missing (all of them on an empty cache: the same batch
as without it), writing their states back. A run that finds a chunk partly cached by another run (whose
pool put other examples beside them) computes its remaining examples in a smaller batch, so its states
can differ from a run without the cache by float rounding; a cache filled by one run gives a second run
bit-identical states. The centre is not cached: it is recomputed from the states (cached or not) by
:func:`mean_state`, a cheap mean, so it depends on nothing but them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mosr.capture import StopForward, hooked
from mosr.encoding import EncodedExample, collate
from mosr.errors import MosrError
from mosr.io import load_tensors, save_tensors
from mosr.models import LM
from mosr.train.refcache import RefCache

CENTER_FILE = "center.safetensors"
#: tokens with a norm above this many times the layer's median token norm are attention sinks
SINK_FACTOR = 10.0


#: examples per reference forward: a pool is cut into fixed chunks of consecutive indices, and a chunk
#: is computed whole the first time one of its examples is drawn (the same batches whatever the order
#: of first use, so a resumed run gets bit-identical reference states)
CHUNK = 8


@dataclass
class ReferenceStates:
    """Frozen states ``kind -> {pool index -> Tensor[layer seq d_model]}`` at ``layers`` (filled lazily
    by :meth:`fill`, or all at once by :func:`compute_reference`), and the per-layer centre
    ``layer -> Tensor[d_model]``."""

    layers: list[int]
    states: dict[str, dict[int, Tensor]] = field(default_factory=dict)
    center: dict[int, Tensor] = field(default_factory=dict)
    forwards: int = 0  # reference forward passes run so far
    #: the on-disk cache shared between runs (``reference_cache``), or None
    cache: RefCache | None = None
    computed: int = 0  # examples run through the frozen model so far
    from_disk: int = 0  # examples read from ``cache`` so far

    def __post_init__(self) -> None:
        if self.cache is not None and self.cache.layers != list(self.layers):
            raise MosrError(f"reference cache of layers {self.cache.layers} used for layers {self.layers}")

    def has(self, items: Sequence[tuple[str, int]]) -> bool:
        return all(i in self.states.get(kind, {}) for kind, i in items)

    @torch.no_grad()
    def fill(
        self,
        lm: LM,
        pools: Mapping[str, Sequence[EncodedExample]],
        items: Sequence[tuple[str, int]],
        pad_id: int,
        device: torch.device | str | None = None,
    ) -> int:
        """Compute the missing ``(kind, pool index)`` items, a whole chunk at a time. ``lm`` must run as
        the frozen model (no adapter, or inside ``peft_model.disable_adapter()``). With a :attr:`cache`,
        the chunk's examples found on disk are read, and only the others computed (and written back).
        Returns the number of examples computed."""
        chunks = sorted({(kind, i // CHUNK) for kind, i in items if i not in self.states.get(kind, {})})
        done = 0
        for kind, c in chunks:
            idx = list(range(c * CHUNK, min((c + 1) * CHUNK, len(pools[kind]))))
            store = self.states.setdefault(kind, {})
            if self.cache is not None:
                idx = self._read_cached(pools[kind], idx, store, lm, device)
                if not idx:
                    continue
            h = _forward(lm, [pools[kind][i] for i in idx], self.layers, pad_id, device)
            for j, i in enumerate(idx):
                store[i] = h[j, :, : len(pools[kind][i])].clone()
                if self.cache is not None:
                    self.cache.save(pools[kind][i], store[i])
            done += len(idx)
            self.computed += len(idx)
            self.forwards += 1
        return done

    def _read_cached(
        self,
        pool: Sequence[EncodedExample],
        idx: list[int],
        store: dict[int, Tensor],
        lm: LM,
        device: torch.device | str | None,
    ) -> list[int]:
        """Put the disk cache's states of pool indices ``idx`` into ``store``; returns the indices missing."""
        assert self.cache is not None
        dev = torch.device(device) if device is not None else next(lm.model.parameters()).device
        missing = []
        for i in idx:
            h = store.get(i)
            if h is None:
                h = self.cache.load(pool[i], dev)
                if h is not None:
                    store[i] = h
                    self.from_disk += 1
            if h is None:
                missing.append(i)
        return missing

    def batch(self, items: Sequence[tuple[str, int]], width: int) -> Tensor:
        """Stack the states of ``(kind, pool index)`` items, right-padded with zeros to ``width``.

        Returns ``Tensor[batch layer seq d_model]`` (the layout of the in-step reference forward).
        """
        if not items:
            raise MosrError("ReferenceStates.batch: no items")
        rows = [self.states[kind][i] for kind, i in items]
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


def _forward(
    lm: LM, examples: Sequence[EncodedExample], layers: Sequence[int], pad_id: int, device: torch.device | str | None
) -> Tensor:
    """Block outputs of ``layers`` for one right-padded batch, stopped after the deepest layer.
    Returns ``Tensor[batch layer seq d_model]`` in the model's dtype."""
    device = torch.device(device) if device is not None else next(lm.model.parameters()).device
    enc = collate(list(examples), pad_id)
    inputs = {k: enc[k].to(device) for k in ("input_ids", "attention_mask", "position_ids")}
    was_training = lm.model.training
    lm.model.eval()
    try:
        with hooked(lm, layers, stop=True) as store:
            try:
                lm.model(**inputs, use_cache=False)
            except StopForward:
                pass
    finally:
        lm.model.train(was_training)
    return torch.stack([store[layer] for layer in layers], dim=1)


@torch.no_grad()
def compute_reference(
    lm: LM,
    pools: Mapping[str, Sequence[EncodedExample]],
    layers: Sequence[int],
    pad_id: int,
    device: torch.device | str | None = None,
    center_kinds: Sequence[str] = ("retain",),
    sink_factor: float = SINK_FACTOR,
    progress: bool = True,
    cache: RefCache | None = None,
) -> ReferenceStates:
    """Frozen block outputs of ``layers`` for every example of ``pools`` (``lm`` must carry no active
    adapter; read from and written to ``cache`` when given), and the mean state per layer over the tokens
    of the ``center_kinds`` pools, attention sinks (norm > ``sink_factor`` × the median token norm of the
    layer) left out."""
    layers = sorted(set(layers))
    if not layers:
        raise MosrError("compute_reference: no layers")
    ref = ReferenceStates(layers=list(layers), cache=cache)
    items = [(kind, i) for kind, pool in pools.items() for i in range(0, len(pool), CHUNK)]
    for item in tqdm(items, desc="reference states", disable=not progress, unit="chunk"):
        ref.fill(lm, pools, [item], pad_id, device)
    device = torch.device(device) if device is not None else next(lm.model.parameters()).device
    rows = {k: [ref.states[k][i] for i in range(len(pools[k]))] for k in center_kinds if k in pools}
    ref.center = mean_state(rows, layers, center_kinds, sink_factor, lm.d_model, device)
    return ref


def mean_state(
    states: Mapping[str, Sequence[Tensor]],
    layers: Sequence[int],
    kinds: Sequence[str],
    sink_factor: float,
    d_model: int,
    device: torch.device,
) -> dict[int, Tensor]:
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
    total = sum(t.numel() * t.element_size() for pool in ref.states.values() for t in pool.values())
    return math.ceil(total / 1e5) / 10
