"""Per-layer hidden-state capture.

``capture(lm, prompts, layers="all", position="last") -> Tensor[prompt layer d_model]``

Prompts are chat-formatted (assistant header appended), tokenized once, sorted by length and
batched; padding is exact under left and right padding because ``position_ids`` are derived from the
attention mask. Forward hooks on the decoder blocks reduce each block output to the requested
positions as soon as it is produced, and the forward pass stops after the deepest requested block,
so capture never pays for the final norm or the unembedding. The selected states stay on the model's
device until the batch is done and reach the host in one copy per batch (no per-layer round trip).

Layer ``i`` is the residual stream after decoder block ``i`` (see :mod:`mosr.models`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, Union

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mosr.batching import Batch, make_batches
from mosr.data import PromptSet
from mosr.errors import LayerError, MosrError
from mosr.models import LM

Position = Union[Literal["last", "mean", "all"], int]
Layers = Union[Literal["all"], int, Sequence[int]]
POSITION_KEYWORDS = ("last", "mean", "all")
#: one block's output: the residual stream after it, for every token of a batch
States = Float[Tensor, "batch seq d_model"]
#: what :func:`capture` returns for ``last`` / ``mean`` / an int position
Acts = Float[Tensor, "prompt layer d_model"]


def resolve_layers(lm: LM, layers: Layers) -> list[int]:
    """Normalise a layer spec (``"all"``, an int or a list; negatives count from the end) to sorted ids."""
    n = lm.n_layers
    if isinstance(layers, str):
        if layers != "all":
            raise LayerError(f"unknown layer spec {layers!r}: use 'all', an int or a list of ints")
        return list(range(n))
    items = [layers] if isinstance(layers, int) else list(layers)
    if not items:
        raise LayerError("empty layer list")
    out = []
    for layer in items:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise LayerError(f"layer {layer!r} is not an int")
        if not -n <= layer < n:
            raise LayerError(f"layer {layer} out of range: {lm.name} has {n} layers (valid: 0..{n - 1} or -{n}..-1)")
        out.append(layer % n)
    return sorted(set(out))


def default_target_layers(n_layers: int) -> list[int]:
    """Two layers at ≈1/3 and ≈2/3 depth: ``round(n/3)``, ``round(2n/3)`` (10 and 20 of 30), clipped to
    ``0..n-1`` and deduplicated (the erasure methods' default target layers, and the layers of the
    overlap-aware weights and of the displacement score)."""
    if n_layers < 1:
        raise MosrError(f"n_layers must be ≥ 1, got {n_layers}")
    return sorted({min(max(round(n_layers * f), 0), n_layers - 1) for f in (1 / 3, 2 / 3)})


def check_position(position: Position) -> None:
    if isinstance(position, bool) or not (isinstance(position, int) or position in POSITION_KEYWORDS):
        raise MosrError(
            f"unknown position {position!r}: use one of {POSITION_KEYWORDS} or an int "
            "(negative counts back from the last prompt token, -1 = last)"
        )


class StopForward(Exception):
    """Raised by a hook to end the forward pass once every needed layer has run."""


def block_output(output: States | tuple[Tensor, ...]) -> States:
    """The hidden state of a block's output (a tensor in transformers ≥5, a tuple before)."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output: States | tuple[Tensor, ...], h: States) -> States | tuple[Tensor, ...]:
    """``output`` (a module's tensor or tuple output) with its hidden state replaced by ``h``: the
    inverse of :func:`block_output`, for hooks that change what a module returns."""
    return (h, *output[1:]) if isinstance(output, tuple) else h


