"""The training objective of one micro-batch, per method family (docs/method.md §6; the per-sample terms are
:mod:`mosr.losses`).

Erasure family (``rr``, ``mosr``, ``mosr_no_weight``, ``mosr_no_aug``), :func:`erasure_loss`::

    L = c_r(s)·L_retain + c_e(s)·Σ_i w_i·L_erase(i) / Σ_i w_i + β(s)·L_aug
    cb schedule: c_r = ρ·α·s/(2S), c_e = α·(1 − s/(2S)); constant: c_r = ρ·α, c_e = α
    β(s) = β (constant) or β·s/S (ramp); w_i = 1 without weighting; no L_aug without augmentation
    L_erase(i) = erase_loss (+ γ·collapse_loss) over the target layers and the response tokens (``erase_tokens:
        request_response``: the request's tokens too, as circuit breakers' code, less the template's shared head)
    L_retain = mean over retain rows (attention or response tokens) and, with ``aug_in_retain``, the
        augmented refusal rows (their response tokens) of retain_loss over the retain layers
    L_aug = mean over refusal rows of token_nll (the refusal tokens; the harmful prefix is not trained)

X-Boundary (``xboundary``) adds its separation term to the erase side and may start with a warm-up:

    L = c_r(s)·L_retain + c_e(s)·(L_erase + σ·L_sep),  c_r = 0 for s < retain_warmup
    L_sep = mean over boundary rows of separation_loss on their prompt tokens, against the mean unit
        frozen state of the retain example with the same prompt (its compliant answer)

SFT family (``sft``, ``psft``, ``trigger_sft``), :func:`sft_loss`::

    L = α_sft·NLL(harmful → refusal) + (1 − α_sft)·NLL(benign → answer)

Inputs: ``out`` is what :class:`~mosr.train.lora.TrainForward` returned (``<group>_h`` / ``<group>_ref``
``batch layer seq d_model`` over ``hooked_layers``, ``logits_logits`` ``batch kept vocab``, the last positions)
and ``inp`` the :class:`~mosr.train.batches.StepInputs` it ran on. Each function returns the scalar loss and its parts
as floats (the row of ``log.jsonl``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mosr.errors import MosrError
from mosr.losses import (
    coefficients,
    collapse_loss,
    erase_loss,
    first_token_nll,
    retain_loss,
    separation_loss,
    token_nll,
    weighted_mean,
)
from mosr.train.batches import StepInputs
from mosr.train.config import TrainConfig
from mosr.train.weighting import WeightResult


def compute_loss(
    cfg: TrainConfig,
    out: Mapping[str, Tensor],
    inp: StepInputs,
    hooked_layers: Sequence[int],
    weights: WeightResult | None,
    step: int,
    center: Mapping[int, Tensor] | None = None,
    targets: Mapping[str, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor | float]]:
    """The method's loss for one micro-batch (0-based optimizer ``step``), and its parts for the log (detached
    0-dim tensors on the device, and floats; the loop reads them once per optimizer step).

    ``weights``: the run's overlap-aware weights (None: unweighted erase mean); the per-example values
    were looked up by id when the examples were built and travel in the ``weight`` tensor.
    ``center``: the frozen mean state per target layer (``layer -> Tensor[d_model]``), required when
    ``cfg.erase_similarity == "centered"``. ``targets``: xboundary's separation target per boundary
    example id (``Tensor[target_layer d_model]``)."""
    if not cfg.erasure:
        return sft_loss(cfg, out, inp)
    return erasure_loss(cfg, out, inp, hooked_layers, weights, step, center, targets)


def sft_loss(cfg: TrainConfig, out: Mapping[str, Tensor], inp: StepInputs) -> tuple[Tensor, dict[str, Tensor | float]]:
    """``α_sft·NLL(refusal rows) + (1 − α_sft)·NLL(sft rows)``; parts ``nll_refusal``, ``nll_sft``. Each row's
    NLL is its token mean plus ``sft_first_token_weight`` times its first answer token's NLL."""
    zero = _zero(out)
    w = cfg.sft_first_token_weight
    l_ref, l_sft = _nll(out, inp, "refusal", zero, w), _nll(out, inp, "sft", zero, w)
    loss = cfg.sft_alpha * l_ref + (1 - cfg.sft_alpha) * l_sft
    return loss, {"nll_refusal": _f(l_ref), "nll_sft": _f(l_sft)}


