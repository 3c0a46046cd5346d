"""``mosr train``'s command line (issue 23, bug 7): its help names every method of the registry, and it
takes ``--device`` and ``--data-dir`` as the other verbs do."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_cfg

from mosr.cli import main
from mosr.train import METHODS, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_help_lists_every_method_and_the_device_and_data_dir_flags(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ", ".join(METHODS) in text
    assert "--device" in text and "--data-dir" in text


def test_train_device_and_data_dir_reach_the_config(data: dict[str, str], tmp_path: Path) -> None:
    tiny_cfg(data, "rr").save(tmp_path / "rr.yaml")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "rr.yaml"),
                "--out",
                str(out),
                "--steps",
                "1",
                "--device",
                "cpu",
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    saved = TrainConfig.load(out / "config.yaml")
    assert saved.cpu is True and saved.data.data_dir == str(tmp_path)


@pytest.mark.parametrize(
    "device, says", [("cuda", "not available"), ("cuda:1", "CUDA_VISIBLE_DEVICES"), ("tpu", "cpu or cuda")]
)
def test_train_device_errors_are_one_line_and_write_nothing(
    device: str,
    says: str,
    data: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tiny_cfg(data, "rr").save(tmp_path / "rr.yaml")
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "rr.yaml"), "--out", str(out), "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not out.exists()