@contextmanager
def hooked(
    lm: LM,
    layers: Sequence[int],
    fn: Callable[[int, States], States | None] | None = None,
    stop: bool = False,
    prepend: bool = False,
) -> Iterator[dict[int, States]]:
    """Context manager: record block outputs of ``layers`` during forward passes.

    Yields a dict ``layer -> Tensor[batch seq d_model]`` filled by each forward (kept with their
    autograd graph, so training can use them). With ``fn`` the outputs are passed to ``fn(layer, h)``
    instead of being stored; a tensor that ``fn`` returns replaces the block's output (how
    :func:`mosr.interventions.steer` edits the residual stream), None leaves it as it is. With
    ``stop=True`` the forward ends after the deepest layer (catch :class:`StopForward`, or use
    :func:`run`). ``prepend=True`` runs these hooks before the block's other forward hooks (an
    intervention entered inside a capture still changes what the capture sees).
    """
    store: dict[int, Tensor] = {}
    deepest = max(layers)
    handles = []

    def make(layer: int) -> Callable[..., States | tuple[Tensor, ...] | None]:
        def hook(
            _module: torch.nn.Module, _inputs: object, output: Tensor | tuple[Tensor, ...]
        ) -> States | tuple[Tensor, ...] | None:
            h = block_output(output)
            new = None
            if fn is None:
                store[layer] = h
            else:
                new = fn(layer, h)
            if stop and layer == deepest:
                raise StopForward
            return None if new is None else with_hidden(output, new)

        return hook

    for layer in layers:
        handles.append(lm.blocks[layer].register_forward_hook(make(layer), prepend=prepend))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def run(lm: LM, batch: Batch, **kwargs: object) -> object | None:
    """Forward a batch (model inputs on ``lm.device``); returns None when a hook stopped it early."""
    try:
        return lm.model(**batch.to(lm.device).model_inputs(), use_cache=False, **kwargs)
    except StopForward:
        return None


def select(
    h: States, batch: Batch, position: Position
) -> Float[Tensor, "batch d_model"] | list[Float[Tensor, "seq_i d_model"]]:
    """Reduce block output ``h`` (batch seq d_model) to the requested position(s).

    Returns ``batch d_model`` for ``last`` / ``mean`` / an int, a list of ``seq_i d_model`` for ``all``.
    """
    if position == "all":
        return [h[i, a:b] for i, (a, b) in enumerate(_spans(batch))]
    return reducer(batch, position, h.device)(h)


def _spans(batch: Batch) -> list[tuple[int, int]]:
    """``(start, end)`` of the real tokens of each row (padding is contiguous), from the batch's lengths."""
    width = batch.input_ids.shape[1]
    return [(width - n, width) if batch.padding_side == "left" else (0, n) for n in batch.lengths.tolist()]


def reducer(
    batch: Batch, position: Position, device: torch.device | str
) -> Callable[[States], Float[Tensor, "batch d_model"]]:
    """``h (batch seq d_model) -> batch d_model`` for ``last`` / ``mean`` / an int position of one batch.

    The index tensors are built (and an int position bounds-checked) from ``batch`` where it lives (the
    CPU batch in :func:`capture`) and moved to ``device`` once, so applying the reducer to every layer's
    output, inside a forward hook, never waits for the device (no ``.item()`` / ``bool(tensor)`` / copy)."""
    if position == "all":
        raise MosrError("reducer: position 'all' keeps every token; use select")
    if position == "mean":
        mask = batch.attention_mask.to(device).unsqueeze(-1)
        return lambda h: (h * mask.to(h.dtype)).sum(1) / mask.to(h.dtype).sum(1)
    if position == "last":
        idx = batch.last
    else:
        lengths = batch.lengths
        offset = (batch.input_ids.shape[1] - lengths) if batch.padding_side == "left" else torch.zeros_like(lengths)
        idx = offset + (lengths + position if position < 0 else torch.full_like(lengths, position))
        if (idx < offset).any() or (idx >= offset + lengths).any():
            raise MosrError(f"position {position} is outside a prompt of {int(lengths.min())} tokens")
    idx = idx.to(device)
    rows = torch.arange(idx.shape[0], device=device)
    return lambda h: h[rows, idx]


def to_host(x: Tensor, dtype: torch.dtype) -> Tensor:
    """The one device-to-host copy of a batch's results in :func:`capture` (a separate function so tests
    can count it, or replace it to run capture on the ``meta`` device)."""
    return x.to("cpu", dtype)


