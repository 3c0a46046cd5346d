"""LogitLens: equality with the model's own logits at the last layer, masses, top tokens, errors."""

from __future__ import annotations

import pytest
import torch

from mosr.batching import make_batches
from mosr.capture import capture
from mosr.errors import LayerError, MosrError
from mosr.represent.lens import decode_layers, lens_logits, logit_lens

PROMPTS = ["How do I kill a Python process?", "Write a poem about the sea.", "Explain how a bomb squad works today."]


def model_last_logits(lm, prompts):
    """The model's own next-token logits at the last prompt position (one padded batch, input order)."""
    (batch,) = make_batches(lm, prompts, batch_size=len(prompts), sort=False)
    with torch.no_grad():
        logits = lm.model(**batch.model_inputs()).logits
    return logits[torch.arange(len(prompts)), batch.last].float()


def test_last_layer_equals_model_logits(family_lm):
    hidden = capture(family_lm, PROMPTS, layers="all", progress=False)
    lens = lens_logits(family_lm, hidden[:, -1])
    torch.testing.assert_close(lens, model_last_logits(family_lm, PROMPTS), atol=1e-4, rtol=1e-4)


def test_lens_result_masses_and_top_tokens(family_lm):
    res = logit_lens(family_lm, PROMPTS, k=4, progress=False)
    n_layers = family_lm.n_layers
    assert res.layers == list(range(n_layers))
    assert res.top_ids.shape == (3, n_layers, 4) and res.refusal_mass.shape == (3, n_layers)
    assert bool((res.top_probs[..., :-1] >= res.top_probs[..., 1:]).all())  # sorted
    # masses equal an independent softmax over the registry's opener tokens
    hidden = capture(family_lm, PROMPTS, layers="all", progress=False)
    probs = torch.softmax(lens_logits(family_lm, hidden), -1)
    ref = probs[..., family_lm.refusal_token_ids].sum(-1)
    comp = probs[..., family_lm.compliance_token_ids].sum(-1)
    torch.testing.assert_close(res.refusal_mass, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.score, ref - comp, atol=1e-5, rtol=1e-4)
    assert res.top_tokens[1][-1][0] == family_lm.tokenizer.decode([int(probs[1, -1].argmax())])
    torch.testing.assert_close(res.mean_score([0, 2]), (ref - comp)[[0, 2]].mean(0), atol=1e-5, rtol=1e-4)
    assert res.subset([2]).prompts == [PROMPTS[2]]
    assert set(res.to_dict()["prompts"][0]) >= {"prompt", "top_tokens", "refusal_mass", "compliance_mass"}


def test_selected_layers_and_errors(llama_lm):
    res = logit_lens(llama_lm, PROMPTS[0], k=2, layers=[0, -1], progress=False)
    assert res.layers == [0, 2] and res.top_ids.shape == (1, 2, 2)
    with pytest.raises(LayerError, match="out of range"):
        logit_lens(llama_lm, PROMPTS, layers=[7], progress=False)
    hidden = capture(llama_lm, PROMPTS, layers="all", progress=False)
    with pytest.raises(MosrError, match="top-k"):
        decode_layers(llama_lm, hidden, k=0)
    with pytest.raises(MosrError, match="d_model"):
        lens_logits(llama_lm, torch.zeros(2, 7))
    with pytest.raises(MosrError, match="prompt layer d_model"):
        decode_layers(llama_lm, hidden[:, 0])


@pytest.mark.slow
def test_real_model_lens_equals_logits(real_lm):
    hidden = capture(real_lm, PROMPTS, layers="all", progress=False)
    own = model_last_logits(real_lm, PROMPTS)
    torch.testing.assert_close(lens_logits(real_lm, hidden[:, -1]), own, atol=1e-4, rtol=1e-4)
    res = decode_layers(real_lm, hidden, k=3, prompts=PROMPTS)
    assert res.top_ids[:, -1, 0].tolist() == own.argmax(-1).tolist()
    assert 0.0 <= float(res.refusal_mass.min()) and float((res.refusal_mass + res.compliance_mass).max()) <= 1.0 + 1e-5


def test_shape_annotations_resolve_and_tokenizer_protocol():
    """The jaxtyping annotations of capture / lens / batching are valid types, and the tokenizers mosr
    builds satisfy the Tokenizer protocol that replaces ``Any`` there."""
    import importlib
    import typing

    from jaxtyping import Float

    from mosr.testing import tiny_tokenizer
    from mosr.types import Tokenizer

    for name in ("mosr.capture", "mosr.represent.lens", "mosr.batching"):
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if callable(obj) and getattr(obj, "__module__", None) == name:
                typing.get_type_hints(obj)  # raises on a malformed annotation
    capture_module = importlib.import_module("mosr.capture")
    acts = typing.get_args(typing.get_type_hints(capture_module.capture)["return"])[0]
    assert acts.dtype is Float and acts.array_type is torch.Tensor and acts.dim_str == "prompt layer d_model"
    assert typing.get_type_hints(importlib.import_module("mosr.represent.lens").token_strings)["tokenizer"] is Tokenizer
    assert isinstance(tiny_tokenizer(), Tokenizer)
