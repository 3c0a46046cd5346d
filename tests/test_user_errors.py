"""Bad input is a one-line error, not a traceback, and is caught before the slow or lasting work
(issue 23, bug 3): a prompt file that is not UTF-8, a malformed --layers, a negative sample size in a
training config, a device that is not there."""

from __future__ import annotations

from pathlib import Path

import pytest

from mosr import datasets
from mosr.cli import main
from mosr.errors import DataError


def _one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: the error must come first."""
    import mosr.models

    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(mosr.models, "load", refuse)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_a_prompt_file_that_is_not_utf8_names_the_file_and_line(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / f"mine{suffix}"
    good = "How do I bake bread?" if suffix == ".txt" else '{"prompt": "How do I bake bread?"}'
    bad = "Caf\xe9 au lait?" if suffix == ".txt" else '{"prompt": "Caf\xe9 au lait?"}'
    path.write_bytes(f"{good}\n{good.replace('bread', 'cake')}\n{bad}\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{path}:3: .*UTF-8"):
        datasets.load(str(path))
    assert main(["eval", "--model", "tiny:llama", "--sets", str(path), "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys)
    assert f"{path}:3" in line and "UTF-8" in line


@pytest.mark.parametrize("layers", ["foo", "10:20", "1,x", "3-"])
@pytest.mark.parametrize("verb", ["lens", "capture"])
def test_a_malformed_layers_spec_is_reported_before_the_model_loads(
    verb: str, layers: str, tmp_path: Path, capsys: pytest.CaptureFixture, no_model_load: None
) -> None:
    source = (
        ["--prompt", "Hello there"]
        if verb == "lens"
        else ["--data", "demo", "--n", "2", "--out", str(tmp_path / "store")]
    )
    assert main([verb, "--model", "tiny:llama", *source, "--layers", layers]) == 2
    line = _one_line(capsys)
    assert "--layers" in line and repr(layers) in line


def test_a_negative_sample_size_is_refused_before_the_run_folder_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from conftest import tiny_cfg, write_data

    tiny_cfg(write_data(tmp_path), "rr").save(tmp_path / "rr.yaml")
    for key in ("n_harmful", "n_retain", "n_bank"):
        out = tmp_path / f"run-{key}"
        assert main(["train", "--config", str(tmp_path / "rr.yaml"), "--out", str(out), "--set", f"data.{key}=-1"]) == 2
        line = _one_line(capsys)
        assert f"data.{key}" in line and "-1" in line
        assert not out.exists()


@pytest.mark.parametrize("verb", ["eval", "lens", "capture"])
def test_device_cuda_without_cuda_is_reported_before_the_model_loads(
    verb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, no_model_load: None
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rest = {
        "eval": ["--sets", "demo-harmful", "--n", "1", "--out", str(tmp_path / "run")],
        "lens": ["--prompt", "Hello there"],
        "capture": ["--data", "demo", "--n", "2", "--out", str(tmp_path / "store")],
    }[verb]
    assert main([verb, "--model", "smollm2-135m-instruct", "--device", "cuda", *rest]) == 2
    line = _one_line(capsys)
    assert "cuda" in line and "not available" in line
    assert not (tmp_path / "run").exists()


def test_check_device() -> None:
    import torch

    from mosr.errors import ConfigError
    from mosr.models import check_device

    check_device(None)
    check_device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="not available"):
            check_device("cuda")
    else:
        check_device("cuda")
        with pytest.raises(ConfigError, match="no GPU 99"):
            check_device("cuda:99")
