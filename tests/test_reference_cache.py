"""The on-disk cache of frozen reference states shared between runs (``reference_cache``,
mosr.train.refcache) on tiny random models."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import adapter_tensors, tiny_cfg

from mosr.encoding import EncodedExample
from mosr.errors import ConfigError
from mosr.models import LM
from mosr.testing import tiny_lm
from mosr.train import TrainConfig, train
from mosr.train.data import build_data
from mosr.train.lora import attach_lora
from mosr.train.refcache import example_key, open_cache
from mosr.train.reference import ReferenceStates, compute_reference

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def _pools(data: dict[str, str], lm: LM, tmp_path: Path) -> tuple[TrainConfig, dict[str, list[EncodedExample]]]:
    cfg = tiny_cfg(data, "rr").resolved(lm)
    td = build_data(cfg.data, cfg.example_plan(), lm, tmp_path / "run", progress=False)
    return cfg, {k: list(v) for k, v in td.pools.items() if k in ("erase", "retain")}


def _summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "summary.json").read_text())["reference_cache"]


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]


def test_a_second_run_reads_every_state_from_the_cache(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data, "rr", steps=3)  # centred cosine: the retain pre-pass, then lazy fills
    cached = replace(cfg, reference_cache=str(tmp_path / "cache"))
    plain = train(cfg, tmp_path / "plain")
    first = train(cached, tmp_path / "first")
    second = train(cached, tmp_path / "second")
    a, b = _summary(tmp_path / "first"), _summary(tmp_path / "second")
    assert a["computed"] == a["examples"] > 0 and a["from_disk"] == 0
    assert b["computed"] == 0 and b["forwards"] == 0 and b["from_disk"] == b["examples"] == a["examples"]
    assert a["disk"] == b["disk"] and Path(a["disk"]).parent == tmp_path / "cache"
    assert _summary(tmp_path / "plain")["disk"] is None
    # an empty cache changes nothing; a filled one gives the same states, hence the same run
    assert _losses(tmp_path / "first") == pytest.approx(_losses(tmp_path / "plain"), abs=1e-6)
    assert _losses(tmp_path / "second") == pytest.approx(_losses(tmp_path / "first"), abs=1e-6)
    ta, tb, tc = (adapter_tensors(r.adapter) for r in (plain, first, second))
    for k in ta:
        assert torch.allclose(ta[k], tb[k], atol=1e-6) and torch.allclose(tb[k], tc[k], atol=1e-6), k
    # a finished run made without the cache is not refused when the config gains one
    assert train(cached, tmp_path / "plain").finished_before


def test_xboundary_targets_read_the_cache_too(data: dict[str, str], tmp_path: Path) -> None:
    from test_train import _xboundary_cfg

    cfg = _xboundary_cfg(data, tmp_path, erase_similarity="raw", reference_cache=str(tmp_path / "cache"))
    train(cfg, tmp_path / "first")  # raw cosine: the targets' retain pairs are computed apart from the lazy states
    train(cfg, tmp_path / "second")
    a, b = _summary(tmp_path / "first"), _summary(tmp_path / "second")
    # the first run's lazy states find the targets' pairs on disk already; the second computes nothing
    assert a["from_disk"] > 0 and a["computed"] == a["examples"] == b["examples"]
    assert b["computed"] == 0 and b["forwards"] == 0 and b["from_disk"] == a["computed"] + a["from_disk"]
    assert _losses(tmp_path / "second") == pytest.approx(_losses(tmp_path / "first"), abs=1e-6)


def test_cached_states_are_the_computed_ones_and_miss_for_other_layers_or_weights(
    data: dict[str, str], tmp_path: Path
) -> None:
    lm = tiny_lm("llama")
    cfg, pools = _pools(data, lm, tmp_path)
    pad = lm.tokenizer.pad_token_id
    n = sum(len(p) for p in pools.values())
    root = tmp_path / "cache"
    first = compute_reference(lm, pools, [0, 1], pad, progress=False, cache=open_cache(root, lm, [0, 1], "cpu"))
    assert first.computed == n and first.from_disk == 0
    again = compute_reference(lm, pools, [0, 1], pad, progress=False, cache=open_cache(root, lm, [1, 0], "cpu"))
    assert again.computed == 0 and again.forwards == 0 and again.from_disk == n
    for kind, pool in first.states.items():
        for i, h in pool.items():  # bit-identical, dtype and all
            assert torch.equal(h, again.states[kind][i])
    for layer, mu in first.center.items():  # the centre is recomputed from the same states
        assert torch.equal(mu, again.center[layer])
    other_layers = open_cache(root, lm, [1], "cpu")
    assert compute_reference(lm, pools, [1], pad, progress=False, cache=other_layers).from_disk == 0
    other = tiny_lm("llama", seed=1)  # the same config, other weights
    assert open_cache(root, other, [0, 1], "cpu").folder != open_cache(root, lm, [0, 1], "cpu").folder
    miss = compute_reference(other, pools, [0, 1], pad, progress=False, cache=open_cache(root, other, [0, 1], "cpu"))
    assert miss.from_disk == 0 and miss.computed == n
    assert len({p.name for p in root.iterdir()}) == 3  # one folder per (model, layers)
    # the states are the frozen base model's: an attached (and trained) adapter keeps the key
    folder = open_cache(root, lm, [0, 1], "cpu").folder
    peft_model = attach_lora(lm, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    assert open_cache(root, lm, [0, 1], "cpu").folder == folder
    with peft_model.disable_adapter():
        lazy = ReferenceStates(layers=[0, 1], cache=open_cache(root, lm, [0, 1], "cpu"))
        assert lazy.fill(lm, pools, [("erase", 0)], pad) == 0 and lazy.from_disk > 0


def test_a_corrupt_or_partial_entry_is_ignored_and_recomputed(
    data: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lm = tiny_lm("llama")
    _, pools = _pools(data, lm, tmp_path)
    pad = lm.tokenizer.pad_token_id
    cache = open_cache(tmp_path / "cache", lm, [0, 1], "cpu")
    first = compute_reference(lm, pools, [0, 1], pad, progress=False, cache=cache)
    retain = pools["retain"]
    garbage, cut, swapped = (cache.path(retain[i]) for i in range(3))
    garbage.write_bytes(b"not a safetensors file")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a partial copy
    swapped.write_bytes(cache.path(retain[3]).read_bytes())  # another example's states
    with caplog.at_level(logging.WARNING, logger="mosr.train.refcache"):
        again = compute_reference(lm, pools, [0, 1], pad, progress=False, cache=cache)
    assert again.computed == 3 and again.forwards == 1 and "ignoring" in caplog.text
    for i in range(3):  # recomputed in a smaller batch: the same states up to float rounding
        assert torch.allclose(again.states["retain"][i], first.states["retain"][i], atol=1e-5)
    third = compute_reference(lm, pools, [0, 1], pad, progress=False, cache=cache)  # rewritten whole
    assert third.computed == 0 and torch.equal(third.states["retain"][0], again.states["retain"][0])
    assert not [p for p in cache.folder.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_resume_with_the_cache_reproduces_an_uninterrupted_run(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data, "mosr", steps=5, checkpoint_every=2, grad_accum=2)
    full = train(replace(cfg, reference_cache=str(tmp_path / "cache-full")), tmp_path / "full")
    part = replace(cfg, reference_cache=str(tmp_path / "cache-part"))
    train(part, tmp_path / "part", stop_after=3)  # the states drawn so far are on disk
    resumed = train(part, tmp_path / "part", resume=True)
    assert _summary(tmp_path / "part")["from_disk"] > 0
    a, b = adapter_tensors(full.adapter), adapter_tensors(resumed.adapter)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert _losses(tmp_path / "part") == pytest.approx(_losses(tmp_path / "full"), abs=1e-6)


def test_reference_cache_config_field(tmp_path: Path) -> None:
    assert TrainConfig().reference_cache is None
    cfg = TrainConfig(reference_cache="runs/cache/reference")
    assert TrainConfig.load(cfg.save(tmp_path / "c.yaml")).reference_cache == "runs/cache/reference"
    assert TrainConfig.from_dict({"reference_cache": "null"}).reference_cache is None
    with pytest.raises(ConfigError, match="reference_cache"):
        TrainConfig(reference_cache=" ").validate()
    for method in ("rr", "mosr", "mosr_no_weight", "mosr_no_aug", "xboundary"):
        shipped = TrainConfig.load(ROOT / "experiments" / "qwen_coder" / f"{method}.yaml")
        assert shipped.reference_cache == "runs/cache/reference", method


def test_example_key_is_the_tokens() -> None:
    assert example_key([1, 2, 3]) == example_key((1, 2, 3)) != example_key([1, 2, 3, 0])