def erasure_loss(
    cfg: TrainConfig,
    out: Mapping[str, Tensor],
    inp: StepInputs,
    hooked_layers: Sequence[int],
    weights: WeightResult | None,
    step: int,
    center: Mapping[int, Tensor] | None = None,
    targets: Mapping[str, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor | float]]:
    """``c_r·L_retain + c_e·(L_erase + σ·L_sep) + β·L_aug`` (module docstring); parts ``erase``, ``retain``,
    ``aug``, ``sep``, ``c_r``, ``c_e``, ``beta``. A kind absent from the micro-batch contributes 0."""
    assert cfg.target_layers is not None and cfg.retain_layers is not None
    c_r, c_e = coefficients(step, cfg.steps, cfg.alpha, cfg.coef_schedule, cfg.retain_scale)
    if step < cfg.retain_warmup:
        c_r = 0.0
    if cfg.erase_similarity == "centered" and center is None:
        raise MosrError("erase_similarity='centered' needs the frozen mean states (center)")
    mu = center if cfg.erase_similarity == "centered" else None
    relative = cfg.retain_distance == "relative"
    zero = _zero(out)
    l_erase = l_retain = l_aug = l_sep = zero
    if "erase" in inp.rows:
        h, ref, batch, rows = _pair(out, inp, "erase", hooked_layers, cfg.target_layers)
        mask = batch["content_mask" if cfg.erase_tokens == "request_response" else "response_mask"][rows]
        per = erase_loss(h, ref, mask, center=mu)
        if cfg.erase_collapse > 0:
            per = per + cfg.erase_collapse * collapse_loss(h, ref, mask, center=mu)
        # per-example weights were looked up by id once, when the examples were built
        l_erase = weighted_mean(per, batch["weight"][rows] if weights is not None else None, check=False)
    if "boundary" in inp.rows:
        if targets is None:
            raise MosrError("boundary rows need their separation targets (xboundary)")
        h, _, batch, rows = _pair(out, inp, "boundary", hooked_layers, cfg.target_layers)
        prompt = batch["attention_mask"][rows] * (1 - batch["response_mask"][rows])
        g = torch.stack([targets[i] for i in inp.ids["boundary"]])  # batch target_layer d_model
        l_sep = separation_loss(
            h, {layer: g[:, j] for j, layer in enumerate(cfg.target_layers)}, prompt, center=mu
        ).mean()
    retain_terms: list[Tensor] = []  # per-sample retain losses, ``batch``
    if "retain" in inp.rows:
        h, ref, batch, rows = _pair(out, inp, "retain", hooked_layers, cfg.retain_layers)
        mask = batch["attention_mask" if cfg.retain_tokens == "all" else "response_mask"][rows]
        retain_terms.append(retain_loss(h, ref, mask, relative=relative))
    if "refusal" in inp.rows:
        l_aug = _nll(out, inp, "refusal", zero)
        if cfg.aug_in_retain:
            h, ref, batch, rows = _pair(out, inp, "refusal", hooked_layers, cfg.retain_layers)
            retain_terms.append(retain_loss(h, ref, batch["response_mask"][rows], relative=relative))
    if retain_terms:
        l_retain = torch.cat(retain_terms).mean()
    beta = cfg.augment.beta * (step / cfg.steps if cfg.aug_schedule == "ramp" else 1.0)
    loss = c_r * l_retain + c_e * (l_erase + cfg.separation_scale * l_sep) + beta * l_aug
    parts: dict[str, Tensor | float] = {
        "erase": _f(l_erase),
        "retain": _f(l_retain),
        "aug": _f(l_aug),
        "c_r": float(c_r),
        "c_e": float(c_e),
        "beta": float(beta),
    }
    if "boundary" in inp.rows:
        parts["sep"] = _f(l_sep)
    return loss, parts


def _zero(out: Mapping[str, Tensor]) -> Tensor:
    """A scalar 0 on the outputs' device and graph (the value of an absent term)."""
    return next(iter(out.values())).sum() * 0.0


def _select(inp: StepInputs, kind: str) -> tuple[dict[str, Tensor], str, list[int]]:
    """(the group's collated tensors, the group name, the rows of ``kind`` in it)."""
    group, rows = inp.rows[kind]
    batch = inp.hidden if group == "hidden" else inp.logits
    assert batch is not None
    return batch, group, rows


def _nll(out: Mapping[str, Tensor], inp: StepInputs, kind: str, zero: Tensor, first_weight: float = 0.0) -> Tensor:
    """Mean per-sample NLL of the ``kind`` rows (``zero`` when the micro-batch has none), plus ``first_weight``
    times the NLL of each row's first labelled token."""
    if kind not in inp.rows:
        return zero
    batch, group, rows = _select(inp, kind)
    logits, labels = out[f"{group}_logits"][rows], batch["labels"][rows]
    # the logits are those of the last positions only (TrainForward's logits_span)
    labels = labels[:, labels.shape[1] - logits.shape[1] :]
    per = token_nll(logits, labels)
    if first_weight:
        per = per + first_weight * first_token_nll(logits, labels)
    return weighted_mean(per)


def _pair(
    out: Mapping[str, Tensor], inp: StepInputs, kind: str, hooked_layers: Sequence[int], layers: Sequence[int]
) -> tuple[dict[int, Tensor], dict[int, Tensor], dict[str, Tensor], list[int]]:
    """Trained and reference states (``layer -> Tensor[batch seq d_model]``) of the ``kind`` rows at
    ``layers``, with the group's tensors and the rows."""
    batch, group, rows = _select(inp, kind)
    return (
        _states(out[f"{group}_h"], rows, hooked_layers, layers),
        _states(out[f"{group}_ref"], rows, hooked_layers, layers),
        batch,
        rows,
    )


def _states(h: Tensor, rows: list[int], layers: Sequence[int], wanted: Sequence[int]) -> dict[int, Tensor]:
    """``layer -> Tensor[batch seq d_model]`` for ``rows`` of stacked states ``h`` (``batch layer seq
    d_model``, layer axis ordered as ``layers``)."""
    pos = {layer: j for j, layer in enumerate(layers)}
    sub = h[rows]
    return {layer: sub[:, pos[layer]] for layer in wanted}


def _f(x: Tensor) -> Tensor:
    """A loss part for the log, kept on its device: the loop reads all parts at once, one host sync per
    optimizer step."""
    return x.detach()
