"""experiments/score_agreement.py: score-vs-judge agreement per set, on a synthetic evaluation folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

agreement = load_script(Path(__file__).resolve().parents[1] / "experiments" / "score_agreement.py")


def test_calibrated_threshold_matches_the_judged_rate() -> None:
    scores = np.array([-3.0, -2.0, -1.0, 0.5, 1.0, 2.0, 3.0, 4.0])
    refused = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    t = agreement.calibrated_threshold(scores, refused)
    assert (scores > t).mean() == pytest.approx(0.5)


def test_report_per_set(tmp_path) -> None:
    rows = [
        {"set": "xstest-safe", "verdict": v, "refusal_score": s}
        for v, s in [("refusal", 2.0), ("refusal", -0.5), ("compliance", -2.0), ("compliance", -3.0)]
    ]
    rows.append({"set": "orbench-hard", "verdict": None, "refusal_score": None})  # NLL-like rows are skipped
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert agreement.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "agreement.json").read_text())
    s = res["sets"]["xstest-safe"]
    assert s["n"] == 4 and s["auroc"] == 1.0 and s["judged_rate"] == 50.0 and s["score_rate_at_0"] == 25.0
    assert s["score_rate_calibrated"] == 50.0 and list(res["sets"]) == ["xstest-safe"]
