"""The scripts in ``benchmarks/`` stay importable and runnable (their numbers are not checked here).

Every benchmark is imported from its file and asked for ``--help``; ``train_step.py`` is also run end
to end on the tiny random model (one timed step per variant). The others need the real model or data
and are run by hand (see their docstrings).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env

from mosr import datasets

pytestmark = pytest.mark.slow  # the benchmark scripts, in subprocesses

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((REPO / "benchmarks").glob("*.py"))


def _import(path: Path):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(f"benchmarks_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_found() -> None:
    assert {"train_step", "capture", "generation", "probe", "judge_validity"} <= {p.stem for p in BENCHMARKS}


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports(path: Path) -> None:
    module = _import(path)
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
    assert module.__doc__, f"{path.name} has no docstring (how to run it)"


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_help(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(path), "--help"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_train_step_tiny(tmp_path: Path) -> None:
    # the shared data folder when present, else the bundled demo prompts (no skip needed)
    where = datasets.data_dir(required=False)
    shared = where is not None and (where / "refusal_direction").is_dir()
    data = ["--data-dir", str(where)] if shared else ["--demo-data"]
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "train_step.py"),
        "--model",
        "tiny:llama",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--variants",
        "rr",
        "rr_nocache",
        "mosr",
        "--out",
        str(tmp_path),
        *data,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "train_step.json").read_text(encoding="utf-8"))
    results, ratios = report["results"], report["ratios"]
    assert set(results) == {"rr", "rr_nocache", "mosr"}
    for r in results.values():
        assert r["median_s"] > 0 and r["peak_rss_mib"] > 0 and len(r["times_s"]) == 1
    # the cached variants skip the in-step reference forward; rr_nocache runs it
    assert results["rr"]["refs_in_step"] == ["hidden"] and results["rr_nocache"]["refs_in_step"] == []
    assert results["mosr"]["refs_in_step"] == ["hidden", "logits"]
    assert results["mosr"]["kinds"].get("refusal", 0) > 0
    assert set(ratios) >= {"rr / rr_nocache", "mosr / rr_mix", "mosr / rr", "rr / rr_full"}
    for name in ("rr / rr_nocache", "mosr / rr"):
        assert ratios[name]["value"] > 0
    assert ratios["rr / rr_nocache"]["goal"] == 0.65 and ratios["mosr / rr_mix"]["goal"] == 1.05
    # variants that were not run leave their ratios empty
    assert ratios["mosr / rr_mix"]["value"] is None and ratios["rr / rr_full"]["value"] is None
