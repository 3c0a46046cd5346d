"""Directional ablation baked into the weights (refusal_direction's ``orthogonalize_weights``).

Every matrix that writes to the residual stream (:func:`mosr.interventions.residual.writers`: the
token and position embeddings, each block's attention and MLP output projections, their biases, and
the ``lora_B`` matrices of a PEFT LoRA layer wrapping a projection) loses its component along ``r̂`` on
its d_model axis: ``W ← W − r̂ r̂ᵀ W`` for a ``Linear`` (out × in), ``W ← W − W r̂ r̂ᵀ`` for an
embedding or GPT-2's ``Conv1D`` (d_model last), ``b ← b − (b·r̂) r̂``. Nothing the model adds to the
stream then has an ``r̂`` component, so its outputs equal those of :func:`mosr.interventions.ablate`
(to float rounding).

A tied unembedding (GPT-2, Gemma) is untied first: it reads the stream and must keep the original
matrix, or the logits would differ from the hook version.

    with orthogonalize(lm, r):                 # restored bit for bit on exit
        generate(lm, prompts)
    orthogonalize_weights(lm, r).model.save_pretrained("out/")   # or keep the edit
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from mosr.interventions.residual import Writer, ablating, unit, writers
from mosr.models import LM
from mosr.types import Float


def orthogonalize_weights(lm: LM, direction: Float[Tensor, " d_model"]) -> LM:
    """Remove ``direction`` from every weight that writes to the residual stream, in place, for good.

    Unties a tied unembedding (and sets ``tie_word_embeddings=False`` in the model's config, so
    ``lm.model.save_pretrained`` writes both matrices and a reload does not tie them again).
    Ignores any ablation context it runs in (the edit it keeps is ``r̂`` alone). Returns ``lm``."""
    r_hat = unit(direction, lm)
    if _untie(lm) is not None:
        for config in {id(c): c for c in _configs(lm.model)}.values():
            config.tie_word_embeddings = False
    _project(writers(lm, r_hat))
    return lm


@contextmanager
def orthogonalize(lm: LM, direction: Float[Tensor, " d_model"]) -> Iterator[LM]:
    """Context manager: :func:`orthogonalize_weights` for the duration of the block.

    On exit (also when the block raises) every edited parameter gets its original values back, bit for
    bit, and a tied unembedding is tied again (the same ``Parameter`` as before). Nested inside other
    ablations it removes the span of all their directions, like :func:`~mosr.interventions.ablate`.
    Yields ``lm``."""
    r_hat = unit(direction, lm)
    with ablating(lm, r_hat) as prior:
        found = writers(lm, r_hat, prior)
        saved = [(w.param, w.param.detach().clone()) for w in found]
        tied = _untie(lm)
        try:
            _project(found)
            yield lm
        finally:
            with torch.no_grad():
                for param, value in saved:
                    param.copy_(value)
            if tied is not None:
                lm.unembed.weight = tied


def _project(found: list[Writer]) -> None:
    """``W ← W − u uᵀ W`` along each writer's d_model axis (float32 arithmetic, written back in place)."""
    with torch.no_grad():
        for w in found:
            x = w.param.detach().float()
            u = w.direction.to(x.device)
            if w.dim == 0:  # d_model first: a Linear's (out, in) weight, a bias, a lora_B
                coeff = torch.tensordot(u, x, dims=([0], [0]))  # (in,) or ()
                new = x - u.reshape(-1, *([1] * (x.ndim - 1))) * coeff
            else:  # d_model last: an embedding, a Conv1D's (in, out) weight
                new = x - (x @ u).unsqueeze(-1) * u
            w.param.copy_(new.to(w.param.dtype))


def _untie(lm: LM) -> Tensor | None:
    """Give the unembedding its own copy of a weight it shares with the embedding; returns the unembedding's
    original (shared) parameter, None when nothing was tied."""
    head, embed = lm.unembed, lm.embed
    shared: Tensor = head.weight  # type: ignore[assignment]
    if shared is not embed.weight and shared.data_ptr() != embed.weight.data_ptr():  # type: ignore[operator]
        return None
    head.weight = nn.Parameter(shared.detach().clone(), requires_grad=shared.requires_grad)
    return shared


def _configs(model: nn.Module) -> list[Any]:
    """The model's config and, for composite configs, its text config (where ``tie_word_embeddings`` lives)."""
    config = getattr(model, "config", None)
    if config is None:
        return []
    out = [config]
    text = getattr(config, "get_text_config", None)
    if callable(text):
        out.append(text())
    return out
