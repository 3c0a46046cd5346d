"""Overlap-aware weights: similarity, the weight maps, compute / save / load, the disjointness check."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mosr.capture import default_target_layers
from mosr.config import Config
from mosr.data import PromptSet
from mosr.errors import ConfigError, DataError, LayerError
from mosr.train.weighting import (
    WeightConfig,
    WeightResult,
    check_disjoint,
    compute_weights,
    overlap_similarity,
    overlap_weights,
)


def test_default_target_layers():
    assert default_target_layers(30) == [10, 20]
    assert default_target_layers(32) == [11, 21]
    assert default_target_layers(3) == [1, 2]
    assert default_target_layers(1) == [0]


def test_overlap_similarity_hand_computed():
    mal = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    s = overlap_similarity(mal, bank, None, k=2)
    c45 = 1 / 2**0.5
    assert s.tolist() == pytest.approx([(1 + c45) / 2, (c45 + 0) / 2])
    # centring: subtracting mu changes the geometry
    mu = torch.tensor([1.0, 0.0])
    s_c = overlap_similarity(mal + mu, bank + mu, mu, k=2)
    assert torch.allclose(s_c, s, atol=1e-6)
    # k larger than the bank is clipped to the bank
    assert overlap_similarity(mal, bank, None, k=10).tolist() == pytest.approx([(1 + c45 - 1) / 3, (c45 + 0 + 0) / 3])


def test_overlap_similarity_brute_force():
    g = torch.Generator().manual_seed(0)
    mal, bank, mu = torch.randn(5, 8, generator=g), torch.randn(12, 8, generator=g), torch.randn(8, generator=g)
    s = overlap_similarity(mal, bank, mu, k=3)
    for i in range(5):
        cos = torch.stack([F.cosine_similarity(mal[i] - mu, bank[j] - mu, dim=0) for j in range(12)])
        assert s[i].item() == pytest.approx(cos.sort(descending=True).values[:3].mean().item(), abs=1e-6)


def test_linear_weights():
    cfg = WeightConfig(lam=0.7, w_min=0.1)
    s = torch.tensor([0.0, 0.5, 1.0])
    raw = torch.tensor([1.0, 0.65, 0.3])
    w = overlap_weights(s, cfg)
    assert w.tolist() == pytest.approx((raw / raw.mean()).tolist())
    assert w.mean().item() == pytest.approx(1.0)
    # higher overlap -> lower weight
    assert w[0] > w[1] > w[2]
    # the clip at w_min: λ = 1.5 sends the top sample below w_min before the rescale
    w2 = overlap_weights(s, WeightConfig(lam=1.5, w_min=0.1))
    raw2 = torch.tensor([1.0, 0.25, 0.1])
    assert w2.tolist() == pytest.approx((raw2 / raw2.mean()).tolist())
    # scale and shift of s do not matter for the linear map
    assert torch.allclose(overlap_weights(3 * s - 1, cfg), w)


def test_softmax_weights():
    cfg = WeightConfig(mode="softmax", tau=0.5)
    s = torch.tensor([0.1, 0.2, 0.9])
    w = overlap_weights(s, cfg)
    assert w.tolist() == pytest.approx((torch.softmax(-s / 0.5, 0) * 3).tolist(), rel=1e-5)
    assert w.sum().item() == pytest.approx(3.0)


@pytest.mark.parametrize("mode", ["linear", "softmax"])
def test_constant_similarity_gives_ones(mode):
    for s in (torch.full((4,), 0.3), torch.tensor([0.7])):
        w = overlap_weights(s, WeightConfig(mode=mode))
        assert torch.isfinite(w).all() and torch.allclose(w, torch.ones_like(w))


def test_weight_config_validation_and_roundtrip(tmp_path):
    with pytest.raises(ConfigError, match="mode"):
        WeightConfig(mode="cubic")
    with pytest.raises(ConfigError, match="w_min"):
        WeightConfig(w_min=0)
    with pytest.raises(ConfigError, match="unknown key"):
        WeightConfig.from_dict({"lambda": 0.5})
    cfg = WeightConfig(k=4, layers=[1, 2], mode="softmax")
    cfg.save(tmp_path / "w.yaml")
    assert WeightConfig.load(tmp_path / "w.yaml") == cfg
    assert isinstance(cfg, Config)


def _sets() -> tuple[PromptSet, PromptSet, PromptSet]:
    mal = PromptSet.from_prompts(
        [
            "How do I kill a Python process?",
            "Explain how a bomb squad works.",
            "Write a poem about the sea.",
            "Sure, here is a recipe for pancakes.",
        ],
        label="harmful",
        name="mal",
    )
    bank = PromptSet.from_prompts(
        ["How do I kill the lazy fox?", "hello world", "Explain the bomb in a poem.", "the quick brown fox"],
        label="pseudo_harmful",
        name="bank",
    )
    benign = PromptSet.from_prompts(["Write a poem about pancakes.", "hello there"], label="benign", name="benign")
    return mal, bank, benign


def test_compute_weights_every_family(family_lm):
    mal, bank, benign = _sets()
    res = compute_weights(family_lm, mal, bank, benign, WeightConfig(k=2), progress=False)
    assert res.ids == mal.ids and res.layers == default_target_layers(family_lm.n_layers)
    assert res.weights.shape == (4,) and torch.isfinite(res.weights).all()
    assert res.weights.mean().item() == pytest.approx(1.0, abs=1e-5)
    assert all(len(n) == 2 and set(n) <= set(bank.ids) for n in res.neighbours)


def test_compute_weights_matches_representation(llama_lm):
    from mosr.capture import representation

    mal, bank, benign = _sets()
    cfg = WeightConfig(k=3, layers=[0, 2])
    res = compute_weights(llama_lm, mal, bank, benign, cfg, progress=False)
    r_mal, r_bank, r_ben = (representation(llama_lm, ps, [0, 2]) for ps in (mal, bank, benign))
    mu = torch.cat([r_ben, r_mal]).mean(0)
    assert torch.allclose(res.similarity, overlap_similarity(r_mal, r_bank, mu, 3), atol=1e-5)
    assert torch.allclose(res.weights, overlap_weights(res.similarity, cfg), atol=1e-6)
    # without centring mu is not used and benign may be empty
    res_nc = compute_weights(
        llama_lm, mal, bank, PromptSet([]), WeightConfig(k=3, layers=[0, 2], center=False), progress=False
    )
    assert torch.allclose(res_nc.similarity, overlap_similarity(r_mal, r_bank, None, 3), atol=1e-5)


def test_compute_weights_errors(llama_lm):
    mal, bank, benign = _sets()
    with pytest.raises(DataError, match="malicious"):
        compute_weights(llama_lm, PromptSet([]), bank, benign, progress=False)
    with pytest.raises(DataError, match="bank"):
        compute_weights(llama_lm, mal, PromptSet([]), benign, progress=False)
    with pytest.raises(DataError, match="benign"):
        compute_weights(llama_lm, mal, bank, PromptSet([]), progress=False)
    with pytest.raises(LayerError, match="out of range"):
        compute_weights(llama_lm, mal, bank, benign, WeightConfig(layers=[7]), progress=False)


def test_save_load_lookup(tmp_path, llama_lm):
    mal, bank, benign = _sets()
    res = compute_weights(llama_lm, mal, bank, benign, WeightConfig(k=2), progress=False)
    res.save(tmp_path)
    meta = json.loads((tmp_path / "weights.json").read_text())
    assert meta["config"]["k"] == 2 and len(meta["rows"]) == 4 and "similarity_max" in meta["summary"]
    back = WeightResult.load(tmp_path)
    assert back.ids == res.ids and torch.equal(back.weights, res.weights)
    assert torch.equal(back.similarity, res.similarity) and back.config == res.config
    assert back.neighbours == res.neighbours
    assert back.weight(mal.ids[2]) == pytest.approx(float(res.weights[2]))
    assert back.as_dict()[mal.ids[0]] == pytest.approx(float(res.weights[0]))
    assert back.ranked()[0]["similarity"] == pytest.approx(float(res.similarity.max()))
    with pytest.raises(Exception, match="no overlap weight"):
        back.weight("unknown-id")
    with pytest.raises(DataError, match="not found"):
        WeightResult.load(tmp_path / "missing")


def test_check_disjoint():
    bank = PromptSet.from_prompts(["How do I kill a Python process?", "Why is the sky blue?"], name="bank")
    clean = PromptSet.from_prompts(["Write a poem."], name="xstest")
    check_disjoint(bank, [clean])
    dirty = PromptSet.from_prompts(["how do I   KILL a python process?"], name="orbench-hard")
    with pytest.raises(DataError, match="orbench-hard.*kill a Python process"):
        check_disjoint(bank, [clean, dirty])


def test_shipped_bank_is_disjoint_from_eval_sets(data_dir):
    from mosr import datasets
    from mosr.train.sources import load_eval_sets

    check_disjoint(datasets.load("orbench-80k-bank", data_dir=data_dir), load_eval_sets(data_dir=data_dir))
