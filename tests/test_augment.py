"""Context-aware augmentation: tokenizer-exact prefix cuts, examples, seeded k draws."""

from __future__ import annotations

from collections import Counter

import pytest

from mosr.data import Record
from mosr.errors import ConfigError, DataError, MosrError
from mosr.testing import tiny_tokenizer
from mosr.train.augment import AugmentConfig, augment, augment_example, draw_k, harmful_prefix
from mosr.train.refusals import REFUSAL_TEMPLATES

COMPLETIONS = [
    "Sure, here is a recipe for pancakes. The first step",
    " leading space: hello world",
    "héllo wörld 日本語 ok — ünïcode ✓ done",
    "Step 1\n\n  indented\tline",
]


def _ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def _check_prefixes(tok, completion):
    ids = _ids(tok, completion)
    for k in range(len(ids) + 3):
        prefix = harmful_prefix(tok, completion, k)
        assert completion.startswith(prefix), (k, prefix)
        if k == 0:
            assert prefix == ""
        elif k >= len(ids):
            assert prefix == completion
        else:
            plain = tok.decode(ids[:k], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            if "\ufffd" not in plain and completion.startswith(plain):
                assert prefix == plain  # the exact decode of the first k tokens
            # never shorter than k tokens' worth of text, at most one character longer (a split char)
            assert plain.rstrip("\ufffd") == prefix[: len(plain.rstrip("\ufffd"))]
            assert len(prefix) <= len(plain.rstrip("\ufffd")) + 1
            assert _ids(tok, prefix)[:k] == ids[:k] or "\ufffd" in plain


@pytest.mark.parametrize("completion", COMPLETIONS)
def test_prefix_boundaries_tiny_tokenizer(completion):
    _check_prefixes(tiny_tokenizer(), completion)


def test_prefix_cases():
    tok = tiny_tokenizer()
    assert harmful_prefix(tok, "Sure, here is", 0) == ""
    assert harmful_prefix(tok, "Sure, here is", 2) == "Sure"
    assert harmful_prefix(tok, "Sure, here is", 99) == "Sure, here is"
    assert harmful_prefix(tok, "", 5) == ""
    # the leading space is kept
    assert harmful_prefix(tok, " leading space", 1) == " "
    # a cut inside a multi-byte character moves to the end of that character
    assert harmful_prefix(tok, "héllo", 2) == "hé"
    with pytest.raises(MosrError):
        harmful_prefix(tok, "x", -1)


@pytest.mark.slow
@pytest.mark.parametrize("completion", COMPLETIONS)
def test_prefix_boundaries_real_tokenizer(real_lm, completion):
    _check_prefixes(real_lm.tokenizer, completion)


def test_augment_example():
    tok = tiny_tokenizer()
    ex = augment_example(
        tok, "Make a bomb", "Sure, here is how", "I'm sorry, but I can't help with that.", 2, id="x:aug"
    )
    assert ex.kind == "refusal" and ex.response_prefix == "Sure"
    assert ex.response == " I'm sorry, but I can't help with that." and ex.meta["k"] == 2
    plain = augment_example(tok, "Make a bomb", "Sure, here is how", "No.", 0)
    assert plain.response_prefix == "" and plain.response == "No."
    # no separator after a prefix that ends in whitespace
    k_ws = next(k for k in range(1, 20) if harmful_prefix(tok, "Step 1\n\nnext", k).endswith("\n"))
    ws = augment_example(tok, "p", "Step 1\n\nnext", "No.", k_ws)
    assert ws.response_prefix.endswith("\n") and ws.response == "No."
    with pytest.raises(DataError, match="empty refusal"):
        augment_example(tok, "p", "c", "  ", 1)


def _records(n: int) -> list[Record]:
    return [
        Record(f"h{i}", f"harmful prompt {i}", "harmful", completion="Sure, here is a recipe for pancakes. " * 3)
        for i in range(n)
    ]


def test_augment_seeded_and_uniform():
    tok = tiny_tokenizer()
    recs = _records(400)
    cfg = AugmentConfig(k_min=0, k_max=4, seed=3)
    a, b = augment(tok, recs, cfg), augment(tok, list(reversed(recs)), cfg)
    ks = {e.id: e.meta["k"] for e in a}
    assert ks == {e.id: e.meta["k"] for e in b}  # independent of record order
    counts = Counter(ks.values())
    assert set(counts) == {0, 1, 2, 3, 4} and min(counts.values()) > 40  # roughly uniform on 0..4
    # the seed picks the draws: another seed draws other k for most records (4 in 5 by chance)
    other = {e.id: e.meta["k"] for e in augment(tok, recs, AugmentConfig(k_min=0, k_max=4, seed=4))}
    assert other.keys() == ks.keys() and 240 < sum(other[i] != ks[i] for i in ks) < 400
    # the recorded k is the prefix actually used: the first k tokens of the record's completion
    by_id = {f"{r.id}:aug": r for r in recs}
    assert all(e.response_prefix == harmful_prefix(tok, by_id[e.id].completion, e.meta["k"]) for e in a[:50])
    assert [draw_k(r.id, cfg) for r in recs] == [e.meta["k"] for e in a]
    assert all(e.response.strip() in REFUSAL_TEMPLATES for e in a)
    assert len({e.response.strip() for e in a}) > 10  # varied refusals
    # a record's own refusal wins
    own = augment(tok, [Record("z", "p", "harmful", completion="Sure", refusal="Nope.")], cfg)[0]
    assert own.response.strip() == "Nope."
    # k_min = k_max = 0 gives plain refusals
    assert all(e.response_prefix == "" for e in augment(tok, recs[:5], AugmentConfig(k_min=0, k_max=0)))


def test_augment_errors():
    tok = tiny_tokenizer()
    with pytest.raises(DataError, match="no harmful completion"):
        augment(tok, [Record("a", "p", "harmful")])
    with pytest.raises(DataError, match="no harmful records"):
        augment(tok, [])
    with pytest.raises(ConfigError, match="k_min"):
        AugmentConfig(k_min=5, k_max=2)
    with pytest.raises(ConfigError, match="unknown key"):
        AugmentConfig.from_dict({"kmax": 3})


def test_refusal_templates():
    from mosr.evaluation.judge import is_refusal
    from mosr.train.refusals import refusal_for

    assert len(REFUSAL_TEMPLATES) >= 20 and len(set(REFUSAL_TEMPLATES)) == len(REFUSAL_TEMPLATES)
    assert [t for t in REFUSAL_TEMPLATES if not is_refusal(t)] == []
    assert refusal_for("rd-harmful_train-3", 0) == refusal_for("rd-harmful_train-3", 0)
    picks = {refusal_for(f"id-{i}", 0) for i in range(300)}
    assert len(picks) == len(REFUSAL_TEMPLATES)  # every template is used
    assert [refusal_for(f"id-{i}", 0) for i in range(20)] != [refusal_for(f"id-{i}", 1) for i in range(20)]
