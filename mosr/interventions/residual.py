"""What writes to the residual stream, per architecture, and the direction each writer must drop.

A decoder block adds two things to the residual stream: its attention sublayer's output and its
MLP sublayer's output (``ArchSpec.attn`` / ``ArchSpec.mlp``), each computed by an output projection
(``ArchSpec.attn_out`` / ``ArchSpec.mlp_out``: a ``Linear``, or GPT-2's transposed ``Conv1D``). Before
block 0 the stream is the token embedding (plus GPT-2's learned position embedding,
``ArchSpec.pos_embed``). Directional ablation removes a unit direction ``r̂`` from each of these writes
(:func:`mosr.interventions.ablate` with hooks, :func:`mosr.interventions.orthogonalize` in the weights).

Post-norm blocks (Gemma 2 / 3, ``ArchSpec.post_norms``) pass each sublayer output ``y`` through an RMS
norm before the residual add: ``norm(y) = s ⊙ y / rms(y)`` with a per-channel scale ``s``. Its output is
orthogonal to ``r̂`` exactly when ``y`` is orthogonal to ``u = s ⊙ r̂ / ‖s ⊙ r̂‖``, so on those blocks the
sublayer output (and its projection's weights) drop ``u`` instead of ``r̂``: the residual stream then
carries no ``r̂`` at all, and the hook and weight versions stay identical. (refusal_direction removes
``r̂`` itself before the post-norm on Gemma 2, which leaves an ``r̂`` component in the stream.) ``s`` is
read off the norm module itself, ``s ∝ norm(1)``, so its parameterisation (``w`` or ``1 + w``) does not
matter.

Nested ablations remove the span of all their directions: the model remembers the directions of the
ablation contexts it is in (:func:`ablating`), and a new one removes only what is left of its direction
after Gram–Schmidt against them, at every site (the stream, and each post-norm's own space, where
``s ⊙ r̂₁`` and ``s ⊙ r̂₂`` need not be orthogonal even when ``r̂₁ ⊥ r̂₂``). The projections then commute.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mosr.errors import ModelError, MosrError
from mosr.models import LM, _get
from mosr.types import Float

#: the two sublayers of a block that write to the residual stream
SUBLAYERS: tuple[str, str] = ("attn", "mlp")
#: ``lm.info`` key of the unit directions of the ablation contexts the model is in, outermost first
ACTIVE = "_ablated_directions"  # private: lm.info items without "_" are reported
#: a direction whose part outside the span of the active ones is shorter than this is already removed
SPAN_TOL = 1e-5


def unit(direction: Float[Tensor, " d_model"], lm: LM | None = None) -> Float[Tensor, " d_model"]:
    """``direction / ‖direction‖`` in float32 on the CPU; a one-line error for a wrong shape or a zero vector."""
    if not isinstance(direction, Tensor):
        raise MosrError(f"direction must be a tensor of shape (d_model,), got {type(direction).__name__}")
    r = direction.detach().to("cpu", torch.float32)
    if r.ndim != 1 or (lm is not None and r.shape[0] != lm.d_model):
        want = f"({lm.d_model},)" if lm is not None else "(d_model,)"
        raise MosrError(f"direction has shape {tuple(r.shape)}, expected {want}")
    norm = r.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise MosrError(f"direction has norm {float(norm)}: it must be finite and non-zero")
    return r / norm


def sublayer(lm: LM, layer: int, which: str) -> nn.Module:
    """The attention (``which="attn"``) or MLP (``"mlp"``) sublayer of block ``layer``."""
    return _part(lm, lm.blocks[layer], getattr(lm.arch, which), which)


def out_projection(lm: LM, layer: int, which: str) -> nn.Module:
    """The output projection of block ``layer``'s attention or MLP sublayer (its weights write to the stream)."""
    return _part(lm, lm.blocks[layer], getattr(lm.arch, f"{which}_out"), f"{which}_out")


def post_norm(lm: LM, layer: int, which: str) -> nn.Module | None:
    """The RMS norm between a sublayer's output and the residual add (Gemma 2 / 3), else None."""
    names = lm.arch.post_norms
    if names is None:
        return None
    block = lm.blocks[layer]
    if not all(_has(block, n) for n in names):
        return None
    return _get(block, names[SUBLAYERS.index(which)])


@contextmanager
def ablating(lm: LM, r_hat: Float[Tensor, " d_model"]) -> Iterator[list[Tensor]]:
    """Context manager: record ``r̂`` as ablated while the block runs; yields the directions that were
    active before it (the ones a nested ablation orthogonalises against)."""
    active: list[Tensor] = lm.info.setdefault(ACTIVE, [])
    prior = list(active)
    active.append(r_hat)
    try:
        yield prior
    finally:
        del active[next(i for i in range(len(active) - 1, -1, -1) if active[i] is r_hat)]


def residual_part(vectors: Sequence[Tensor]) -> Tensor | None:
    """Gram–Schmidt of ``vectors`` in order (float64): the unit part of the last one orthogonal to the
    others (float32), or None when it lies in their span (nothing left to remove)."""
    basis: list[Tensor] = []
    for given in vectors[:-1]:
        v = given.double()
        for b in basis:
            v = v - (v @ b) * b
        if v.norm() > SPAN_TOL * given.norm():
            basis.append(v / v.norm())
    last = vectors[-1].double()
    for b in basis:
        last = last - (last @ b) * b
    n = last.norm()
    return None if n <= SPAN_TOL * vectors[-1].norm() else (last / n).float()


