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


def test_compare_runs_pairs_per_set_and_pooled(tmp_path: Path) -> None:
    compare = load_script(Path(__file__).resolve().parents[1] / "experiments" / "compare_runs.py")

    def folder(name: str, harmful: list[str], benign: list[str]) -> Path:
        rows = [{"id": f"h{i}", "set": "jbb-harmful", "label": "harmful", "verdict": v} for i, v in enumerate(harmful)]
        rows += [
            {"id": f"b{i}", "set": "xstest-safe", "label": "pseudo_harmful", "verdict": v} for i, v in enumerate(benign)
        ]
        (tmp_path / name).mkdir()
        (tmp_path / name / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tmp_path / name

    base = folder("base", ["compliance"] * 4, ["refusal", "compliance", "compliance", "compliance"])
    defended = folder(
        "rr", ["refusal", "compliance", "refusal", "degenerate"], ["refusal", "refusal", "compliance", "degenerate"]
    )
    assert compare.main([str(base), str(defended), "--out", str(tmp_path / "cmp")]) == 0
    res = json.loads((tmp_path / "cmp.json").read_text())["sets"]
    assert res["jbb-harmful"]["rate"] == "ASR" and res["jbb-harmful"]["plain"] == 100.0
    assert res["jbb-harmful"]["intervened"] == 25.0 and res["xstest-safe"]["intervened"] == 75.0
    assert res["pooled RR"]["n"] == 4 and res["pooled ASR"]["difference"] == pytest.approx(-75.0)
