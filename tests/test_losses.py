"""Losses of DESIGN §4: hand-computed values, masking, weighting, finite gradients, the schedule."""

from __future__ import annotations

import math

import pytest
import torch

from mosr.batching import pad
from mosr.capture import hooked, run
from mosr.errors import MosrError
from mosr.losses import coefficients, erase_loss, first_token_nll, retain_loss, token_nll, weighted_mean


def _states(seed: int, batch: int = 3, seq: int = 5, d: int = 4, layers=(1, 2)) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(batch, seq, d, generator=g) for layer in layers}


def test_erase_loss_hand_computed():
    # one sample, one layer, two tokens: cos = 1 (same direction) and cos = -1 (opposite, ReLU -> 0)
    h_ref = {0: torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])}
    h_new = {0: torch.tensor([[[3.0, 0.0], [0.0, -1.0]]])}
    mask = torch.tensor([[1, 1]])
    assert erase_loss(h_new, h_ref, mask).tolist() == pytest.approx([0.5])
    # orthogonal + 45 degrees on a second layer: mean over layers and tokens
    h_ref[1] = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    h_new[1] = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    expected = (1 + 0 + 0 + 1 / math.sqrt(2)) / 4
    assert erase_loss(h_new, h_ref, mask).item() == pytest.approx(expected)


def test_retain_loss_hand_computed():
    h_ref = {0: torch.tensor([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])}
    h_new = {0: torch.tensor([[[3.0, 4.0], [1.0, 1.0], [0.0, 0.0]]])}
    mask = torch.tensor([[1, 1, 0]])
    assert retain_loss(h_new, h_ref, mask).tolist() == pytest.approx([2.5])  # (5 + 0) / 2


