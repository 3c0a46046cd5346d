"""Per-layer probes: fitting, held-out metrics, boundary score, persistence, statistics, errors."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from mosr.capture import capture
from mosr.datasets import load as load_set
from mosr.errors import ConfigError, DataError, LayerError, MosrError
from mosr.represent.probe import ProbeConfig, ProbeSet, binary_labels, evaluate_probes
from mosr.stats import auroc, auroc_ci, wilson


def synthetic(n: int = 120, layers: int = 4, d: int = 16, informative: int = 2, shift: float = 3.0, seed: int = 0):
    """acts[prompt layer d] where only layer ``informative`` separates the classes."""
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(n, layers, d, generator=g)
    y = torch.arange(n) % 2
    acts[y == 1, informative, 0] += shift
    return acts, ["harmful" if v else "benign" for v in y.tolist()]


def test_fit_finds_informative_layer_and_scores():
    acts, labels = synthetic()
    ev = evaluate_probes(acts, labels, config=ProbeConfig(Cs=(0.01, 1.0), cv=3), progress=False)
    assert ev.best_layer == 2
    acc, auc = ev.metric("accuracy"), ev.metric("auroc")
    assert acc[2] > 0.85 and auc[2] > 0.9
    assert max(np.delete(auc, 2)) < 0.8  # noise layers stay near chance
    for m in ev.metrics:
        assert m.accuracy_ci[0] <= m.accuracy <= m.accuracy_ci[1]
        assert m.auroc_ci[0] <= m.auroc <= m.auroc_ci[1]
        assert m.C in (0.01, 1.0)
    assert len(ev.train_index) + len(ev.test_index) == len(labels)
    assert not set(ev.train_index) & set(ev.test_index)


def test_proba_matches_sklearn_pipeline():
    from sklearn.linear_model import LogisticRegression

    acts, labels = synthetic(seed=1)
    probes = ProbeSet.fit(acts, labels, config=ProbeConfig(Cs=(0.1,), cv=2), progress=False)
    x = acts[:, 2].double().numpy()
    z = (x - x.mean(0)) / x.std(0)
    ref = LogisticRegression(C=0.1, max_iter=1000).fit(z, binary_labels(labels)).predict_proba(z)[:, 1]
    np.testing.assert_allclose(probes.proba(acts, layer=2).numpy(), ref, atol=2e-3)
    assert probes.proba(acts).shape == (len(labels), 4)


def test_boundary_score_consistency():
    acts, labels = synthetic()
    probes = ProbeSet.fit(acts, labels, config=ProbeConfig(Cs=(0.1,), cv=2), progress=False)
    b = probes.boundary_score(acts)
    assert b.layer == probes.best_layer == 2
    torch.testing.assert_close(b.prob, torch.sigmoid(b.logit))
    torch.testing.assert_close(b.margin, b.logit / probes.coef[2].norm())
    b2 = probes.boundary_score(acts[:, 2], layer=2)  # a single layer's representation
    torch.testing.assert_close(b2.logit, b.logit)
    assert probes.boundary_score(acts, layer=-1).layer == 3
    frac = probes.fraction_malicious(acts)  # keyed by model layer, not by slot
    assert list(frac) == probes.layers
    assert frac[probes.layers[2]] == pytest.approx(float(probes.predict(acts, probes.layers[2]).float().mean()))


def test_save_load_roundtrip_without_pickle(tmp_path):
    acts, labels = synthetic()
    probes = ProbeSet.fit(acts, labels, layers=[5, 6, 7, 8], config=ProbeConfig(Cs=(0.1,), cv=2), progress=False)
    probes.save(tmp_path / "p")
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["probes.json", "probes.safetensors"]
    loaded = ProbeSet.load(tmp_path / "p")
    assert loaded.layers == [5, 6, 7, 8] and loaded.best_layer == 7
    torch.testing.assert_close(loaded.proba(acts), probes.proba(acts))
    frac = loaded.fraction_malicious(acts)  # keyed by layer number: 7 is the third probe, not slot 7
    assert list(frac) == [5, 6, 7, 8] and frac[7] == pytest.approx(float(loaded.predict(acts, 7).float().mean()))
    assert loaded.config == probes.config
    with pytest.raises(LayerError, match="out of range"):
        loaded.boundary_score(acts, layer=2)
    with pytest.raises(DataError, match="no saved probes"):
        ProbeSet.load(tmp_path)


def test_clear_errors():
    acts, labels = synthetic(n=20)
    with pytest.raises(DataError, match="only harmful"):
        ProbeSet.fit(acts, ["harmful"] * 20, progress=False)
    with pytest.raises(DataError, match="3-fold"):
        ProbeSet.fit(acts[:4], ["harmful", "benign", "harmful", "benign"], progress=False)
    with pytest.raises(DataError, match="pseudo_harmful"):
        ProbeSet.fit(acts, ["pseudo_harmful"] * 10 + ["benign"] * 10, progress=False)
    with pytest.raises(DataError, match="labels"):
        ProbeSet.fit(acts, labels[:-1], progress=False)
    with pytest.raises(MosrError, match="prompt layer d_model"):
        ProbeSet.fit(acts[:, 0], labels, progress=False)
    probes = ProbeSet.fit(acts, labels, config=ProbeConfig(Cs=(0.1,), cv=2), progress=False)
    with pytest.raises(LayerError, match="layer 9 out of range"):
        probes.boundary_score(acts, layer=9)
    with pytest.raises(LayerError, match="needs layer="):
        probes.proba(acts[:, 0])
    with pytest.raises(LayerError, match="layers"):
        probes.proba(acts[:, :2])
    with pytest.raises(ConfigError, match="cv must be"):  # config validation raises ConfigError, like every config
        ProbeConfig(cv=1)


def test_wilson_interval_known_values():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(50, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_auroc_and_delong_against_brute_force():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80).astype(bool)
    s = rng.normal(size=80) + y * 0.8
    s[:10] = np.round(s[:10])  # ties
    auc, lo, hi = auroc_ci(s, y)
    assert auc == pytest.approx(roc_auc_score(y, s))
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])
    var = psi.mean(1).var(ddof=1) / len(pos) + psi.mean(0).var(ddof=1) / len(neg)
    assert hi - auc == pytest.approx(1.959964 * math.sqrt(var), rel=1e-6)
    assert auroc([0.1, 0.9], [False, True]) == 1.0
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_probes_on_tiny_families_learn_a_signal_and_not_noise(family_lm):
    """Real captured states of every family plus a harmful-only shift at layer 1: the probes must find that
    layer and separate the held-out prompts there; with the labels shuffled they must stay near chance."""
    benign, harmful = load_set("demo-benign", n=60), load_set("demo-harmful", n=60)
    acts = capture(family_lm, benign + harmful, layers="all", progress=False)
    labels = benign.labels + harmful.labels
    direction = torch.randn(acts.shape[-1], generator=torch.Generator().manual_seed(0))
    signal = acts.clone()
    signal[60:, 1] += direction / direction.norm() * acts[:, 1].norm(dim=-1).mean() * 0.5
    config = ProbeConfig(Cs=(0.1, 1.0), cv=2)
    ev = evaluate_probes(signal, labels, config=config, progress=False)
    assert ev.best_layer == 1 and ev.metric("accuracy")[1] >= 0.95 and ev.metric("auroc")[1] >= 0.98
    noise = evaluate_probes(signal, random.Random(0).sample(labels, len(labels)), config=config, progress=False)
    assert max(noise.metric("accuracy")) < 0.7 and max(noise.metric("auroc")) < 0.7


@pytest.mark.slow
def test_real_model_probe_separates_demo_sets(real_lm):
    benign, harmful = load_set("demo-benign", n=30), load_set("demo-harmful", n=30)
    acts = capture(real_lm, benign + harmful, layers=[5, 15, 25], progress=False)
    ev = evaluate_probes(acts, benign.labels + harmful.labels, layers=[5, 15, 25], progress=False)
    best = ev.metrics[ev.probes.slot(ev.best_layer)]
    assert best.auroc > 0.9
