"""experiments/run_costs.py: wall-clock minutes of train and eval folders, and the bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

costs = load_script(Path(__file__).resolve().parents[1] / "experiments" / "run_costs.py")


def _train(folder: Path) -> None:
    folder.mkdir(parents=True)
    prov = {"started": "2026-12-06T08:00:00+00:00", "time": "2026-12-06T08:12:30+00:00"}
    (folder / "provenance.json").write_text(json.dumps(prov))
    (folder / "summary.json").write_text(json.dumps({"method": "rr", "steps": 2}))
    (folder / "log.jsonl").write_text('{"step": 1, "seconds": 30}\n{"step": 2, "seconds": 60}\n')


def _eval(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")
    run = {"invocations": [{"prompts": 300}, {"prompts": 200}], "total_wall_s": 240.0}
    (folder / "run.json").write_text(json.dumps(run))


def test_costs_of_train_and_eval_folders(tmp_path: Path) -> None:
    _train(tmp_path / "runs" / "a" / "train")
    _eval(tmp_path / "runs" / "a" / "eval")
    (tmp_path / "runs" / "a" / "unfinished").mkdir()  # neither: skipped
    assert costs.main([str(tmp_path / "runs"), "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "costs.json").read_text())
    by = {Path(r["run"]).name: r for r in res["rows"]}
    assert set(by) == {"train", "eval"}
    assert by["train"]["minutes"] == 12.5 and by["train"]["step_minutes"] == 1.5
    assert by["eval"]["minutes"] == 4.0 and by["eval"]["prompts"] == 500
    assert res["total_minutes"] == {"train": 12.5, "eval": 4.0}
    assert "Total: training 12.5 min, evaluation 4.0 min." in (tmp_path / "o" / "costs.md").read_text()


def test_bad_roots_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="run_costs: no folder"):
        costs.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no finished train or eval run folder"):
        costs.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
