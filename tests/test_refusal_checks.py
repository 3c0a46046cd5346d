"""experiments/refusal_checks.py: the paired ablation / addition checks from evaluation folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

checks = load_script(Path(__file__).resolve().parents[1] / "experiments" / "refusal_checks.py")


def run(folder: Path, verdicts: list[str], set_name: str = "jbb-harmful") -> Path:
    folder.mkdir(parents=True)
    rows = [{"id": f"p{i}", "set": set_name, "verdict": v} for i, v in enumerate(verdicts)]
    (folder / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_paired_rates_flips_and_interval(tmp_path: Path) -> None:
    plain = run(tmp_path / "plain", ["refusal"] * 6 + ["compliance"] * 4)
    ablated = run(
        tmp_path / "ablated", ["compliance"] * 5 + ["refusal", "compliance", "compliance", "refusal", "degenerate"]
    )
    argv = ["--ablate", str(plain), str(ablated), "--out", str(tmp_path / "out")]
    assert checks.main(argv) == 0
    r = json.loads((tmp_path / "out" / "checks.json").read_text())["ablation"]
    assert r["n"] == 10 and r["plain"] == 60.0 and r["intervened"] == 30.0 and r["difference"] == pytest.approx(-30.0)
    assert r["refused_then_complied"] == 5 and r["complied_then_refused"] == 2
    assert r["difference_ci"][0] < -30.0 < r["difference_ci"][1]


def test_runs_without_shared_prompts_are_an_error(tmp_path: Path) -> None:
    from mosr.errors import DataError

    with pytest.raises(DataError, match="share no prompt"):
        checks.paired({"a": True}, {"b": False})
