"""Training losses of docs/method.md §2-§6, all reduced per sample so overlap-aware weights can apply.

Notation: ``h_new`` = hidden states of the trained model ``M'`` (LoRA on), ``h_ref`` = the frozen
reference ``M`` (adapters off, no grad). Both are dicts ``layer -> Tensor[batch seq d_model]`` as
recorded by :func:`mosr.capture.hooked`. Masks are 0/1 (float or bool) ``Tensor[batch seq]``.

* :func:`erase_loss`  ``L_erase(i) = mean_{ℓ∈T, t∈mask_i} ReLU(cos(h'_ℓ,t − μ_ℓ, h_ℓ,t − μ_ℓ))``
  with ``μ_ℓ = 0`` (``raw``, circuit breakers' exact term) or the frozen model's mean state of layer ℓ
  (``centered``: removes the direction every state shares, see below)
* :func:`retain_loss` ``L_retain(i) = mean_{ℓ, t∈mask_i} ‖h'_ℓ,t − h_ℓ,t‖₂ / n_ℓ,t`` with
  ``n = 1`` (``absolute``, circuit breakers' exact term) or ``n = ‖h_ℓ,t‖₂`` (``relative``)
* :func:`collapse_loss` ``mean_{ℓ, t∈mask_i} ‖h'_ℓ,t − μ_ℓ‖ / ‖h_ℓ,t − μ_ℓ‖`` (optional push of erased
  states onto the centre; non-zero gradient at ``h' = h``)
* :func:`separation_loss` ``mean_{ℓ, t∈mask_i} ReLU(⟨u(h'_ℓ,t − μ_ℓ), g_ℓ,i⟩)`` with ``u(x) = x/‖x‖`` and
  ``g_ℓ,i`` = :func:`mean_direction` of a paired frozen sequence (X-Boundary: push boundary-safe
  prompt states away from the frozen representation of the same prompt answered compliantly)
* :func:`token_nll`   mean next-token NLL over the sample's labelled tokens (``-100`` = ignored)
* :func:`weighted_mean` ``Σ_i w_i L_i / Σ_i w_i``
* :func:`coefficients` the schedule ``c_r = ρ·α·s/(2S)``, ``c_e = α·(1 − s/(2S))`` (``cb``) or
  ``c_r = ρ·α``, ``c_e = α`` (``constant``); ``ρ`` sets the retain / erase balance

A sample with no masked (or labelled) token gets loss 0; give it weight 0 (or drop it) so it does
not dilute a mean. Every function is finite in value and gradient for all inputs, including
zero vectors (cosine) and identical states (the L2 norm at ``h' = h``, e.g. at step 0 of LoRA).
Hidden states are compared in float32 (bf16 / fp16 models included); the results are float32.

Why the scale-free variants exist (measured on SmolLM2-135M, docs/method.md): hidden-state norms at
layers 10 / 20 are ≈150 / 250, so the absolute L2 is 1–10 while the cosine is ≤ 1, and per unit of
movement the cosine's gradient is ≈1/‖h‖ of the L2's: the retain term sets the direction of every
update and erasure never starts. Dividing by ``‖h_ℓ,t‖`` puts both terms on the same (unit-free)
scale. The raw states also share a few massive-activation dimensions, so ``cos(h', h)`` stays high
however the rest of the state moves; centring on the frozen mean state measures the cosine on the
part of the state that carries content.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from mosr.errors import MosrError
from mosr.types import Float, Int

#: ``layer -> Tensor[batch seq d_model]``: hidden states of the hooked layers
States = Mapping[int, Float[Tensor, "batch seq d_model"]]
#: 0/1 token mask (float or bool)
Mask = Float[Tensor, "batch seq"]
#: one loss value per sample
PerSample = Float[Tensor, "batch"]
#: ``layer -> Tensor[d_model]``: the frozen mean state per layer
Center = Mapping[int, Float[Tensor, " d_model"]]

#: clamp for vector norms in the cosine (keeps the gradient finite for zero vectors)
EPS = 1e-8
IGNORE_INDEX = -100


def _check_states(h_new: Mapping[int, Tensor], h_ref: Mapping[int, Tensor], mask: Tensor) -> list[int]:
    if not h_new:
        raise MosrError("no hidden states given: h_new is empty (which target layers were hooked?)")
    missing = sorted(set(h_new) - set(h_ref))
    if missing:
        raise MosrError(f"reference hidden states missing for layer(s) {missing}; have {sorted(h_ref)}")
    for layer, h in h_new.items():
        if h.shape != h_ref[layer].shape:
            raise MosrError(
                f"layer {layer}: trained states {tuple(h.shape)} and reference states "
                f"{tuple(h_ref[layer].shape)} differ in shape"
            )
        if h.dim() != 3 or h.shape[:2] != mask.shape:
            raise MosrError(
                f"layer {layer}: expected states (batch seq d_model) matching mask {tuple(mask.shape)}, "
                f"got {tuple(h.shape)}"
            )
    return sorted(h_new)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Per-sample mean of ``values`` (layer batch seq) over layers and masked tokens. Shape: batch."""
    m = mask.to(values.dtype)
    count = m.sum(-1) * values.shape[0]  # batch
    total = (values * m.unsqueeze(0)).sum(dim=(0, 2))  # batch
    return total / count.clamp(min=1.0)


