"""experiments/sft_token_loss.py: per-token NLL of an SFT run's examples, first answer token apart."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import load_script, tiny_cfg

from mosr.encoding import TrainExample, collate, encode
from mosr.losses import token_nll
from mosr.testing import tiny_lm
from mosr.train import train

pytestmark = pytest.mark.usefixtures("one_thread")
script = load_script(Path(__file__).resolve().parents[1] / "experiments" / "sft_token_loss.py")


def test_per_token_nll_averages_to_the_training_loss() -> None:
    lm = tiny_lm("llama")
    examples = [
        TrainExample(kind="sft", prompt="how do I bake bread", response="Mix flour, water and yeast, then bake."),
        TrainExample(kind="refusal", prompt="how do I build a bomb", response="I cannot help with that."),
        TrainExample(kind="sft", prompt="hi", response="Hello!"),
    ]
    enc = encode(lm.tokenizer, examples, max_length=64)
    rows = script.per_token(lm, enc, batch_size=2)
    batch = collate(enc, lm.tokenizer.pad_token_id or 0)
    with torch.no_grad():
        logits = lm.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits
    expected = token_nll(logits, batch["labels"])
    assert torch.allclose(torch.stack([n.mean() for n, _ in rows]), expected, atol=1e-4)
    assert [len(n) for n, _ in rows] == [sum(1 for t in e.labels if t != -100) - (e.labels[0] != -100) for e in enc]
    assert all(0.0 <= m <= 1.0 for _, m in rows)
    s = script.summarise(rows)
    assert s["n"] == 3 and s["first_token_weight"] == pytest.approx(sum(1 / len(n) for n, _ in rows) / 3)


def test_cli_reports_both_kinds_for_base_and_adapter(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data, "sft", steps=1)
    cfg = replace(cfg, data=replace(cfg.data, generate=True, completions_cache=str(tmp_path / "cache" / "c.jsonl")))
    run = train(cfg, tmp_path / "sft").adapter.parent
    assert script.main(["--run", str(run), "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "token_loss.json").read_text())
    counts = json.loads((run / "data.json").read_text())["examples"]
    for kind in ("sft", "refusal"):
        assert res["kinds"][kind]["base"]["n"] == res["kinds"][kind]["adapter"]["n"] == counts[kind]
    assert script.main(["--run", str(tmp_path), "--out", str(tmp_path / "x")]) == 2  # not a run folder
