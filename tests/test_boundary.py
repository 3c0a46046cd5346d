"""Refused vs answered pseudo-harmful prompts per layer (mosr.represent.boundary)."""

from __future__ import annotations

import numpy as np
import pytest

from mosr.errors import MosrError
from mosr.represent.boundary import best_early_layer, newcombe, refused_vs_answered, table


def test_newcombe_matches_the_published_example() -> None:
    # Newcombe (1998), Stat. Med. 17:873, Table II example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    lo, hi = newcombe(56, 70, 48, 80)
    assert lo == pytest.approx(0.0524, abs=5e-4) and hi == pytest.approx(0.3339, abs=5e-4)


def test_split_counts_shares_by_hand() -> None:
    refused = np.array([True, True, True, False, False, False, False, False])
    # layer 3: the probe reads 2 of 3 refused and 1 of 5 answered as malicious; layer 9: all alike
    probs = np.array([[0.9, 0.5], [0.7, 0.5], [0.2, 0.5], [0.6, 0.5], [0.1, 0.5], [0.3, 0.5], [0.2, 0.5], [0.4, 0.5]])
    lens = np.arange(16, dtype=float).reshape(8, 2)
    out = refused_vs_answered(probs, refused, layers=[3, 9], lens=lens, lens_harmful=np.ones((4, 2)))
    first, second = out["per_layer"]
    assert first["malicious_refused"] == pytest.approx(2 / 3) and first["malicious_answered"] == pytest.approx(1 / 5)
    assert first["difference"] == pytest.approx(2 / 3 - 1 / 5)
    assert second["difference"] == 0 and second["auroc"] == pytest.approx(0.5)
    assert out["lens"]["refused"] == [2.0, 3.0] and out["lens"]["answered"] == [10.0, 11.0]
    assert out["lens"]["harmful"] == [1.0, 1.0]
    assert best_early_layer(out, n_layers=12)["layer"] == 3  # layer 9 = 0.75 * 12 is excluded
    assert len(table(out)) == 6


def test_split_rejects_mismatched_shapes_and_handles_one_group() -> None:
    with pytest.raises(MosrError, match="prompt x layer"):
        refused_vs_answered(np.zeros((3, 2)), np.zeros(4, dtype=bool), layers=[0, 1])
    assert "note" in refused_vs_answered(np.zeros((3, 1)), np.zeros(3, dtype=bool), layers=[0])
