"""experiments/separability.py: the operating point and ROC of a prompt-state read-out, on hand-made scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _module():  # noqa: ANN202
    return load_script(ROOT / "experiments" / "separability.py")


def test_fpr_at_tpr_is_the_benign_share_above_the_harmful_threshold() -> None:
    sep = _module()
    harmful = np.arange(10, 20) / 20  # 0.50 .. 0.95
    benign = np.array([0.1, 0.55, 0.6, 0.9])
    # 80% of harmful reach 0.6 (0.60 .. 0.95), and 2 of 4 benign scores are ≥ 0.6
    assert sep.fpr_at_tpr(harmful, benign, 0.8) == 0.5
    assert sep.fpr_at_tpr(harmful, benign, 1.0) == 0.75  # threshold 0.5: all but 0.1
    assert sep.fpr_at_tpr(harmful, np.array([0.0, 0.1]), 0.8) == 0.0  # separable: no benign prompt flagged


def test_roc_points_run_from_nothing_flagged_to_everything_flagged() -> None:
    sep = _module()
    curve = sep.roc(np.array([0.9, 0.8, 0.3]), np.array([0.7, 0.2]))
    # thresholds 0.9, 0.8, 0.7, 0.3, 0.2 (descending): ASR = harmful share below, RR = benign share at or above
    assert curve["asr"] == [66.7, 33.3, 33.3, 0.0, 0.0]
    assert curve["rr"] == [0.0, 0.0, 50.0, 50.0, 100.0]


def test_measures_are_the_auroc_and_one_operating_point_per_tpr() -> None:
    sep = _module()
    harmful, benign = np.arange(10, 20) / 20, np.array([0.1, 0.55, 0.6, 0.9])
    got = sep.measures(harmful, benign, (0.8, 1.0))
    assert got == {
        "auroc": round(
            float(np.mean(harmful[:, None] > benign[None, :]) + 0.5 * np.mean(harmful[:, None] == benign[None, :])), 3
        ),
        "fpr@tpr80": 0.5,
        "fpr@tpr100": 0.75,
    }
