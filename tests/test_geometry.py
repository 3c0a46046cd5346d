"""Geometry: PCA projection and centroid axis positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mosr.capture import capture
from mosr.datasets import load as load_set
from mosr.errors import DataError, MosrError
from mosr.represent.geometry import axis_position, centroid_geometry, fit_pca, pca_projection


def three_groups(d: int = 8, n: int = 50, layers: int = 3):
    g = torch.Generator().manual_seed(0)
    e = torch.zeros(d)
    e[0] = 10.0
    noise = lambda: 0.1 * torch.randn(n, layers, d, generator=g)  # noqa: E731
    return {"benign": noise(), "harmful": noise() + e, "pseudo": noise() + 0.4 * e, "far": noise() + 2 * e}


def test_centroid_geometry_axis_and_distances():
    geo = centroid_geometry(three_groups(), layers=[4, 5, 6])
    assert geo["layers"] == [4, 5, 6]
    assert geo["axis_mean"]["benign"] == pytest.approx([0.0] * 3, abs=1e-9)
    assert geo["axis_mean"]["harmful"] == pytest.approx([1.0] * 3, abs=1e-9)
    assert geo["axis_mean"]["pseudo"] == pytest.approx([0.4] * 3, abs=0.02)
    assert geo["between"]["pseudo"] == [True] * 3 and geo["between"]["far"] == [False] * 3
    assert geo["distance"]["benign|harmful"] == pytest.approx([10.0] * 3, abs=0.1)
    assert geo["distance_normalised"]["benign|pseudo"] == pytest.approx([0.4] * 3, abs=0.02)
    assert geo["n"] == {"benign": 50, "harmful": 50, "pseudo": 50, "far": 50}


def test_axis_position_endpoints():
    b, h = torch.zeros(3), torch.tensor([2.0, 0.0, 0.0])
    pos = axis_position(torch.stack([b, h, (b + h) / 2, torch.tensor([1.0, 5.0, 0.0])]), b, h)
    assert pos.tolist() == pytest.approx([0.0, 1.0, 0.5, 0.5])


def test_pca_matches_sklearn():
    from sklearn.decomposition import PCA as SkPCA

    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1)) * torch.tensor([5.0, 3, 1, 1, 1, 1])
    pca = fit_pca(x, k=2)
    sk = SkPCA(2).fit(x.double().numpy())
    np.testing.assert_allclose(pca.explained.numpy(), sk.explained_variance_ratio_, rtol=1e-6)
    ours, theirs = pca.transform(x).numpy(), sk.transform(x.double().numpy())
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-6)  # equal up to component sign


def test_pca_projection_fits_on_reference_groups_only():
    groups = {k: v[:, 1] for k, v in three_groups().items()}
    pca, coords = pca_projection(groups)
    ref = fit_pca(torch.cat([groups["benign"], groups["harmful"]]))
    torch.testing.assert_close(coords["pseudo"], ref.transform(groups["pseudo"]))
    assert coords["far"].shape == (50, 2)
    with pytest.raises(DataError, match="missing"):
        pca_projection({"benign": groups["benign"]})


def test_errors():
    g = three_groups()
    with pytest.raises(DataError, match="'harmful'"):
        centroid_geometry({"benign": g["benign"]})
    with pytest.raises(MosrError, match="same layer"):
        centroid_geometry({"benign": g["benign"], "harmful": g["harmful"][:, :2]})
    with pytest.raises(DataError, match="at least 2"):
        fit_pca(torch.zeros(1, 4))
    with pytest.raises(MosrError, match="Tensor"):
        fit_pca(torch.zeros(3, 4)).transform(torch.zeros(3, 5))


def test_geometry_on_tiny_families(family_lm):
    sets = {k: load_set(f"demo-{k}", n=8) for k in ("benign", "harmful", "pseudo")}
    groups = {k: capture(family_lm, v, layers="all", progress=False) for k, v in sets.items()}
    geo = centroid_geometry(groups)
    assert len(geo["axis_mean"]["pseudo"]) == family_lm.n_layers
    assert all(np.isfinite(geo["distance"]["benign|harmful"]))
    _, coords = pca_projection({k: v[:, -1] for k, v in groups.items()})
    assert coords["pseudo"].shape == (8, 2)