def stream_direction(r_hat: Float[Tensor, " d_model"], prior: Sequence[Tensor]) -> Float[Tensor, " d_model"] | None:
    """The direction the residual stream must drop: ``r̂``, minus its part in the span of ``prior``."""
    return residual_part([*prior, r_hat]) if prior else r_hat


def write_direction(
    lm: LM, layer: int, which: str, r_hat: Float[Tensor, " d_model"], prior: Sequence[Tensor] = ()
) -> Float[Tensor, " d_model"] | None:
    """The unit direction a sublayer's output must drop so that what it adds to the stream has no ``r̂``:
    ``r̂`` itself, or ``s ⊙ r̂ / ‖s ⊙ r̂‖`` behind a post-norm with scale ``s`` (float32, CPU); with active
    ``prior`` directions, its part orthogonal to theirs (None: already removed)."""
    norm = post_norm(lm, layer, which)
    if norm is None:
        return stream_direction(r_hat, list(prior))
    param = next(norm.parameters(), None)
    ones = torch.ones(
        lm.d_model,
        dtype=param.dtype if param is not None else torch.float32,
        device=param.device if param is not None else "cpu",
    )
    with torch.no_grad():
        scale = norm(ones).to("cpu", torch.float32)
    if (scale * r_hat).norm() == 0:
        raise MosrError(f"block {layer}: the {which} post-norm scales r̂ to zero; nothing to ablate")
    return residual_part([scale * r for r in (*prior, r_hat)])


@dataclass
class Writer:
    """A parameter that writes to the residual stream: ``dim`` is its d_model axis, ``direction`` the unit
    vector to remove along it (float32, CPU)."""

    name: str
    param: Tensor
    dim: int
    direction: Float[Tensor, " d_model"]


def writers(lm: LM, r_hat: Float[Tensor, " d_model"], prior: Sequence[Tensor] = ()) -> list[Writer]:
    """Every parameter whose output is added to the residual stream, with the direction it must drop:
    the token (and position) embedding, and per block the attention / MLP output projections (weight,
    bias, and the ``lora_B`` matrices of a PEFT LoRA layer wrapping them). Sites where ``r̂`` is already in
    the span of the ``prior`` (active) directions are left out."""
    out: list[Writer] = []
    stream = stream_direction(r_hat, list(prior))
    if stream is not None:
        out.append(Writer(lm.arch.embed + ".weight", _weight(lm.embed, lm.arch.embed), 1, stream))
        if lm.arch.pos_embed is not None:
            pos = _weight(_get(lm.model, lm.arch.pos_embed), lm.arch.pos_embed)
            out.append(Writer(lm.arch.pos_embed + ".weight", pos, 1, stream))
    for layer in range(lm.n_layers):
        for which in SUBLAYERS:
            u = write_direction(lm, layer, which, r_hat, prior)
            if u is not None:
                name = f"{lm.arch.blocks}.{layer}.{getattr(lm.arch, which + '_out')}"
                out.extend(_projection_writers(out_projection(lm, layer, which), name, u))
    return out


def _projection_writers(module: nn.Module, name: str, u: Tensor) -> list[Writer]:
    """The parameters of one output projection (a Linear / Conv1D, possibly wrapped by a PEFT LoRA layer)."""
    found: list[Writer] = []
    base = getattr(module, "base_layer", None)
    if base is not None:  # a PEFT LoRA layer: y = base(x) + Σ scale·B(A(x)); B's rows are d_model
        if any(len(getattr(module, attr, {})) for attr in ("lora_magnitude_vector",)):
            raise ModelError(
                f"{name}: DoRA adapters rescale the projection's output; orthogonalize needs plain "
                "LoRA (merge the adapter first)"
            )
        found.extend(_projection_writers(base, name, u))
        for key, b in getattr(module, "lora_B", {}).items():
            found.append(Writer(f"{name}.lora_B.{key}.weight", b.weight, 0, u))
            if getattr(b, "bias", None) is not None:
                found.append(Writer(f"{name}.lora_B.{key}.bias", b.bias, 0, u))
        return found
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ModelError(f"{name} ({type(module).__name__}) is not a linear projection with a 2-D weight")
    # nn.Linear keeps (out, in); transformers' Conv1D (GPT-2) keeps (in, out)
    found.append(Writer(f"{name}.weight", weight, 1 if type(module).__name__ == "Conv1D" else 0, u))
    bias = getattr(module, "bias", None)
    if isinstance(bias, Tensor):
        found.append(Writer(f"{name}.bias", bias, 0, u))
    return found


def _weight(module: nn.Module, name: str) -> Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise ModelError(f"{name} ({type(module).__name__}) has no weight matrix")
    return weight


def _has(root: nn.Module, path: str) -> bool:
    try:
        _get(root, path)
    except AttributeError:
        return False
    return True


def _part(lm: LM, block: nn.Module, path: str, what: str) -> nn.Module:
    try:
        return _get(block, path)
    except AttributeError:
        raise ModelError(
            f"{type(block).__name__} of {lm.name} has no {path!r} ({what} in the {lm.arch.family!r} "
            "architecture): register its attn / mlp / attn_out / mlp_out paths with "
            "mosr.models.register_architecture"
        ) from None
