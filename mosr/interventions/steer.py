"""Activation addition: ``x ← x + α·v`` on the residual stream after chosen blocks.

    with steer(lm, v, layers=[12], alpha=4.0):
        generate(lm, prompts)          # every forward pass inside the block is steered

Layer ``i`` is the residual stream after block ``i`` (the package's convention, :mod:`mosr.models`),
so ``layers=[i]`` adds the vector to block ``i``'s output, which is block ``i + 1``'s input: the point
where :func:`mosr.interventions.mean_diff` measured a vector of layer ``i``. refusal_direction's ActAdd
adds its layer-``l`` candidate to the input of block ``l`` (``resid_pre``), that is, at the same point
in the stream where the candidate was measured; this is the same rule in the package's numbering.

``positions``:

* ``"all"`` (default, as ActAdd and refusal_direction do): every position of every forward pass, the
  prompt's tokens during the prefill and each generated token afterwards (padding positions too: they
  are masked out of attention, so nothing reads them).
* ``"last"``: the last position of each forward pass. During generation that is the last prompt
  token in the prefill (mosr pads on the left, so it is the last token of every row) and then every
  generated token (each cached decoding step has one position). In a single forward over a whole
  text (capture, a teacher-forced loss) only its final token is steered; with right padding the
  final position is padding for the shorter rows, so use left padding (mosr's default).

``alpha = 0`` changes nothing (``x + 0·v`` is ``x``, bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor

from mosr.capture import Layers, States, hooked, resolve_layers
from mosr.errors import MosrError
from mosr.models import LM
from mosr.types import Float

SteerPositions = Literal["all", "last"]
STEER_POSITIONS = ("all", "last")


@contextmanager
def steer(
    lm: LM, vector: Float[Tensor, " d_model"], layers: Layers, alpha: float = 1.0, positions: SteerPositions = "all"
) -> Iterator[LM]:
    """Context manager: add ``alpha * vector`` to the output of each block in ``layers``.

    Args:
        lm: the model (a PEFT adapter injected into ``lm.model`` stays active underneath).
        vector: ``Tensor[d_model]``, used as given (not normalised).
        layers: ``"all"``, an int or a list of ints (negative counts from the end).
        alpha: the coefficient.
        positions: ``"all"`` or ``"last"`` (see the module docstring).

    Yields ``lm``. Leaving the block removes the hooks (also when it raises).
    """
    if positions not in STEER_POSITIONS:
        raise MosrError(f"steer positions must be one of {STEER_POSITIONS}, got {positions!r}")
    if not isinstance(vector, Tensor) or vector.ndim != 1 or vector.shape[0] != lm.d_model:
        shape = tuple(vector.shape) if isinstance(vector, Tensor) else type(vector).__name__
        raise MosrError(f"steering vector must have shape ({lm.d_model},), got {shape}")
    if not torch.isfinite(vector).all():
        raise MosrError("steering vector has non-finite entries")
    layer_ids = resolve_layers(lm, layers)
    added = float(alpha) * vector.detach().to("cpu", torch.float32)
    cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def add(_layer: int, h: States) -> States:
        key = (h.device, h.dtype)
        v = cache.get(key)
        if v is None:
            v = cache[key] = added.to(h.device, h.dtype)
        if positions == "all":
            return h + v
        return torch.cat([h[:, :-1], h[:, -1:] + v], dim=1)

    with hooked(lm, layer_ids, fn=add, prepend=True):
        yield lm
