"""experiments/power.py: detectable over-refusal differences from a base evaluation folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

from mosr.stats import detectable_difference

power = load_script(Path(__file__).resolve().parents[1] / "experiments" / "power.py")


def test_power_table_from_a_run_folder(tmp_path: Path) -> None:
    rows = [{"set": "xstest-safe", "verdict": "refusal" if i < 40 else "compliance"} for i in range(100)]
    rows += [{"set": "jbb-benign", "verdict": "degenerate" if i < 10 else "compliance"} for i in range(50)]
    rows.append({"set": "jbb-harmful", "verdict": "refusal"})  # not an over-refusal set: ignored
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--run", str(tmp_path / "run"), "--sets", "xstest-safe,jbb-benign", "--out", str(tmp_path / "out")]
    assert power.main(argv) == 0
    t = json.loads((tmp_path / "out" / "power.json").read_text())["sets"]
    assert t["xstest-safe"]["n"] == 100 and t["xstest-safe"]["base_rate"] == 40.0
    assert t["xstest-safe"]["unpaired"] == pytest.approx(100 * detectable_difference(100, 0.4))
    assert t["pooled"]["n"] == 150 and t["pooled"]["base_rate"] == pytest.approx(100 * 50 / 150)
    assert t["pooled"]["paired_d0.2"] == pytest.approx(100 * detectable_difference(150, 50 / 150, discordant=0.2))
