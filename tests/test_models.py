"""Architecture registry, model resolution and loading errors."""

from __future__ import annotations

import json

import pytest
import torch

import mosr
from mosr.errors import ModelError
from mosr.models import ARCHITECTURES, ArchSpec, arch_for, from_model, register_architecture, resolve
from mosr.testing import FAMILIES, tiny_config, tiny_lm, tiny_tokenizer


def test_registry_covers_families(family_lm):
    lm = family_lm
    assert lm.n_layers == 3 and lm.d_model == 32
    assert isinstance(lm.blocks, torch.nn.ModuleList)
    assert lm.unembed.weight.shape[0] == lm.embed.weight.shape[0]
    assert lm.refusal_token_ids and lm.compliance_token_ids
    assert not set(lm.refusal_token_ids) & set(lm.compliance_token_ids)
    assert (lm.logit_softcap is not None) == (lm.arch.family == "gemma2")


def test_qwen3_and_gemma3_registered_if_available():
    import transformers

    for model_type, cls_name in (("qwen3", "Qwen3Config"), ("gemma3_text", "Gemma3TextConfig")):
        if hasattr(transformers, cls_name):
            assert model_type in ARCHITECTURES


def test_unknown_architecture_says_what_to_register():
    class Odd(torch.nn.Module):
        config = type("C", (), {"model_type": "oddformer"})()

    with pytest.raises(ModelError, match="'oddformer'.*register_architecture.*blocks="):
        arch_for(Odd())


def test_registering_a_new_family():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(tiny_config("llama", len(tiny_tokenizer())))
    model.config.model_type = "my_llama"
    with pytest.raises(ModelError):
        from_model(model, tiny_tokenizer())
    register_architecture(
        ArchSpec(
            "my_llama",
            ("my_llama",),
            blocks="model.layers",
            final_norm="model.norm",
            unembed="lm_head",
            embed="model.embed_tokens",
            end_of_user_turn="<|im_end|>",
        )
    )
    try:
        lm = from_model(model, tiny_tokenizer())
        assert mosr.capture(lm, ["hi"], progress=False).shape == (1, 3, 32)
    finally:
        del ARCHITECTURES["my_llama"]


def test_local_dir_roundtrip_and_resolution_errors(tmp_path):
    lm = tiny_lm("qwen2")
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    again = mosr.load(str(tmp_path / "m"), device="cpu")
    assert again.arch.family == "qwen2"
    torch.testing.assert_close(mosr.capture(again, ["hi"], progress=False), mosr.capture(lm, ["hi"], progress=False))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="without config.json"):
        resolve(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="GGUF file not found"):
        mosr.load(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="neither a model directory"):
        resolve("./not/a/model")
    assert resolve("org/model")[0] == "org/model"  # hub ids are passed through
    assert resolve("llama-3-8b-instruct")[0] == "meta-llama/Meta-Llama-3-8B-Instruct"
    # a bare name that is neither an alias nor a path nor a cached hub id: no hub call, a list of aliases
    with pytest.raises(
        ModelError,
        match=r"unknown model alias 'nosuch-model'; known: smollm2-135m-instruct, "
        r"qwen2.5-coder-0.5b-instruct, llama-3-8b-instruct, .*tiny:<family>",
    ):
        resolve("nosuch-model")
    with pytest.raises(ModelError, match="unknown model alias 'nope:x'"):  # no loader registered for nope:
        mosr.load("nope:x")


def test_bare_hub_id_in_the_local_cache_still_resolves(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    (tmp_path / "models--gpt2").mkdir()
    assert resolve("gpt2") == ("gpt2", {"source": "hub"})


def test_loaders_are_registered_not_imported():
    """models knows no loader of its own: mosr.testing registers tiny: (import mosr does it)."""
    from mosr.models import LOADERS, known_names, register_loader

    assert LOADERS["tiny"][0] is tiny_lm and "tiny:<family>" in known_names()
    calls = []
    register_loader("fake", lambda spec: calls.append(spec) or tiny_lm("gpt2"), what="name")
    try:
        lm = mosr.load("fake:abc")
        assert calls == ["abc"] and lm.name == "fake:abc" and "fake:<name>" in known_names()
    finally:
        del LOADERS["fake"]


def test_tiny_alias_and_bad_dtype():
    assert mosr.load("tiny:gpt2").arch.family == "gpt2"
    with pytest.raises(ModelError, match="unknown tiny model family"):
        mosr.load("tiny:bert")
    with pytest.raises(ModelError, match="unknown dtype"):
        mosr.models._dtype("float8")


def test_adapter_errors(tmp_path):
    with pytest.raises(ModelError, match=r"adapter directory .*missing does not exist"):
        mosr.load("tiny:llama", adapter=tmp_path / "missing")
    (tmp_path / "a").mkdir()
    with pytest.raises(ModelError, match="no adapter_config.json"):
        mosr.load("tiny:llama", adapter=tmp_path / "a")
    from peft import LoraConfig, get_peft_model

    other = get_peft_model(tiny_lm("llama", n_layers=3).model, LoraConfig(r=2, target_modules=["q_proj"]))
    other.save_pretrained(tmp_path / "ok")
    merged = mosr.load("tiny:llama", adapter=tmp_path / "ok")
    assert merged.arch.family == "llama"
    cfg = json.loads((tmp_path / "ok" / "adapter_config.json").read_text())
    cfg["target_modules"] = ["c_attn"]  # GPT-2 module names: does not match a Llama model
    (tmp_path / "ok" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="does not match this model"):
        mosr.load("tiny:llama", adapter=tmp_path / "ok")


@pytest.mark.slow
def test_bundled_model(real_lm):
    assert real_lm.arch.family == "llama" and real_lm.n_layers == 30 and real_lm.d_model == 576
    assert real_lm.has_chat_template and real_lm.model.dtype == torch.float32
    assert real_lm.info["source"] == "bundled"
    assert mosr.capture(real_lm, ["hi"], layers="all", progress=False).shape == (1, 30, 576)
    assert "quantization_config" not in real_lm.model.config.to_dict()
    assert len(FAMILIES) == 5