def cosine(a: Float[Tensor, "*batch d"], b: Float[Tensor, "*batch d"], eps: float = EPS) -> Float[Tensor, "*batch"]:
    """Cosine similarity over the last dim with each norm clamped at ``eps`` (finite gradient at 0).

    Shapes: ``(... d_model), (... d_model) -> (...)``.
    """
    return (F.normalize(a, dim=-1, eps=eps) * F.normalize(b, dim=-1, eps=eps)).sum(-1)


def _centred(h_new: Tensor, h_ref: Tensor, layer: int, center: Mapping[int, Tensor] | None) -> tuple[Tensor, Tensor]:
    """``(h' − μ_ℓ, h − μ_ℓ)`` in float32 (``h_ref`` detached); unchanged without ``center``."""
    a, b = h_new.float(), h_ref.detach().float()
    if center is None:
        return a, b
    if layer not in center:
        raise MosrError(f"no centre (mean state) for layer {layer}; have {sorted(center)}")
    mu = center[layer].detach().float().to(a.device)
    if mu.shape != a.shape[-1:]:
        raise MosrError(f"centre of layer {layer} has shape {tuple(mu.shape)}, expected ({a.shape[-1]},)")
    return a - mu, b - mu


def erase_loss(h_new: States, h_ref: States, mask: Mask, center: Center | None = None) -> PerSample:
    """Representation-erasure (rerouting) loss per sample:
    ``mean_{ℓ, t∈mask} ReLU(cos(h'_ℓ,t − μ_ℓ, h_ℓ,t − μ_ℓ))``.

    Args:
        h_new: ``layer -> Tensor[batch seq d_model]`` of the trained model (with grad).
        h_ref: same layers from the frozen model (detached here).
        mask: ``Tensor[batch seq]``, 1 on the tokens to erase (the harmful response).
        center: ``layer -> Tensor[d_model]``, the frozen model's mean state ``μ_ℓ`` (detached here);
            None gives circuit breakers' raw cosine (``μ = 0``).

    Returns:
        ``Tensor[batch]``; 0 for a sample with no masked token.
    """
    layers = _check_states(h_new, h_ref, mask)
    stacked = torch.stack([cosine(*_centred(h_new[layer], h_ref[layer], layer, center)) for layer in layers])
    return _masked_mean(F.relu(stacked), mask.to(stacked.device))


def collapse_loss(
    h_new: States, h_ref: States, mask: Mask, center: Center | None = None, eps: float = EPS
) -> PerSample:
    """Pull of the erased states onto the centre, per sample:
    ``mean_{ℓ, t∈mask} ‖h'_ℓ,t − μ_ℓ‖₂ / max(‖h_ℓ,t − μ_ℓ‖₂, eps)`` (``μ = 0`` without ``center``).

    It equals 1 at ``h' = h`` and 0 when the state is collapsed onto the mean, and unlike
    ``ReLU(cos)`` its gradient at ``h' = h`` is not zero: it points along each erased token's own
    content ``h − μ``, so the first updates already move harmful states rather than a direction that
    numerical noise picked (``erase_collapse`` in the training config).

    Returns:
        ``Tensor[batch]``; 0 for a sample with no masked token.
    """
    layers = _check_states(h_new, h_ref, mask)
    vals = []
    for layer in layers:
        a, b = _centred(h_new[layer], h_ref[layer], layer, center)
        vals.append(torch.linalg.vector_norm(a, dim=-1) / torch.linalg.vector_norm(b, dim=-1).clamp(min=eps))
    stacked = torch.stack(vals)
    return _masked_mean(stacked, mask.to(stacked.device))


