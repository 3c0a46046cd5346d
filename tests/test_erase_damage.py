"""experiments/erase_damage.py: the erase / damage counts over hand-made sweep rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
EVAL = {"sets": ["jbb-harmful", "self-instruct-heldout"], "n": 30}


def _row(name: str, erase: float | None, nll: float, asr: float = 50.0, rr: float = 10.0) -> dict:
    final = None if erase is None else {"erase": erase, "retain": 0.1}
    return {"name": name, "final": final, "capability_nll": nll, "mean_asr": asr, "mean_rr": rr}


def test_counts_use_the_base_rows_nll_and_skip_other_eval_specs(tmp_path: Path) -> None:
    ed = load_script(ROOT / "experiments" / "erase_damage.py")
    a = {
        "spec": {"eval": EVAL},
        "rows": [
            _row("base-model", None, 2.0),
            _row("low-broken", 0.1, 3.0, rr=90.0),
            _row("low-working", 0.2, 2.2),
            _row("high-working", 0.9, 2.1, rr=5.0),
        ],
    }
    b = {"spec": {"eval": {**EVAL, "n": 60}}, "rows": [_row("other", 0.1, 2.0)]}
    (tmp_path / "sweep-a.json").write_text(json.dumps(a))
    (tmp_path / "sweep-b.json").write_text(json.dumps(b))
    base, points, skipped = ed.load_points([tmp_path / "sweep-a.json", tmp_path / "sweep-b.json"])
    assert base == 2.0 and skipped == ["sweep-b.json"]
    assert [p["name"] for p in points] == ["low-broken", "low-working", "high-working"]
    assert points[0]["nll_rel"] == pytest.approx(0.5)
    s = ed.summary(points)
    assert (s["n"], s["n_low_erase"], s["n_working"], s["n_both"]) == (3, 2, 2, 1)
    assert s["closest"]["name"] == "low-working"
    assert s["spearman_erase_vs"]["nll_rel"] == pytest.approx(-1.0)  # erase ranks 0 1 2, NLL ranks 2 1 0
    out = tmp_path / "res" / "erase-damage"
    assert ed.main(["--sweeps", str(tmp_path / "sweep-a.json"), "--out", str(out)]) == 0
    assert "**both: 1**" in out.with_suffix(".md").read_text() and out.with_suffix(".png").exists()


def test_no_base_row_is_a_clear_error(tmp_path: Path) -> None:
    ed = load_script(ROOT / "experiments" / "erase_damage.py")
    (tmp_path / "sweep-a.json").write_text(json.dumps({"spec": {"eval": EVAL}, "rows": [_row("x", 0.5, 2.0)]}))
    with pytest.raises(SystemExit, match="no 'base-model' row"):
        ed.load_points([tmp_path / "sweep-a.json"])
