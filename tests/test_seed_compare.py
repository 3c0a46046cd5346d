"""experiments/seed_compare.py: two methods over seeds, from synthetic evaluation folders (demo sets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script
from test_frontier_script import eval_folder

seed_compare = load_script(Path(__file__).resolve().parents[1] / "experiments" / "seed_compare.py")


def test_means_and_differences_match_a_hand_computation(tmp_path: Path) -> None:
    # n = 20 per set. a: (ASR 10, RR 60), (30, 40); b: (20, 80), (20, 70); base (60, 10)
    runs = {
        "a0": {"demo-harmful": 2, "demo-pseudo": 8},
        "a1": {"demo-harmful": 6, "demo-pseudo": 12},
        "b0": {"demo-harmful": 4, "demo-pseudo": 4},
        "b1": {"demo-harmful": 4, "demo-pseudo": 6},
        "base": {"demo-harmful": 12, "demo-pseudo": 18},
    }
    f = {k: eval_folder(tmp_path / k, 20, v) for k, v in runs.items()}
    args = ["--harmful", "demo-harmful", "--overrefusal", "demo-pseudo", "--out", str(tmp_path / "out")]
    args += ["--a", "m", str(f["a0"]), str(f["a1"]), "--b", "rr", str(f["b0"]), str(f["b1"]), "--base", str(f["base"])]
    assert seed_compare.main(args) == 0
    res = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert (res["a"]["asr_mean"], res["a"]["rr_mean"], res["b"]["asr_mean"], res["b"]["rr_mean"]) == (20, 50, 20, 75)
    assert res["a"]["asr_sd"] == pytest.approx(14.14, abs=0.01)
    d = res["difference"]
    assert (d["rr_difference"], d["asr_difference"]) == (-25.0, 0.0)
    assert d["rr_ci"][0] < -25 < d["rr_ci"][1] and d["asr_ci"][0] < 0 < d["asr_ci"][1]
    per = {r["seed"]: r for r in res["per_seed"]}
    assert (per[0]["rr_difference"], per[0]["asr_difference"]) == (-20.0, -10.0)
    assert (per[1]["rr_difference"], per[1]["asr_difference"]) == (-30.0, 10.0)
    assert res["base"]["asr"] == pytest.approx(60) and res["base"]["rr"] == pytest.approx(10)
    assert "**m − rr**, over seeds: RR -25.0" in (tmp_path / "out" / "seeds.md").read_text()


def test_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    args = ["--harmful", "demo-harmful", "--overrefusal", "demo-pseudo", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="seed_compare: no evaluation folder .*nope"):
        seed_compare.main([*args, "--a", "m", str(tmp_path / "nope"), "--b", "rr", str(tmp_path / "nope")])