def mean_direction(
    h_ref: States, mask: Mask, center: Center | None = None, eps: float = EPS
) -> dict[int, Float[Tensor, "batch d_model"]]:
    """``g_ℓ,i = mean_{t∈mask_i} u(h_ℓ,i,t − μ_ℓ)``, the masked mean of unit (centred) states, per layer:
    ``layer -> Tensor[batch d_model]`` (norm ≤ 1; 0 for a sample with no masked token). Detached."""
    out = {}
    for layer, h in h_ref.items():
        x = h.detach().float()
        if center is not None:
            x = x - center[layer].detach().to(x.device, torch.float32)
        u = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=eps)
        m = mask.to(u.device, torch.float32).unsqueeze(-1)  # batch seq 1
        out[layer] = (u * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    return out


def separation_loss(
    h_new: States,
    target: Mapping[int, Float[Tensor, "batch d_model"]],
    mask: Mask,
    center: Center | None = None,
    eps: float = EPS,
) -> PerSample:
    """X-Boundary's separation term, per sample: ``mean_{ℓ, t∈mask} ReLU(⟨u(h'_ℓ,t − μ_ℓ), g_ℓ⟩)``.

    Args:
        h_new: ``layer -> Tensor[batch seq d_model]`` of the trained model on boundary-safe prompts.
        target: ``layer -> Tensor[batch d_model]``, e.g. :func:`mean_direction` of the frozen states of
            the same prompts answered compliantly (detached here).
        mask: ``Tensor[batch seq]``, 1 on the tokens to separate (X-Boundary: the prompt tokens).
        center: the frozen mean state per layer (``centered``), None for X-Boundary's raw states.

    Returns:
        ``Tensor[batch]``; 0 for a sample with no masked token. Unlike ``ReLU(cos(h', h))`` its
        gradient at ``h' = h`` is not zero wherever the state points along its target.
    """
    if not h_new:
        raise MosrError("no hidden states given: h_new is empty (which target layers were hooked?)")
    vals = []
    for layer, h in h_new.items():
        if layer not in target:
            raise MosrError(f"separation target missing for layer {layer}; have {sorted(target)}")
        g = target[layer].detach().to(h.device, torch.float32)
        if h.dim() != 3 or h.shape[:2] != mask.shape or g.shape != (h.shape[0], h.shape[-1]):
            raise MosrError(
                f"layer {layer}: expected states (batch seq d_model) matching mask {tuple(mask.shape)} "
                f"and target (batch d_model), got {tuple(h.shape)} and {tuple(g.shape)}"
            )
        x = h.float()
        if center is not None:
            x = x - center[layer].detach().to(x.device, torch.float32)
        u = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=eps)
        vals.append(F.relu((u * g.unsqueeze(1)).sum(dim=-1)))
    stacked = torch.stack(vals)
    return _masked_mean(stacked, mask.to(stacked.device))


def retain_loss(h_new: States, h_ref: States, mask: Mask, relative: bool = False, eps: float = EPS) -> PerSample:
    """Retain loss per sample: ``mean_{ℓ, t∈mask} ‖h'_ℓ,t − h_ℓ,t‖₂`` (``relative``: each distance
    divided by ``max(‖h_ℓ,t‖₂, eps)``, so scaling both states by ``c > 0`` leaves the loss unchanged).

    Args:
        h_new: ``layer -> Tensor[batch seq d_model]`` of the trained model (with grad).
        h_ref: same layers from the frozen model (detached here).
        mask: ``Tensor[batch seq]``, 1 on the tokens to retain.
        relative: divide by the reference norm (scale-free) instead of the absolute L2.

    Returns:
        ``Tensor[batch]``; 0 for a sample with no masked token. The gradient at ``h' = h`` is 0
        (PyTorch's norm backward is defined there), not NaN.
    """
    layers = _check_states(h_new, h_ref, mask)
    dists = []
    for layer in layers:
        ref = h_ref[layer].detach().float()
        d = torch.linalg.vector_norm(h_new[layer].float() - ref, dim=-1)
        if relative:
            d = d / torch.linalg.vector_norm(ref, dim=-1).clamp(min=eps)
        dists.append(d)
    dist = torch.stack(dists)
    return _masked_mean(dist, mask.to(dist.device))


def _check_logits_labels(name: str, logits: Tensor, labels: Tensor) -> None:
    """One-line error unless ``logits`` is ``batch seq vocab`` and ``labels`` ``batch seq``, same batch and seq."""
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise MosrError(
            f"{name}: logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)} "
            "(expected batch seq vocab and batch seq)"
        )


