"""The shipped experiment data and plans: the topic-matched retain set is the rewrites answered, every
erasure config trains on it, and the recorded plans keep the retain set they ran with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mosr.tradeoff.plan import StudyPlan
from mosr.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "experiments/data/topic_retain_smollm2.jsonl"
ERASURE = ("rr", "mosr", "mosr_no_aug", "mosr_no_weight", "xboundary")


def _rows(path: str) -> list[dict]:
    return [json.loads(x) for x in (ROOT / path).read_text(encoding="utf-8").splitlines() if x.strip()]


def test_topic_retain_is_the_rewrites_with_an_answer_each() -> None:
    topic, rewrites = _rows(TOPIC), _rows("experiments/data/trigger_rewrites.jsonl")
    assert [(r["id"], r["prompt"]) for r in topic] == [(r["id"], r["prompt"]) for r in rewrites]
    assert len(topic) == 142 and all(r["completion"].strip() for r in topic)
    assert {r["label"] for r in topic} == {"benign"}


def test_erasure_configs_train_on_the_topic_retain_and_recorded_plans_keep_theirs() -> None:
    for name in ERASURE:
        cfg = TrainConfig.load(ROOT / "experiments" / f"{name}.yaml")
        assert cfg.data.extra_retain == ["orbench-80k-bank", TOPIC], name
        assert (cfg.data.n_extra_retain or 0) >= 142, name  # every rewrite, not a sample
    for plan_name in ("study", "demo"):  # recorded before the topic retain: pinned to the retain set they ran with
        plan = StudyPlan.load(ROOT / "experiments" / "studies" / f"{plan_name}.yaml")
        assert "data.extra_retain=[orbench-80k-bank]" in plan.set
    assert StudyPlan.load(ROOT / "experiments" / "studies" / "topic.yaml").set == []


def test_topic_retain_shares_no_prompt_with_an_evaluation_set(data_dir: Path) -> None:
    from mosr import datasets
    from mosr.train.sources import load_eval_sets
    from mosr.train.weighting import check_disjoint

    # every evaluation set training data must avoid (mosr.datasets.EVAL_SETS); raises on a shared prompt
    check_disjoint(datasets.load(str(ROOT / TOPIC)), load_eval_sets(data_dir=data_dir))


def test_make_topic_retain_rebuilds_the_shipped_file_from_its_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script's output for a cache that holds the shipped answers is the shipped file (no generation)."""
    import shutil

    from conftest import load_script

    mod = load_script(ROOT / "experiments" / "make_topic_retain.py")
    shutil.copy(ROOT / TOPIC, tmp_path / "retain-answers-tiny-llama.jsonl")  # the cache training would have written
    monkeypatch.chdir(ROOT)
    out = tmp_path / "topic.jsonl"
    mod.main(["--model", "tiny:llama", "--completions-cache", str(tmp_path / "completions.jsonl"), "--out", str(out)])
    got = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    shipped = _rows(TOPIC)
    assert [(r["id"], r["completion"]) for r in got] == [(r["id"], r["completion"]) for r in shipped]
    assert got[0]["source"].endswith("answer: tiny:llama, greedy, 48 new tokens")
