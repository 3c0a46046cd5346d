"""Every run folder of ``mosr train``, ``eval``, ``probe`` and ``tradeoff`` records what produced it
(``provenance.json``: commit or version, command line, time, library versions)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import mosr
from mosr.cli import main
from mosr.io import write_provenance

ROOT = Path(mosr.__file__).resolve().parents[1]
IN_CHECKOUT = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode == 0


def test_write_provenance_records_commit_command_time_and_versions(tmp_path: Path) -> None:
    import torch
    import transformers

    path = write_provenance(tmp_path / "run", ["train", "--config", "my config.yaml", "--out", "runs/x"])
    assert path == tmp_path / "run" / "provenance.json"
    p = json.loads(path.read_text())
    assert p["command"] == "mosr train --config 'my config.yaml' --out runs/x"
    assert p["argv"] == ["train", "--config", "my config.yaml", "--out", "runs/x"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", p["time"])
    assert p["torch"] == torch.__version__ and p["transformers"] == transformers.__version__
    assert p["mosr"] == mosr.__version__ if hasattr(mosr, "__version__") else p["mosr"]
    if IN_CHECKOUT:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert p["git"]["commit"] == head.strip() and isinstance(p["git"]["dirty"], bool)


def test_outside_a_checkout_the_package_version_stands_in(tmp_path: Path) -> None:
    p = json.loads(write_provenance(tmp_path, ["eval"], source=tmp_path).read_text())
    assert p["git"] is None and p["mosr"]


def test_a_rerun_keeps_the_earlier_invocations(tmp_path: Path) -> None:
    write_provenance(tmp_path, ["eval", "--n", "1"])
    p = json.loads(write_provenance(tmp_path, ["eval", "--n", "2"]).read_text())
    assert p["command"] == "mosr eval --n 2" and [e["command"] for e in p["earlier"]] == ["mosr eval --n 1"]


def _recorded(out: Path, verb: str) -> dict:
    p = json.loads((out / "provenance.json").read_text())
    assert p["command"].startswith(f"mosr {verb} ") and str(out) in p["command"]
    return p


@pytest.mark.usefixtures("one_thread")
def test_train_and_eval_write_provenance(data: dict[str, str], tmp_path: Path) -> None:
    from conftest import tiny_cfg

    tiny_cfg(data, "rr").save(tmp_path / "rr.yaml")
    out = tmp_path / "train"
    assert main(["train", "--config", str(tmp_path / "rr.yaml"), "--out", str(out), "--steps", "1"]) == 0
    _recorded(out, "train")
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny:llama",
                "--sets",
                "demo-harmful",
                "--n",
                "1",
                "--max-new-tokens",
                "2",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    _recorded(out, "eval")


def test_probe_writes_provenance(tmp_path: Path, tiny_model_dir: Path) -> None:
    from test_representation import small_config

    small_config().save(tmp_path / "tiny.yaml")
    out = tmp_path / "probe"
    assert (
        main(
            [
                "probe",
                "--config",
                str(tmp_path / "tiny.yaml"),
                "--model",
                str(tiny_model_dir),
                "--out",
                str(out),
                "--no-risk",
                "--no-figures",
            ]
        )
        == 0
    )
    _recorded(out, "probe")


def test_tradeoff_writes_provenance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mosr.tradeoff.run as tradeoff

    def fake(plan, out, stages, progress=True):  # noqa: ANN001, ANN202 - the study itself is tested elsewhere
        Path(out).mkdir(parents=True, exist_ok=True)
        return {}

    monkeypatch.setattr(tradeoff, "run_tradeoff", fake)
    out = tmp_path / "study"
    assert (
        main(
            [
                "tradeoff",
                "--config",
                str(ROOT / "experiments" / "studies" / "demo.yaml"),
                "--out",
                str(out),
                "--stages",
                "eval",
            ]
        )
        == 0
    )
    _recorded(out, "tradeoff")


def test_a_long_run_records_the_code_it_started_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mosr.io as io

    monkeypatch.setattr(io, "_STARTED", {})
    monkeypatch.setattr(io, "_git_state", lambda package: {"commit": "a" * 40, "dirty": False})
    io.note_start()
    monkeypatch.setattr(io, "_git_state", lambda package: {"commit": "b" * 40, "dirty": True})  # commits meanwhile
    p = json.loads(write_provenance(tmp_path, ["eval"]).read_text())
    assert p["git"] == {"commit": "a" * 40, "dirty": False} and p["started"] <= p["time"]


def test_script_provenance_names_the_script_command_and_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    import mosr.io as io

    monkeypatch.setattr("sys.argv", ["experiments/power.py", "--run", "my run", "--out", "x"])
    monkeypatch.setattr(io, "_git_state", lambda package: {"commit": "c" * 40, "dirty": False})
    assert io.script_provenance() == {
        "git": {"commit": "c" * 40, "dirty": False},
        "command": "python experiments/power.py --run 'my run' --out x",
    }
