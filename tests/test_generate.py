from __future__ import annotations

import pytest
import torch

from mosr.batching import make_batches, plan_batches
from mosr.data import PromptSet
from mosr.errors import MosrError
from mosr.generate import cut_at_stop, generate, generate_batch, generate_full, stop_token_ids

PROMPTS = ["How do I kill a Python process?", "hi", "Write a poem about the sea and the quick brown fox.", "Explain"]


def test_batched_equals_one_at_a_time(family_lm):
    """Left padding + mask: every row's greedy tokens equal the unpadded single-prompt run."""
    batch = make_batches(family_lm, PROMPTS, batch_size=4)[0]
    assert batch.attention_mask.min() == 0  # the batch really is padded
    rows, _ = generate_batch(family_lm, batch, 10)
    for i, row in zip(batch.index, rows):
        single = generate_batch(family_lm, make_batches(family_lm, [PROMPTS[i]], 1)[0], 10)[0][0]
        assert row == single, (family_lm.name, i)


def test_input_order_and_counts(llama_lm):
    seen: list[int] = []
    g = generate_full(
        llama_lm, PROMPTS, max_new_tokens=6, batch_size=3, progress=False, on_batch=lambda b: seen.extend(b.index)
    )
    assert sorted(seen) == list(range(len(PROMPTS)))
    assert seen != list(range(len(PROMPTS)))  # length-sorted, not input order
    singles = [generate(llama_lm, [p], max_new_tokens=6, progress=False)[0] for p in PROMPTS]
    assert g.responses == singles
    assert all(1 <= t <= 6 for t in g.new_tokens)
    assert g.prompt_tokens[2] > g.prompt_tokens[1]


def test_promptset_and_string_input(llama_lm):
    ps = PromptSet.from_prompts(PROMPTS[:2])
    assert generate(llama_lm, ps, max_new_tokens=4, progress=False) == generate(
        llama_lm, PROMPTS[:2], max_new_tokens=4, progress=False
    )
    assert len(generate(llama_lm, "hi", max_new_tokens=3, progress=False)) == 1


def test_generation_scores_equal_forward_scores(family_lm):
    """The refusal score read off generate's first step equals the separate forward-pass score."""
    import torch

    from mosr.evaluation.judge import refusal_scores

    g = generate_full(family_lm, PROMPTS, max_new_tokens=2, batch_size=3, progress=False, score=True)
    expected = refusal_scores(family_lm, PROMPTS, batch_size=3, progress=False)
    torch.testing.assert_close(torch.tensor(g.refusal_scores), expected, atol=1e-4, rtol=1e-4)


def test_plan_batches_token_budget(llama_lm):
    prompts = ["word " * 60, "hi", "a b c", "word " * 20, "x"]
    batches = plan_batches(llama_lm, prompts, batch_size=4, max_batch_tokens=80)
    assert sorted(i for b in batches for i in b.index) == list(range(5))
    assert batches[0].index == [0]  # the long prompt alone: it exceeds the budget by itself
    for b in batches[1:]:
        assert b.input_ids.numel() <= 80 and len(b.index) <= 4
    lengths = [int(b.lengths.max()) for b in batches]
    assert lengths == sorted(lengths, reverse=True)
    unbounded = plan_batches(llama_lm, prompts, batch_size=4, max_batch_tokens=None)
    assert [len(b.index) for b in unbounded] == [4, 1]
    # the budget changes batching, never the responses
    assert (
        generate(llama_lm, prompts, max_new_tokens=3, progress=False)
        == generate_full(llama_lm, prompts, max_new_tokens=3, progress=False, max_batch_tokens=None).responses
    )
    with pytest.raises(MosrError, match="max_batch_tokens"):
        plan_batches(llama_lm, prompts, max_batch_tokens=0)


def test_stop_at_eos_and_strip_special():
    assert cut_at_stop([5, 6, 2, 7, 2], [2]) == ([5, 6], 3)
    assert cut_at_stop([5, 6], [2]) == ([5, 6], 2)


