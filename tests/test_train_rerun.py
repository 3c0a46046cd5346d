"""Training into a folder that already holds a run (issue 23, bug 1): a plain re-run of the same command
resumes from the newest checkpoint (as ``mosr eval`` resumes), a finished run is reported and not
retrained, and a different config is refused with ``mosr eval``'s one-line message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import adapter_tensors, tiny_cfg

from mosr.cli import main
from mosr.errors import ConfigError
from mosr.train import TrainConfig, train
from mosr.train.checkpoint import latest_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_a_plain_rerun_resumes_from_the_newest_checkpoint(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data, "rr", steps=4, checkpoint_every=1, keep_checkpoints=0)
    full = train(cfg, tmp_path / "full")
    part = tmp_path / "part"
    train(cfg, part, stop_after=3)  # interrupted after 3 steps, checkpoints 1..3 on disk
    assert latest_checkpoint(part).name == "step-3"
    rows_before = (part / "log.jsonl").read_text().splitlines()
    kept = {p.name: p.joinpath("adapter.safetensors").stat().st_mtime_ns for p in (part / "checkpoints").iterdir()}
    resumed = train(cfg, part)  # no resume=True: the same call again
    assert json.loads((part / "data.json").read_text())["start_step"] == 3
    assert (part / "log.jsonl").read_text().splitlines()[:3] == rows_before  # not truncated, not rewritten
    assert [r["step"] for r in _log(part)] == [1, 2, 3, 4]
    for name, mtime in kept.items():  # the earlier checkpoints are not overwritten
        assert (part / "checkpoints" / name / "adapter.safetensors").stat().st_mtime_ns == mtime, name
    a, b = adapter_tensors(full.adapter), adapter_tensors(resumed.adapter)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_cli_rerun_resumes_then_reports_finished_then_refuses_another_config(
    data: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = tiny_cfg(data, "rr", steps=3)
    cfg.save(tmp_path / "rr.yaml")
    out = tmp_path / "run"
    train(TrainConfig.load(tmp_path / "rr.yaml"), out, stop_after=2)  # an interrupted `mosr train`
    command = ["train", "--config", str(tmp_path / "rr.yaml"), "--out", str(out)]
    assert main(command) == 0
    assert json.loads((out / "data.json").read_text())["start_step"] == 2
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    capsys.readouterr()
    log, adapter = (out / "log.jsonl").read_text(), (out / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    assert main(command) == 0  # finished: reported in one line, not retrained
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "finished" in lines[0] and "3 steps" in lines[0], lines
    assert (out / "log.jsonl").read_text() == log
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == adapter
    assert main([*command, "--set", "lr=0.5"]) == 2  # another config: refused as `mosr eval` refuses it
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{out} holds a run with a different lr (lr=0.01): use a new --out folder" in err[0], err
    assert main([*command, "--resume"]) == 0  # --resume is still accepted


def test_train_and_eval_refuse_a_changed_config_with_the_same_message(data: dict[str, str], tmp_path: Path) -> None:
    from mosr.evaluation.config import EvalConfig
    from mosr.evaluation.run import evaluate
    from mosr.testing import tiny_lm

    cfg = EvalConfig(sets=["demo-harmful"], n=1, max_new_tokens=2)
    evaluate(tiny_lm("llama"), cfg, out=tmp_path / "eval", progress=False)
    with pytest.raises(ConfigError) as from_eval:
        evaluate(
            tiny_lm("llama"),
            EvalConfig(sets=["demo-harmful"], n=1, max_new_tokens=3),
            out=tmp_path / "eval",
            progress=False,
        )
    train(tiny_cfg(data, "rr", steps=2), tmp_path / "train", stop_after=1)
    with pytest.raises(ConfigError) as from_train:
        train(tiny_cfg(data, "rr", steps=2, lr=0.5), tmp_path / "train")
    assert (
        str(from_eval.value) == f"{tmp_path / 'eval'} holds a run with a different max_new_tokens "
        "(max_new_tokens=2): use a new --out folder"
    )
    assert (
        str(from_train.value) == f"{tmp_path / 'train'} holds a run with a different lr (lr=0.01): "
        "use a new --out folder"
    )
