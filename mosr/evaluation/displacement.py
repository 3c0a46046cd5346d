"""How far an adapter moved a model's representations: a no-generation score per prompt.

``displacement(adapted, base, prompts, layers)`` = ``1 − mean_ℓ cos(h'_ℓ, h_ℓ)`` at the last prompt token
(the post-instruction position), ``h'`` from the defended model and ``h`` from its base model: 0 when
the adapter left the prompt's state alone, up to 2 when it reversed it. On the bundled model it
predicts which pseudo-harmful prompts a defence over-refuses (``mosr tradeoff``, representation stage),
so ``mosr eval --mode repr`` ranks adapters without generating anything.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mosr.models import LM


def default_layers(lm: LM) -> list[int]:
    """The erasure methods' default target layers (≈1/3 and 2/3 depth)."""
    from mosr.capture import default_target_layers

    return default_target_layers(lm.n_layers)


def displacement(
    adapted: LM,
    base: LM,
    prompts: Sequence[str],
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    chat: bool = True,
    system: str | None = None,
) -> np.ndarray:
    """``1 − mean_ℓ cos(h'_ℓ, h_ℓ)`` per prompt (``np.ndarray[prompt]``), last prompt token, ``layers``
    (None: :func:`default_layers`)."""
    from mosr.capture import capture

    chosen = list(layers) if layers else default_layers(base)
    h_new, h_ref = (
        capture(lm, list(prompts), layers=chosen, batch_size=batch_size, chat=chat, system=system, progress=False)
        for lm in (adapted, base)
    )  # prompt layer d_model each (position "last": one tensor)
    assert isinstance(h_new, Tensor) and isinstance(h_ref, Tensor)
    return 1.0 - state_cosine(h_new, h_ref)


def state_cosine(h_new: Tensor, h_ref: Tensor) -> np.ndarray:
    """``mean_ℓ cos(h'_ℓ, h_ℓ)`` per prompt (``np.ndarray[prompt]``) of two captures of the same prompts
    (``Tensor[prompt layer d_model]``); the displacement score is ``1 −`` this."""
    return torch.nn.functional.cosine_similarity(h_new, h_ref, dim=-1).mean(dim=1).numpy()


def per_set(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Mean displacement and n per set, from evaluation rows that carry ``displacement``."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r.get("displacement") is not None:
            by.setdefault(r["set"], []).append(float(r["displacement"]))
    return {s: {"n": len(v), "mean": round(float(np.mean(v)), 5)} for s, v in by.items()}