@torch.inference_mode()
def capture(
    lm: LM,
    prompts: str | Sequence[str] | PromptSet,
    layers: Layers = "all",
    position: Position = "last",
    batch_size: int = 16,
    padding_side: str = "left",
    chat: bool = True,
    system: str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    backend: Literal["hooks", "nnsight"] = "hooks",
) -> Acts | list[Float[Tensor, "layer seq_i d_model"]]:
    """Hidden states of ``prompts`` at ``layers`` and ``position``.

    Args:
        lm: model from :func:`mosr.load`.
        prompts: a string, list of strings or :class:`~mosr.data.PromptSet`.
        layers: ``"all"``, an int or a list of ints (negative counts from the end).
        position: ``"last"`` (last prompt token, after the assistant header: the post-instruction
            position), ``"mean"`` over prompt tokens, ``"all"`` tokens, or an int token offset
            (``-1`` = last, ``-2`` = one before, ``0`` = first).
        chat: apply the chat template (default) or use the raw text.
        backend: ``"hooks"`` (default, fastest) or ``"nnsight"`` (same numbers, via an nnsight trace).

    Returns:
        ``Tensor[prompt layer d_model]`` on CPU in ``dtype``, in the input order; for
        ``position="all"`` a list of ``Tensor[layer seq_i d_model]``.
    """
    check_position(position)
    layer_ids = resolve_layers(lm, layers)
    batches = make_batches(lm, prompts, batch_size, padding_side, chat, system)
    n = sum(len(b.index) for b in batches)
    out: Tensor | None = None if position == "all" else torch.empty(n, len(layer_ids), lm.d_model, dtype=dtype)
    ragged: list[Tensor] = [None] * n if position == "all" else []  # type: ignore[list-item]
    forward = _forward_nnsight if backend == "nnsight" else _forward_hooks
    if backend not in ("hooks", "nnsight"):
        raise MosrError(f"unknown backend {backend!r}: use 'hooks' or 'nnsight'")
    for batch in tqdm(batches, desc="capture", disable=not progress, unit="batch"):
        # one host copy per batch: per-layer results stay on the device until the batch is done
        if position == "all":
            by_layer = dict(forward(lm, batch, layer_ids, None))
            full = to_host(torch.stack([by_layer[layer] for layer in layer_ids], 1), dtype)  # batch layer seq d
            for j, (row, (a, b)) in enumerate(zip(batch.index, _spans(batch))):
                ragged[row] = full[j, :, a:b].clone()
        else:
            assert out is not None
            by_layer = dict(forward(lm, batch, layer_ids, reducer(batch, position, lm.device)))
            out[batch.index] = to_host(torch.stack([by_layer[layer] for layer in layer_ids], 1), dtype)
    if position == "all":
        return ragged
    assert out is not None
    return out


def _forward_hooks(
    lm: LM, batch: Batch, layers: list[int], reduce: Callable[[Tensor], Tensor] | None = None
) -> list[tuple[int, Tensor]]:
    """One hooked forward stopped after the deepest layer; ``reduce`` (e.g. :func:`reducer`) is applied to
    each block output inside its hook, so the full ``batch seq d_model`` states of earlier layers are freed."""
    results: list[tuple[int, Tensor]] = []
    keep = reduce or (lambda h: h)
    with hooked(lm, layers, fn=lambda layer, h: results.append((layer, keep(h))), stop=True):
        run(lm, batch)
    return results


def _forward_nnsight(
    lm: LM, batch: Batch, layers: list[int], reduce: Callable[[Tensor], Tensor] | None = None
) -> list[tuple[int, Tensor]]:
    from nnsight import NNsight

    traced = lm.info.get("_nnsight")
    if traced is None:
        traced = lm.info["_nnsight"] = NNsight(lm.model)
    blocks = traced
    for part in lm.arch.blocks.split("."):
        blocks = getattr(blocks, part)
    saved: list[object] = []
    with traced.trace(**batch.to(lm.device).model_inputs(), use_cache=False):
        for layer in layers:
            saved.append(blocks[layer].output.save())
    keep = reduce or (lambda h: h)
    return [(layer, keep(block_output(s))) for layer, s in zip(layers, saved)]  # type: ignore[arg-type]


def representation(
    lm: LM,
    prompts: str | Sequence[str] | PromptSet,
    layers: Layers,
    reduce: str = "mean",
    batch_size: int = 16,
    progress: bool = False,
) -> Float[Tensor, "prompt d_model"]:
    """docs/method.md §1's prompt representation r(x): the post-instruction (last prompt token) hidden state
    at one layer, or the mean over several layers. Shape: prompt d_model (float32, CPU)."""
    if reduce not in ("mean", "concat"):
        raise MosrError(f"reduce must be 'mean' or 'concat', got {reduce!r}")
    acts = capture(lm, prompts, layers=layers, position="last", batch_size=batch_size, progress=progress)
    assert isinstance(acts, Tensor)
    return acts.mean(1) if reduce == "mean" else acts.flatten(1)