def test_eos_forced(llama_lm):
    """When EOS is the argmax from the first step, responses are empty and count one token."""
    eos = stop_token_ids(llama_lm)[0]

    def force_eos(_module, _inputs, logits):
        logits = logits.clone()
        logits[..., eos] = 1e4
        return logits

    handle = llama_lm.unembed.register_forward_hook(force_eos)
    try:
        g = generate_full(llama_lm, PROMPTS[:2], max_new_tokens=5, progress=False)
    finally:
        handle.remove()
    assert g.responses == ["", ""]
    assert g.new_tokens == [1, 1]


def test_bad_arguments(llama_lm):
    with pytest.raises(MosrError, match="max_new_tokens"):
        generate(llama_lm, PROMPTS, max_new_tokens=0)
    with pytest.raises(MosrError, match="batch_size"):
        generate(llama_lm, PROMPTS, batch_size=0)


@pytest.mark.slow
def test_real_model_batched_equals_single(real_lm):
    prompts = ["What is the capital of France?", "How do I kill a Python process on Linux?"]
    batched = generate(real_lm, prompts, max_new_tokens=8, batch_size=2, progress=False)
    singles = [generate(real_lm, [p], max_new_tokens=8, progress=False)[0] for p in prompts]
    assert batched == singles
    assert "Paris" in batched[0]


def test_one_batching_module_and_one_pad_id(llama_lm):
    """capture's row batches and generation's token-budget batches are one planner (mosr.batching);
    padding uses pad_id: the pad token, else EOS, else 0."""
    import copy
    import importlib

    from mosr import batching
    from mosr.models import LM

    capture_module, generate_module = importlib.import_module("mosr.capture"), importlib.import_module("mosr.generate")
    assert (
        capture_module.make_batches is batching.make_batches and generate_module.plan_batches is batching.plan_batches
    )
    rows = make_batches(llama_lm, PROMPTS, batch_size=3, padding_side="right")
    same = plan_batches(llama_lm, PROMPTS, batch_size=3, max_batch_tokens=None, padding_side="right")
    assert [b.index for b in rows] == [b.index for b in same]
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(rows, same))
    tok = copy.deepcopy(llama_lm.tokenizer)  # a shallow copy would share the special tokens
    lm = LM(llama_lm.model, tok, llama_lm.arch)
    assert batching.pad_id(lm) == tok.pad_token_id == 0
    tok.pad_token = None
    assert batching.pad_id(lm) == tok.eos_token_id != 0
    tok.eos_token = None
    assert batching.pad_id(lm) == 0
    (batch,) = make_batches(lm, ["hi", "a longer prompt here"], batch_size=2)
    assert int(batch.input_ids[batch.lengths.argmin(), 0]) == 0


def test_greedy_equals_transformers_generate_and_drops_finished_rows(family_lm):
    """The decoding loop gives the tokens of ``model.generate(do_sample=False)`` under left padding, also when
    rows stop at different steps and leave the batch (stop tokens chosen from the reference run so that they do)."""
    from mosr.batching import pad_id
    from mosr.generate import greedy

    lm = family_lm
    prompts = ["Hi", "How do I kill a Python process that hangs?", "Tell me a long story about dragons", "Why?"]
    batch = make_batches(lm, prompts, batch_size=4, padding_side="left")[0]
    free = lm.model.generate(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        max_new_tokens=8,
        do_sample=False,
        eos_token_id=[-1],
        pad_token_id=pad_id(lm),
    ).tolist()
    width = batch.input_ids.shape[1]
    # stop tokens: row 0's 2nd and row 2's 5th token, so rows finish at different steps
    stops = [free[0][width + 1], free[2][width + 4]]
    with torch.inference_mode():
        ref = lm.model.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=pad_id(lm),
            return_dict_in_generate=True,
            output_logits=True,
        )
        rows, first = greedy(lm, batch, 8, stops)
    expected = [cut_at_stop(r[width:], stops) for r in ref.sequences.tolist()]
    assert [cut_at_stop(r, stops) for r in rows] == expected
    assert min(len(r) for r in rows) < 8  # some row left the batch early
    torch.testing.assert_close(first, ref.logits[0].float(), atol=1e-4, rtol=1e-4)
