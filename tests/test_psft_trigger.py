"""``data.benign: trigger``: an SFT-family method (psft) trained on trigger_sft's benign set, the harmful training
prompts rewritten by the run's rewriter and answered by the model (mosr.train.data.TRIGGER_BENIGN)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import tiny_cfg

from mosr.testing import tiny_lm
from mosr.train import TrainConfig
from mosr.train.data import TRIGGER_BENIGN, TrainingData, build_data

pytestmark = pytest.mark.usefixtures("one_thread")


def build(cfg: TrainConfig, out: Path) -> TrainingData:
    lm = tiny_lm("llama")
    cfg = cfg.resolved(lm)
    return build_data(cfg.data, cfg.example_plan(), lm, out, progress=False)


def cfg_with(data: dict[str, str], method: str, tmp_path: Path, **data_kw: object) -> TrainConfig:
    cfg = tiny_cfg(data, method)
    # one shared cache: the model's answers to the rewrites are generated once and read by every run
    ds = replace(cfg.data, generate=True, completions_cache=str(tmp_path / "cache" / "completions.jsonl"), **data_kw)
    return replace(cfg, data=ds)


def test_psft_with_trigger_benign_trains_on_trigger_sfts_benign_set(data: dict[str, str], tmp_path: Path) -> None:
    trig = build(cfg_with(data, "trigger_sft", tmp_path, n_benign=4), tmp_path / "trigger_sft")
    psft_t = build(cfg_with(data, "psft", tmp_path, n_benign=4, benign=TRIGGER_BENIGN), tmp_path / "psft_t")
    psft = build(cfg_with(data, "psft", tmp_path, n_benign=4), tmp_path / "psft")
    sft_t = [(e.id, e.prompt, e.response) for e in psft_t.examples["sft"]]
    assert sft_t == [(e.id, e.prompt, e.response) for e in trig.examples["sft"]]
    assert len(sft_t) == 4 and all(i.startswith("trig_h") and "police" in p for i, p, _ in sft_t)
    assert {e.id for e in psft.examples["sft"]} <= {f"r{i}" for i in range(6)}  # the generic benign set
    # psft keeps its own refusals: the same harmful prompts, each after an affirmative prefix
    assert [e.id for e in psft_t.examples["refusal"]] == [e.id for e in psft.examples["refusal"]]
    assert all(e.response_prefix for e in psft_t.examples["refusal"])
    assert not any(e.response_prefix for e in trig.examples["refusal"])


def test_the_general_benign_set_is_sampled_from_prompts_that_leave_room_for_an_answer(
    data: dict[str, str], tmp_path: Path
) -> None:
    # half of the benign prompts fill max_length on their own: encoding would drop them and the benign set
    # would shrink below n_benign (general 51 of 64 against trigger-matched 64 at max_length 128)
    benign = tmp_path / "benign.jsonl"
    rows = [
        {"id": f"b{i}", "prompt": ("word " * (200 if i % 2 else 3)) + str(i), "label": "benign", "completion": "Sure."}
        for i in range(12)
    ]
    benign.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = build(cfg_with(data, "sft", tmp_path, n_benign=5, benign=str(benign)), tmp_path / "sft")
    ids = [e.id for e in d.examples["sft"]]
    assert len(ids) == 5 and all(int(i[1:]) % 2 == 0 for i in ids)
    assert len(d.pools["sft"]) == 5  # none dropped by encoding