def token_nll(logits: Float[Tensor, "batch seq vocab"], labels: Int[Tensor, "batch seq"]) -> PerSample:
    """Mean next-token negative log-likelihood per sample.

    Args:
        logits: ``Tensor[batch seq vocab]`` (position t predicts token t+1).
        labels: ``Tensor[batch seq]`` of token ids, ``-100`` where nothing is trained; the shift by
            one happens here, so pass labels aligned with ``input_ids``.

    Returns:
        ``Tensor[batch]`` (float32): mean over the sample's labelled tokens; 0 for a sample with none.
    """
    _check_logits_labels("token_nll", logits, labels)
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(logits.device)
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    count = (shift_labels != IGNORE_INDEX).sum(-1).to(nll.dtype)
    return nll.sum(-1) / count.clamp(min=1.0)


def first_token_nll(logits: Float[Tensor, "batch seq vocab"], labels: Int[Tensor, "batch seq"]) -> PerSample:
    """NLL of each sample's first labelled token: in an answer, the token that decides between answering and
    refusing, which :func:`token_nll` weighs 1 / (answer length).

    Args:
        logits, labels: as for :func:`token_nll` (labels aligned with ``input_ids``, ``-100`` where nothing is
            trained; the shift by one happens here).

    Returns:
        ``Tensor[batch]`` (float32); 0 for a sample with no labelled token.
    """
    _check_logits_labels("first_token_nll", logits, labels)
    shift_labels = labels[:, 1:].to(logits.device)
    trained = shift_labels != IGNORE_INDEX
    first = trained.int().argmax(-1)  # position of the first labelled token (0 when none)
    rows = torch.arange(labels.shape[0], device=logits.device)
    logp = logits[rows, first].float().log_softmax(-1)
    nll = -logp.gather(-1, shift_labels[rows, first].clamp(min=0)[:, None]).squeeze(-1)
    return torch.where(trained.any(-1), nll, torch.zeros_like(nll))


def weighted_mean(
    per_sample: PerSample, weights: Float[Tensor, " batch"] | None = None, check: bool = True
) -> Float[Tensor, ""]:
    """``Σ_i w_i L_i / Σ_i w_i`` (plain mean without weights). Shapes: ``batch, batch -> ()``.

    ``check=False`` skips the finite / non-negative test of the weights, which reads them on the host
    (a device sync); the training loop passes it because its weights are checked once, when its
    examples are built (:func:`mosr.train.data.build_data`).

    All-zero weights (e.g. a batch without erase samples) give 0 with a finite (zero) gradient.
    """
    if per_sample.dim() != 1:
        raise MosrError(f"weighted_mean expects per-sample losses (batch), got shape {tuple(per_sample.shape)}")
    if weights is None:
        if per_sample.numel() == 0:
            return per_sample.sum()
        return per_sample.mean()
    w = weights.to(device=per_sample.device, dtype=per_sample.dtype)
    if w.shape != per_sample.shape:
        raise MosrError(f"weights {tuple(w.shape)} do not match per-sample losses {tuple(per_sample.shape)}")
    if check and (bool((w < 0).any()) or not bool(torch.isfinite(w).all())):
        raise MosrError("sample weights must be finite and ≥ 0")
    total = w.sum()
    denom = torch.where(total > 0, total, torch.ones_like(total))
    # where w_i == 0 the sample is excluded even if its loss is not finite
    return torch.where(w > 0, w * per_sample, torch.zeros_like(per_sample)).sum() / denom


COEF_SCHEDULES: tuple[str, ...] = ("cb", "constant")


def coefficients(
    step: int, total_steps: int, alpha: float, schedule: str = "cb", retain_scale: float = 1.0
) -> tuple[float, float]:
    """The coefficients ``(c_r, c_e)`` of ``L = c_r·L_retain + c_e·L_erase`` at step ``s`` of ``S``.

    * ``cb`` (circuit breakers, docs/method.md §2): ``c_r = ρ·α·s/(2S)``, ``c_e = α·(1 − s/(2S))``: ``c_r``
      rises from 0 to ρ·α/2, ``c_e`` falls from α to α/2.
    * ``constant``: ``c_r = ρ·α``, ``c_e = α`` at every step (the retain term is on from step 0, when
      erasure escapes the stationary point ``h' = h``).

    ``ρ`` = ``retain_scale`` sets the retain / erase balance. Defined for every ``0 ≤ s ≤ S``.
    """
    if total_steps < 1:
        raise MosrError(f"total_steps must be ≥ 1, got {total_steps}")
    if not 0 <= step <= total_steps:
        raise MosrError(f"step {step} outside 0..{total_steps}")
    if schedule == "constant":
        return alpha * retain_scale, alpha
    if schedule != "cb":
        raise MosrError(f"unknown coefficient schedule {schedule!r}; use one of {COEF_SCHEDULES}")
    frac = step / (2 * total_steps)
    return alpha * frac * retain_scale, alpha * (1.0 - frac)
