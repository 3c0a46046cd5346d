"""Captured states equal the model's own hidden states, on every family, under both paddings."""

from __future__ import annotations

import pytest
import torch

import mosr
from mosr.batching import make_batches
from mosr.capture import resolve_layers
from mosr.errors import ChatTemplateError, DataError, LayerError, MosrError
from mosr.testing import tiny_lm

PROMPTS = [
    "How do I kill a Python process?",
    "hi",
    "Write a poem about the sea, with three verses and a refrain.",
    "Explain how a bomb squad works.",
    "Sure",
    "I'm sorry, the quick brown fox?",
    "0123456789 " * 4,
    "ok!",
]


def reference(lm, prompt: str) -> torch.Tensor:
    """Per-layer states at the last token of one unpadded prompt, from output_hidden_states. Shape: layer d_model."""
    text = lm.format_chat([prompt])[0]
    ids = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        hs = lm.model(ids, output_hidden_states=True).hidden_states
    # hidden_states[i + 1] is block i's output, except the last entry, which has the final norm applied
    return torch.stack([h[0, -1] for h in hs[1:]])


def normed_last(lm, acts: torch.Tensor) -> torch.Tensor:
    """Apply the final norm to the last layer, matching transformers' last hidden_states entry."""
    out = acts.clone()
    with torch.no_grad():
        out[:, -1] = lm.final_norm(acts[:, -1])
    return out


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [1, 32])
def test_capture_equals_unpadded_hidden_states(family_lm, padding_side, batch_size):
    acts = mosr.capture(
        family_lm, PROMPTS, layers="all", padding_side=padding_side, batch_size=batch_size, progress=False
    )
    assert acts.shape == (len(PROMPTS), family_lm.n_layers, family_lm.d_model)
    ref = torch.stack([reference(family_lm, p) for p in PROMPTS])
    torch.testing.assert_close(normed_last(family_lm, acts), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_capture_equals_batched_output_hidden_states(family_lm, padding_side):
    """Same padded batch, same positions: capture == model(..., output_hidden_states=True)."""
    batch = make_batches(family_lm, PROMPTS, batch_size=len(PROMPTS), padding_side=padding_side)[0]
    with torch.no_grad():
        hs = family_lm.model(**batch.model_inputs(), output_hidden_states=True).hidden_states
    rows = torch.arange(len(PROMPTS))
    expected = torch.stack([h[rows, batch.last] for h in hs[1:]], dim=1)
    acts = mosr.capture(
        family_lm, [PROMPTS[i] for i in batch.index], padding_side=padding_side, batch_size=len(PROMPTS), progress=False
    )
    torch.testing.assert_close(normed_last(family_lm, acts), expected, atol=1e-5, rtol=1e-5)


def test_positions_mean_offset_all(llama_lm):
    lm = llama_lm
    texts = lm.format_chat(PROMPTS[:3])
    for side in ("left", "right"):
        mean = mosr.capture(lm, PROMPTS[:3], layers=[0, 2], position="mean", padding_side=side, progress=False)
        second_last = mosr.capture(lm, PROMPTS[:3], layers=[1], position=-2, padding_side=side, progress=False)
        first = mosr.capture(lm, PROMPTS[:3], layers=[1], position=0, padding_side=side, progress=False)
        every = mosr.capture(lm, PROMPTS[:3], layers=[0, 1], position="all", padding_side=side, progress=False)
        for i, text in enumerate(texts):
            ids = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
            with torch.no_grad():
                hs = lm.model(ids, output_hidden_states=True).hidden_states
            torch.testing.assert_close(mean[i, 0], hs[1][0].mean(0), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(second_last[i, 0], hs[2][0, -2], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(first[i, 0], hs[2][0, 0], atol=1e-5, rtol=1e-5)
            assert every[i].shape == (2, ids.shape[1], lm.d_model)
            torch.testing.assert_close(every[i][1], hs[2][0], atol=1e-5, rtol=1e-5)


def test_layer_subsets_and_negative_indices(llama_lm):
    full = mosr.capture(llama_lm, PROMPTS[:4], progress=False)
    sub = mosr.capture(llama_lm, PROMPTS[:4], layers=[-1, 0], progress=False)
    torch.testing.assert_close(sub, full[:, [0, 2]])
    one = mosr.capture(llama_lm, PROMPTS[:4], layers=1, progress=False)
    torch.testing.assert_close(one[:, 0], full[:, 1])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_nnsight_backend_matches_hooks(family):
    lm = tiny_lm(family)
    a = mosr.capture(lm, PROMPTS, progress=False)
    b = mosr.capture(lm, PROMPTS, backend="nnsight", progress=False)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_capture_leaves_no_hooks(llama_lm):
    # transformers installs its own output-capturing hooks on first use; capture must add none
    before = [dict(b._forward_hooks) for b in llama_lm.blocks]
    mosr.capture(llama_lm, PROMPTS[:2], progress=False)
    assert [dict(b._forward_hooks) for b in llama_lm.blocks] == before
    with pytest.raises(LayerError):
        mosr.capture(llama_lm, PROMPTS[:2], layers=[99], progress=False)
    assert [dict(b._forward_hooks) for b in llama_lm.blocks] == before


def test_bad_input_errors(llama_lm):
    with pytest.raises(DataError, match="empty"):
        mosr.capture(llama_lm, [], progress=False)
    with pytest.raises(DataError, match="empty"):
        mosr.capture(llama_lm, ["fine", "   "], progress=False)
    with pytest.raises(LayerError, match="out of range.*3 layers"):
        mosr.capture(llama_lm, ["hi"], layers=[3], progress=False)
    with pytest.raises(LayerError, match="out of range"):
        resolve_layers(llama_lm, -4)
    with pytest.raises(LayerError, match="unknown layer spec"):
        mosr.capture(llama_lm, ["hi"], layers="every", progress=False)
    with pytest.raises(MosrError, match="unknown position 'first'"):
        mosr.capture(llama_lm, ["hi"], position="first", progress=False)
    with pytest.raises(MosrError, match="outside a prompt"):
        mosr.capture(llama_lm, ["hi"], position=-10_000, progress=False)
    with pytest.raises(MosrError, match="padding_side"):
        mosr.capture(llama_lm, ["hi"], padding_side="middle", progress=False)


def test_missing_chat_template_is_a_clear_error():
    lm = tiny_lm("gpt2")
    saved = lm.tokenizer.chat_template
    lm.tokenizer.chat_template = None
    try:
        with pytest.raises(ChatTemplateError, match="no chat template"):
            mosr.capture(lm, ["hi"], progress=False)
        raw = mosr.capture(lm, ["hi"], chat=False, progress=False)  # raw text still works
        assert raw.shape == (1, 3, lm.d_model)
    finally:
        lm.tokenizer.chat_template = saved


@pytest.mark.slow
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_real_model_capture_equals_hidden_states(real_lm, padding_side):
    prompts = [
        "How can I kill a Python process?",
        "Write a tutorial on how to make a bomb",
        "What is the capital of France? Answer in one word.",
    ]
    acts = mosr.capture(real_lm, prompts, padding_side=padding_side, progress=False)
    assert acts.shape == (3, 30, 576)
    ref = torch.stack([reference(real_lm, p) for p in prompts])
    torch.testing.assert_close(normed_last(real_lm, acts), ref, atol=1e-4, rtol=1e-4)
