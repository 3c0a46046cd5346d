"""ActivationStore: streamed shards equal in-memory capture; interrupted captures resume."""

from __future__ import annotations

import pytest
import torch

import mosr
from mosr import datasets
from mosr.errors import DataError, LayerError, MosrError
from mosr.store import ActivationStore, capture_to_store


@pytest.fixture
def prompts():
    return datasets.load("demo", n=22, seed=0)


def test_store_equals_capture(llama_lm, prompts, tmp_path):
    store = capture_to_store(
        llama_lm, prompts, tmp_path / "s", layers=[0, 2], shard_size=8, dtype="float32", progress=False
    )
    assert store.n_shards == 3 and store.complete and len(store) == 22
    assert store.ids == prompts.ids and store.labels == prompts.labels
    expected = mosr.capture(llama_lm, prompts, layers=[0, 2], progress=False)
    torch.testing.assert_close(store.load(), expected)
    torch.testing.assert_close(ActivationStore(tmp_path / "s").load(layers=[2]), expected[:, [1]])
    with pytest.raises(LayerError, match="not in the store"):
        store.load(layers=[1])


def test_resume_recomputes_only_missing_shards(llama_lm, prompts, tmp_path, monkeypatch):
    store = capture_to_store(llama_lm, prompts, tmp_path / "s", shard_size=8, dtype="float16", progress=False)
    full = store.load()
    assert full.dtype == torch.float16
    store.shard_path(1).unlink()  # as if the run had been killed while writing shard 1
    with pytest.raises(DataError, match="incomplete.*missing shards \\[1\\]"):
        store.load()
    import mosr.store as store_mod

    calls = []
    real = store_mod.capture
    monkeypatch.setattr(store_mod, "capture", lambda lm, chunk, **kw: calls.append(len(chunk)) or real(lm, chunk, **kw))
    resumed = capture_to_store(llama_lm, prompts, tmp_path / "s", shard_size=8, dtype="float16", progress=False)
    assert calls == [8]
    torch.testing.assert_close(resumed.load(), full)


def test_store_refuses_other_settings_and_bad_input(llama_lm, prompts, tmp_path):
    capture_to_store(llama_lm, prompts, tmp_path / "s", layers=[0], shard_size=8, progress=False)
    with pytest.raises(MosrError, match="different settings \\(layers\\)"):
        capture_to_store(llama_lm, prompts, tmp_path / "s", layers=[1], shard_size=8, progress=False)
    with pytest.raises(MosrError, match="ragged"):
        capture_to_store(llama_lm, prompts, tmp_path / "t", position="all", progress=False)
    with pytest.raises(MosrError, match="store dtype"):
        capture_to_store(llama_lm, prompts, tmp_path / "t", dtype="int8", progress=False)
    with pytest.raises(DataError, match="empty"):
        capture_to_store(llama_lm, prompts[:0], tmp_path / "t", progress=False)
    with pytest.raises(DataError, match="not an activation store"):
        ActivationStore(tmp_path)


def test_cli_capture_and_datasets(tmp_path, capsys):
    from mosr.cli import main

    out = tmp_path / "cap"
    assert (
        main(["capture", "--model", "tiny:gemma2", "--data", "demo", "--n", "12", "--layers", "0-1", "--out", str(out)])
        == 0
    )
    store = ActivationStore(out)
    assert store.layers == [0, 1] and len(store) == 12
    assert "12 prompts x 2 layers" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "orbench-hard" in capsys.readouterr().out
    assert (
        main(["capture", "--model", "tiny:llama", "--data", "demo", "--layers", "7", "--out", str(tmp_path / "x")]) == 2
    )
    assert "layer 7 out of range" in capsys.readouterr().err
    assert main(["capture", "--model", "tiny:llama", "--data", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown data set 'nope'" in capsys.readouterr().err