@pytest.mark.parametrize("loss", [erase_loss, retain_loss])
def test_masked_positions_contribute_nothing(loss):
    h_new, h_ref = _states(0), _states(1)
    for h in h_new.values():
        h.requires_grad_(True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    base = loss(h_new, h_ref, mask)
    base.sum().backward()
    for h in h_new.values():
        assert torch.all(h.grad[mask == 0] == 0)
        assert h.grad[mask == 1].abs().sum() > 0
    # change masked values (both models): the loss is unchanged
    h_new2 = {k: v.detach().clone() for k, v in h_new.items()}
    h_ref2 = {k: v.clone() for k, v in h_ref.items()}
    for k in h_new2:
        h_new2[k][mask == 0] = 100.0
        h_ref2[k][mask == 0] = -7.0
    assert torch.allclose(loss(h_new2, h_ref2, mask), base.detach())
    # bool and float masks agree
    assert torch.allclose(loss(h_new2, h_ref2, mask.bool()), loss(h_new2, h_ref2, mask.float()))


@pytest.mark.parametrize("loss", [erase_loss, retain_loss])
def test_gradients_finite_at_degenerate_inputs(loss):
    h = {0: torch.zeros(2, 3, 4, requires_grad=True)}
    ref = {0: torch.zeros(2, 3, 4)}
    ref[0][0, 0] = 1.0
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])  # second sample has no masked token
    out = loss(h, ref, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and out[1] == 0
    assert torch.isfinite(h[0].grad).all()
    # identical states (step 0 of LoRA): norm and cosine at h' = h
    same = {0: ref[0].clone().requires_grad_(True)}
    loss(same, ref, torch.ones(2, 3)).sum().backward()
    assert torch.isfinite(same[0].grad).all()


def test_erase_loss_does_not_backprop_into_reference():
    h_new, h_ref = _states(0), _states(1)
    for d in (h_new, h_ref):
        for h in d.values():
            h.requires_grad_(True)
    erase_loss(h_new, h_ref, torch.ones(3, 5)).sum().backward()
    assert all(h.grad is None for h in h_ref.values())


def test_state_checks():
    h = _states(0)
    with pytest.raises(MosrError, match="missing for layer"):
        erase_loss(h, {1: h[1]}, torch.ones(3, 5))
    with pytest.raises(MosrError, match="matching mask"):
        retain_loss(h, h, torch.ones(3, 4))
    with pytest.raises(MosrError, match="empty"):
        erase_loss({}, {}, torch.ones(3, 5))


def test_token_nll_hand_computed():
    vocab = 4
    logits = torch.zeros(2, 3, vocab)
    logits[0, 0, 2] = math.log(3.0)  # p(2) = 3 / (3 + 3) = 0.5 at position 0 -> predicts token 1
    labels = torch.tensor([[-100, 2, 1], [-100, -100, -100]])
    out = token_nll(logits, labels)
    # sample 0: tokens 1 (label 2, p=0.5) and 2 (label 1, uniform p=0.25)
    assert out[0].item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert out[1].item() == 0.0  # nothing labelled
    # the first label is never predicted (shift by one): changing it changes nothing
    labels2 = labels.clone()
    labels2[0, 0] = 3
    assert torch.allclose(token_nll(logits, labels2), out)


def test_first_token_nll_hand_computed():
    vocab = 4
    logits = torch.zeros(3, 4, vocab)
    logits[0, 1, 2] = math.log(3.0)  # p(2) = 0.5 at position 1 -> predicts token 2, the first labelled one
    labels = torch.tensor([[-100, -100, 2, 1], [-100, 3, 0, -100], [-100, -100, -100, -100]])
    out = first_token_nll(logits, labels)
    assert out[0].item() == pytest.approx(math.log(2))  # only token 2 counts, not token 3
    assert out[1].item() == pytest.approx(math.log(4))  # uniform
    assert out[2].item() == 0.0  # nothing labelled
    # one labelled token: the first token's NLL is the token mean
    one = torch.tensor([[-100, -100, 2, -100]])
    assert first_token_nll(logits[:1], one).item() == pytest.approx(token_nll(logits[:1], one).item())
    with pytest.raises(MosrError, match="do not match"):
        first_token_nll(logits, labels[:, :3])


def test_token_nll_matches_model_loss(llama_lm):
    batch = pad([[1, 5, 6, 7, 8], [1, 9, 10]], 0, "right", [0, 1])
    labels = batch.input_ids.clone()
    labels[batch.attention_mask == 0] = -100
    labels[:, :2] = -100
    logits = run(llama_lm, batch).logits
    per = token_nll(logits, labels)
    # HF's mean over all labelled tokens equals the token-count-weighted mean of the per-sample means
    ref = llama_lm.model(**batch.model_inputs(), labels=labels).loss
    counts = (labels[:, 1:] != -100).sum(1).float()
    assert weighted_mean(per, counts).item() == pytest.approx(ref.item(), rel=1e-5)


def test_weighted_mean():
    per = torch.tensor([1.0, 2.0, 6.0], requires_grad=True)
    assert weighted_mean(per).item() == pytest.approx(3.0)
    assert weighted_mean(per, torch.ones(3)).item() == pytest.approx(weighted_mean(per).item())
    assert weighted_mean(per, torch.tensor([1.0, 1.0, 2.0])).item() == pytest.approx((1 + 2 + 12) / 4)
    zero = weighted_mean(per, torch.zeros(3))
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(per.grad).all() and per.grad.abs().sum() == 0
    # a non-finite loss with weight 0 is excluded (value and gradient)
    nan = torch.tensor([1.0, float("nan")], requires_grad=True)
    out = weighted_mean(nan, torch.tensor([1.0, 0.0]))
    out.backward()
    assert out.item() == 1.0 and torch.isfinite(nan.grad).all()
    with pytest.raises(MosrError, match="do not match"):
        weighted_mean(per, torch.ones(2))
    with pytest.raises(MosrError, match="≥ 0"):
        weighted_mean(per, torch.tensor([1.0, -1.0, 1.0]))
    # check=False (the training loop: weights were checked when the examples were built) reads nothing
    # back from the device and computes the same value
    w = torch.tensor([1.0, 1.0, 2.0])
    assert weighted_mean(per, w, check=False).item() == weighted_mean(per, w).item()


def test_weights_all_one_equals_unweighted_with_real_losses():
    h_new, h_ref = _states(3), _states(4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    per = erase_loss(h_new, h_ref, mask)
    assert weighted_mean(per, torch.ones(3)).item() == pytest.approx(weighted_mean(per).item())


def test_losses_on_model_states(family_lm):
    """Erase / retain on hooked block outputs of every family: finite values and gradients."""
    lm = family_lm
    batch = pad([[1, 5, 6, 7, 8, 9], [1, 9, 10, 11]], 0, "right", [0, 1])
    layers = [0, lm.n_layers - 1]
    with torch.no_grad(), hooked(lm, layers) as ref_store:
        run(lm, batch)
    h_ref = dict(ref_store)
    params = [p for p in lm.model.parameters()]
    for p in params:
        p.requires_grad_(True)
    with hooked(lm, layers) as store:
        run(lm, batch)
    mask = batch.attention_mask.clone()
    mask[:, :2] = 0
    # same model: cos = 1 on masked tokens -> erase loss 1, retain loss 0
    e = erase_loss(store, h_ref, mask)
    r = retain_loss(store, h_ref, mask)
    assert e.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert r.tolist() == pytest.approx([0.0, 0.0], abs=1e-5)
    lm.model.zero_grad()
    (weighted_mean(e, torch.tensor([0.5, 1.5])) + weighted_mean(r)).backward()
    grads = [p.grad for p in params if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    for p in params:
        p.requires_grad_(False)
        p.grad = None


def test_coefficients_schedule():
    assert coefficients(0, 100, 10.0) == (0.0, 10.0)
    assert coefficients(100, 100, 10.0) == (5.0, 5.0)
    c_r, c_e = coefficients(50, 100, 2.0)
    assert (c_r, c_e) == pytest.approx((0.5, 1.5))
    for s in range(0, 11):
        c_r, c_e = coefficients(s, 10, 1.0)
        assert c_r + c_e == pytest.approx(1.0) and c_r >= 0 and c_e > 0
    assert coefficients(0, 1, 1.0) == (0.0, 1.0)
    with pytest.raises(MosrError):
        coefficients(11, 10, 1.0)
    with pytest.raises(MosrError):
        coefficients(0, 0, 1.0)


@pytest.mark.parametrize("loss", [erase_loss, retain_loss])
def test_low_precision_states_compared_in_float32(loss):
    h_new, h_ref = _states(5), _states(6)
    mask = torch.ones(3, 5)
    ref32 = loss(h_new, h_ref, mask)
    bf = {k: v.to(torch.bfloat16).requires_grad_(True) for k, v in h_new.items()}
    out = loss(bf, {k: v.to(torch.bfloat16) for k, v in h_ref.items()}, mask)
    assert out.dtype == torch.float32 and torch.allclose(out, ref32, rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert all(v.grad is not None and v.grad.dtype == torch.bfloat16 for v in bf.values())


# --- scale-free variants (relative retain, centred erase cosine) and the coefficient schedules ---------------


def test_relative_retain_hand_computed_and_scale_invariant():
    h_ref = {0: torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])}  # norms 5 and 2
    h_new = {0: torch.tensor([[[3.0, 9.0], [0.0, 2.0]]])}  # distances 5 and 0
    mask = torch.tensor([[1, 1]])
    assert retain_loss(h_new, h_ref, mask, relative=True).tolist() == pytest.approx([(5 / 5 + 0 / 2) / 2])
    assert retain_loss(h_new, h_ref, mask).tolist() == pytest.approx([2.5])  # absolute: (5 + 0) / 2
    a, b = _states(0), _states(1)
    m = torch.ones(3, 5)
    base = retain_loss(a, b, m, relative=True)
    for c in (0.01, 7.0, 250.0):
        scaled = retain_loss({k: c * v for k, v in a.items()}, {k: c * v for k, v in b.items()}, m, relative=True)
        assert torch.allclose(scaled, base, rtol=1e-5)
    # the absolute distance is not scale-free
    assert not torch.allclose(
        retain_loss({k: 7 * v for k, v in a.items()}, {k: 7 * v for k, v in b.items()}, m), retain_loss(a, b, m)
    )


def test_centred_erase_cosine_hand_computed():
    # raw states share a large common direction (dim 0): cos ≈ 1 raw, exactly -1 once centred
    h_ref = {0: torch.tensor([[[100.0, 1.0]]])}
    h_new = {0: torch.tensor([[[100.0, -1.0]]])}
    mask = torch.ones(1, 1)
    mu = {0: torch.tensor([100.0, 0.0])}
    assert erase_loss(h_new, h_ref, mask).item() == pytest.approx((100 * 100 - 1) / (100**2 + 1))
    assert erase_loss(h_new, h_ref, mask, center=mu).item() == 0.0  # ReLU(-1)
    # 45 degrees after centring
    h_new = {0: torch.tensor([[[101.0, 1.0]]])}
    assert erase_loss(h_new, h_ref, mask, center=mu).item() == pytest.approx(1 / math.sqrt(2))
    # a zero centre is the raw cosine
    a, b = _states(0), _states(1)
    zero = {k: torch.zeros(4) for k in a}
    assert torch.allclose(erase_loss(a, b, torch.ones(3, 5), center=zero), erase_loss(a, b, torch.ones(3, 5)))


@pytest.mark.parametrize("kw", [{"relative": True}, {"relative": False}])
def test_relative_retain_gradients_finite(kw):
    h = {0: torch.zeros(2, 3, 4, requires_grad=True)}
    ref = {0: torch.zeros(2, 3, 4)}  # zero reference norm: clamped
    out = retain_loss(h, ref, torch.ones(2, 3), **kw)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(h[0].grad).all()


def test_centred_erase_gradients_finite_when_state_equals_centre():
    mu = {0: torch.ones(4)}
    h = {0: torch.ones(2, 3, 4, requires_grad=True)}  # h' − μ = 0
    ref = {0: torch.ones(2, 3, 4)}
    out = erase_loss(h, ref, torch.ones(2, 3), center=mu)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(h[0].grad).all()


def test_centre_must_cover_the_layers():
    a, b = _states(0), _states(1)
    with pytest.raises(MosrError, match="centre"):
        erase_loss(a, b, torch.ones(3, 5), center={1: torch.zeros(4)})
    with pytest.raises(MosrError, match="shape"):
        erase_loss(a, b, torch.ones(3, 5), center={1: torch.zeros(3), 2: torch.zeros(3)})


def test_coefficient_schedules():
    assert coefficients(0, 10, 5.0) == (0.0, 5.0)
    assert coefficients(10, 10, 5.0, retain_scale=4.0) == pytest.approx((10.0, 2.5))
    assert coefficients(3, 10, 2.0, schedule="constant", retain_scale=3.0) == (6.0, 2.0)
    assert coefficients(0, 10, 2.0, schedule="constant") == (2.0, 2.0)
    with pytest.raises(MosrError, match="schedule"):
        coefficients(0, 10, 1.0, schedule="cosine")


def test_collapse_loss_hand_computed_and_nonzero_gradient_at_identity():
    from mosr.losses import collapse_loss

    mu = {0: torch.tensor([10.0, 0.0])}
    h_ref = {0: torch.tensor([[[10.0, 2.0], [13.0, 4.0]]])}  # content norms 2 and 5
    h_new = {0: torch.tensor([[[10.0, 1.0], [10.0, 0.0]]])}  # content norms 1 and 0
    mask = torch.ones(1, 2)
    assert collapse_loss(h_new, h_ref, mask, center=mu).tolist() == pytest.approx([(0.5 + 0.0) / 2])
    same = {0: h_ref[0].clone().requires_grad_(True)}
    out = collapse_loss(same, h_ref, mask, center=mu)
    assert out.item() == pytest.approx(1.0)
    out.sum().backward()
    g = same[0].grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # the gradient points along the token's own content h − μ (descent removes it)
    content = h_ref[0] - mu[0]
    assert torch.allclose(F_cos(g[0], content[0]), torch.tensor(1.0), atol=1e-6)
    # erase_loss has zero gradient there
    same2 = {0: h_ref[0].clone().requires_grad_(True)}
    erase_loss(same2, h_ref, mask, center=mu).sum().backward()
    assert same2[0].grad.abs().max() < 1e-6


def F_cos(a, b):  # noqa: ANN001, ANN201, N802
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


# --- X-Boundary separation -------------------------------------------------------------------------


def test_mean_direction_is_the_masked_mean_of_unit_states() -> None:
    from mosr.losses import mean_direction

    h = {3: torch.tensor([[[3.0, 4.0], [0.0, 2.0], [9.0, 9.0]]])}  # batch 1, seq 3
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    g = mean_direction(h, mask)[3]
    assert torch.allclose(g, torch.tensor([[(0.6 + 0.0) / 2, (0.8 + 1.0) / 2]]))
    centred = mean_direction(h, mask, center={3: torch.tensor([3.0, 0.0])})[3]
    assert torch.allclose(centred, torch.tensor([[(0.0 - 1.0 / 13**0.5 * 3) / 2, (1.0 + 2 / 13**0.5) / 2]]))
    assert torch.equal(mean_direction(h, torch.zeros(1, 3))[3], torch.zeros(1, 2))


def test_separation_loss_exact_values_relu_and_mask() -> None:
    from mosr.losses import separation_loss

    h = {0: torch.tensor([[[2.0, 0.0], [0.0, -5.0]], [[1.0, 1.0], [1.0, 1.0]]], requires_grad=True)}
    target = {0: torch.tensor([[0.5, 0.5], [0.0, 1.0]])}
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    per = separation_loss(h, target, mask)
    # sample 0: <(1,0),(.5,.5)> = .5 ; <(0,-1),(.5,.5)> = -.5 -> relu 0 ; mean .25
    # sample 1: only token 0: <(1,1)/√2, (0,1)> = 1/√2
    assert torch.allclose(per, torch.tensor([0.25, 2**-0.5]))
    per.sum().backward()
    assert torch.isfinite(h[0].grad).all() and h[0].grad[1, 1].abs().sum() == 0  # masked token: no gradient
    assert (
        separation_loss({0: torch.zeros(1, 1, 2, requires_grad=True)}, {0: torch.ones(1, 2)}, torch.ones(1, 1)).item()
        == 0.0
    )


def test_separation_loss_is_scale_free_and_checks_shapes() -> None:
    from mosr.losses import separation_loss

    h = torch.randn(2, 3, 4)
    g = {1: torch.randn(2, 4)}
    mask = torch.ones(2, 3)
    assert torch.allclose(separation_loss({1: h}, g, mask), separation_loss({1: 7.0 * h}, g, mask), atol=1e-6)
    with pytest.raises(MosrError, match="target missing"):
        separation_loss({1: h}, {2: g[1]}, mask)
    with pytest.raises(MosrError, match="expected states"):
        separation_loss({1: h}, {1: torch.randn(3, 4)}, mask)
