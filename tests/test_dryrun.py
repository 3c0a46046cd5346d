"""`mosr train --dry-run` (mosr.train.dryrun) on the papers' configs, and the memory estimate behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mosr.cli import main
from mosr.errors import ConfigError
from mosr.testing import tiny_lm
from mosr.train import TrainConfig
from mosr.train.dryrun import REAL, Arch, activation_bytes, architecture, dry_run, estimate_memory, n_parameters
from mosr.train.lora import attach_lora

REPO = Path(__file__).resolve().parents[1]
PAPERS = {
    "llama3_8b": "meta-llama/Meta-Llama-3-8B-Instruct",
    "mistral7b": "mistralai/Mistral-7B-Instruct-v0.2",
    "qwen2_5_7b": "Qwen/Qwen2.5-7B-Instruct",
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("folder", sorted(PAPERS))
@pytest.mark.parametrize("method", ["rr", "mosr"])
def test_papers_configs_are_at_circuit_breakers_scale(folder: str, method: str) -> None:
    cfg = TrainConfig.load(REPO / "experiments" / folder / f"{method}.yaml")
    shipped = TrainConfig.load(REPO / "experiments" / f"{method}.yaml")
    assert cfg.model == PAPERS[folder] and cfg.method == method
    assert (cfg.target_layers, cfg.lora.rank, cfg.lora.layers) == ([10, 20], 16, list(range(21)))
    assert (cfg.batch_size, cfg.steps, cfg.lr, cfg.dtype, cfg.mixed_precision) == (16, 150, 1e-4, "bfloat16", "bf16")
    for name in (
        "coef_schedule",
        "retain_scale",
        "retain_distance",
        "erase_similarity",
        "aug_schedule",
        "alpha",
        "use_weights",
        "use_augment",
        "aug_in_retain",
        "retain_tokens",
        "truncate",
        "weighting",
        "augment",
    ):
        assert getattr(cfg, name) == getattr(shipped, name), name
    assert {k: v / sum(cfg.mix.values()) for k, v in cfg.mix.items()} == pytest.approx(
        {k: v / sum(shipped.mix.values()) for k, v in shipped.mix.items()}, abs=0.02
    )
    assert cfg.data.retain == shipped.data.retain
    # the same retain sets; the topic-matched rewrites are answered by the paper's model, not the bundled one's file
    topic = "experiments/data/topic_retain_smollm2.jsonl"
    assert shipped.data.extra_retain == ["orbench-80k-bank", topic]
    assert cfg.data.extra_retain == ["orbench-80k-bank", "experiments/data/trigger_rewrites.jsonl"]
    assert cfg.data.retain_answers == "missing"


def test_dry_run_llama3_rr_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dry"
    assert main(["train", "--config", str(REPO / "experiments/llama3_8b/rr.yaml"), "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8.03 B" in printed and "activations" in printed
    resolved = TrainConfig.load(out / "config.yaml")
    assert resolved.model == "meta-llama/Meta-Llama-3-8B-Instruct" and resolved.data.harmful == "rd-harmful-train"
    assert resolved.lora.layers == list(range(21)) and resolved.target_layers == resolved.retain_layers == [10, 20]
    assert resolved.lora.modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    mem = json.loads((out / "memory.json").read_text())
    assert mem["parameters"] == 8_030_261_248
    assert mem["lora_parameters"] == 21 * 16 * (2 * 8192 + 2 * 5120 + 3 * 18432)
    assert mem["rows"] == {"erase_retain": 16, "with_logits": 0} and mem["blocks_run"]["erase_retain"] == 21
    g = mem["gib"]
    assert g["weights"] == pytest.approx(8_030_261_248 * 2 / 2**30, abs=0.01)
    assert g["optimizer_state"] == pytest.approx(2 * g["lora_weights"], abs=0.01)
    assert 0 < g["activations_checkpointed"] < g["activations"]
    assert mem["step"]["step"] == 1 and mem["step"]["loss"] == pytest.approx(5.0)  # c_e·erase at h' = h
    assert (out / "dry-run" / "run" / "adapter" / "adapter_config.json").is_file()


def test_dry_run_mistral_mosr(tmp_path: Path) -> None:
    cfg = TrainConfig.load(REPO / "experiments/mistral7b/mosr.yaml")
    report = dry_run(cfg, tmp_path, verbose=False)
    assert report["parameters"] == 7_241_732_096 and report["architecture"]["family"] == "mistral"
    assert report["rows"] == {"erase_retain": 14, "with_logits": 2}  # 4 erase + 10 retain, 2 augmented refusals
    assert report["step"]["aug"] > 0 and (tmp_path / "dry-run" / "run" / "weights" / "weights.json").is_file()
    assert json.loads((tmp_path / "memory.json").read_text())["gib"] == report["gib"]


def test_parameter_counts_equal_the_transformers_models() -> None:
    import transformers as tf

    configs = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config}
    for a in REAL.values():
        c = configs[a.family](
            vocab_size=a.vocab_size,
            hidden_size=a.hidden_size,
            num_hidden_layers=a.n_layers,
            intermediate_size=a.intermediate_size,
            num_attention_heads=a.n_heads,
            num_key_value_heads=a.n_kv_heads,
            tie_word_embeddings=a.tied_embeddings,
        )
        with torch.device("meta"):
            model = tf.AutoModelForCausalLM.from_config(c)
        assert n_parameters(a) == sum(p.numel() for p in model.parameters()), a


def test_lora_parameter_count_equals_peft() -> None:
    lm = tiny_lm("qwen2", n_layers=4)
    cfg = TrainConfig(method="rr", model="tiny:qwen2", target_layers=[1, 2], lora=TrainConfig().lora).resolved(lm)
    trainable = sum(p.numel() for p in attach_lora(lm, cfg).parameters() if p.requires_grad)
    assert estimate_memory(cfg, architecture("tiny:qwen2"))["lora_parameters"] == trainable


def test_activation_estimate_matches_the_saved_tensors() -> None:
    """The per-token-and-block bytes of the estimate vs the tensors autograd keeps (bf16 autocast, LoRA r 16)."""
    import transformers as tf
    from peft import LoraConfig, get_peft_model

    a = Arch("llama", 2, 256, 4, 2, 704, 512)
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(
        tf.LlamaConfig(
            vocab_size=a.vocab_size,
            hidden_size=a.hidden_size,
            intermediate_size=a.intermediate_size,
            num_hidden_layers=a.n_layers,
            num_attention_heads=a.n_heads,
            num_key_value_heads=a.n_kv_heads,
        ),
        attn_implementation="sdpa",
    ).to(torch.bfloat16)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    )
    params = {p.untyped_storage().data_ptr() for p in peft_model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    batch, seq = 2, 128
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=torch.randint(0, a.vocab_size, (batch, seq)), use_cache=False)
    measured = sum(saved.values()) / (batch * seq * a.n_layers)
    assert measured == pytest.approx(activation_bytes(a), rel=0.15)


def test_unknown_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no architecture known"):
        architecture("someone/unknown-model")
    assert architecture("llama-3-8b-instruct") == REAL["meta-llama/Meta-Llama-3-8B-Instruct"]  # alias
    with pytest.raises(ConfigError, match="llama-like"):
        architecture("tiny:gpt2")


def test_eval_dry_run_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mosr eval --dry-run`: the configured sets, judge and outputs on a tiny model of the same layout."""
    out = tmp_path / "dry"
    argv = [
        "eval",
        "--dry-run",
        "--model",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "--dtype",
        "bfloat16",
        "--sets",
        "demo-harmful,demo-benign",
        "--judge",
        "llm",
        "--judge-url",
        "http://127.0.0.1:9/v1",
        "--judge-model",
        "judge",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "32 blocks" in printed and "not checked: llm judge" in printed
    report = json.loads((out / "dry-run" / "dry-run.json").read_text())
    assert report["sets"] == {"demo-harmful": 2, "demo-benign": 2} and report["architecture"]["n_layers"] == 32
    metrics = json.loads((out / "dry-run" / "metrics.json").read_text())
    assert set(metrics["sets"]) >= {"demo-harmful", "demo-benign"}
    from mosr.evaluation.config import EvalConfig

    given = EvalConfig.load(out / "config.yaml")  # the configuration as given, llm judge kept
    assert given.judge.kind == "llm" and given.dtype == "bfloat16" and given.n is None
    assert (
        main(["eval", "--dry-run", "--model", "someone/unknown", "--sets", "demo-harmful", "--out", str(out / "x")])
        == 2
    )
    assert "no architecture known" in capsys.readouterr().err
