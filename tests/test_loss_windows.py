"""experiments/loss_windows.py: window means of a training log, runs side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

lw = load_script(Path(__file__).resolve().parents[1] / "experiments" / "loss_windows.py")


def _log(folder: Path, erase: list[float]) -> Path:
    (folder / "train").mkdir(parents=True)
    rows = [
        {"step": i + 1, "erase": e, "retain": 1 - e, "c_e": 5.0, "c_r": 0.0, "grad_norm": 1.0}
        for i, e in enumerate(erase)
    ]
    rows.insert(1, {"event": "checkpoint"})  # non-step rows are skipped
    (folder / "train" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_window_means_side_by_side(tmp_path: Path) -> None:
    a = _log(tmp_path / "a", [1.0, 0.5, 0.0, 0.25, 0.75])
    b = _log(tmp_path / "b", [0.2, 0.4])
    assert lw.main([str(a), str(b), "--window", "2", "--out", str(tmp_path / "out")]) == 0
    runs = json.loads((tmp_path / "out" / "loss_windows.json").read_text())["runs"]
    assert [(w["steps"], w["erase"], w["retain"]) for w in runs["a"]] == [
        ("1-2", 0.75, 0.25),
        ("3-4", 0.125, 0.875),
        ("5-5", 0.75, 0.25),
    ]
    assert [w["erase"] for w in runs["b"]] == [pytest.approx(0.3)]
    md = (tmp_path / "out" / "loss_windows.md").read_text().splitlines()
    assert md[-1] == "| 5-5 | 0.750 | 0.250 |  |  |"


def test_a_folder_without_a_log_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no train/log.jsonl"):
        lw.main([str(tmp_path), "--out", str(tmp_path / "o")])
