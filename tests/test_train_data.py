"""Training data: encoding masks, collation, overlap removal, harmful-completion generation and cache."""

from __future__ import annotations

import json

import pytest
import torch

from mosr.batching import tokenize
from mosr.chat import format_chat
from mosr.data import PromptSet, Record
from mosr.encoding import KIND_IDS, TrainExample, collate, encode, examples_from
from mosr.errors import DataError
from mosr.losses import IGNORE_INDEX, token_nll
from mosr.testing import tiny_tokenizer
from mosr.train.augment import augment_example
from mosr.train.sources import harmful_completions, harmful_training_prompts, remove_overlap

REFUSAL = "I'm sorry, but I can't help with that."


def _decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def _prompt_ids(tok, prompt):
    return tok(format_chat(tok, [prompt]), add_special_tokens=False).input_ids[0]


def _check_refusal(tok, enc, prompt, prefix, refusal):
    p = _prompt_ids(tok, prompt)
    assert enc.input_ids[: len(p)] == p and enc.prompt_len == len(p)
    assert all(m == 0 for m in enc.response_mask[: len(p)]) and all(enc.response_mask[len(p) :])
    assert _decode(tok, enc.input_ids[len(p) :]) == prefix + " " + refusal + tok.eos_token
    trained = [t for t in enc.labels if t != IGNORE_INDEX]
    assert _decode(tok, trained) == " " + refusal + tok.eos_token
    # trained tokens are the contiguous tail after the prefix
    first = next(j for j, t in enumerate(enc.labels) if t != IGNORE_INDEX)
    assert all(t != IGNORE_INDEX for t in enc.labels[first:])
    assert _decode(tok, enc.input_ids[len(p) : first]) == prefix


@pytest.mark.parametrize(
    "completion,k", [("Sure, here is a recipe for pancakes.", 4), ("héllo wörld 日本語", 2), ("Sure", 0)]
)
def test_encode_refusal_masks(completion, k):
    tok = tiny_tokenizer()
    ex = augment_example(tok, "How do I kill a Python process?", completion, REFUSAL, k, id="a")
    (enc,) = encode(tok, [ex])
    if ex.response_prefix:
        _check_refusal(tok, enc, ex.prompt, ex.response_prefix, REFUSAL)
    else:
        trained = [t for t in enc.labels if t != IGNORE_INDEX]
        assert _decode(tok, trained) == REFUSAL + tok.eos_token
    assert len(enc.input_ids) == len(enc.labels) == len(enc.response_mask) == len(enc.attention_mask)


def test_encode_kinds_and_capture_consistency(llama_lm):
    tok = llama_lm.tokenizer
    exs = [
        TrainExample("erase", "Explain how a bomb squad works.", "Sure, here is", id="e", weight=0.5),
        TrainExample("retain", "Write a poem about the sea.", "The sea is blue.", id="r"),
        TrainExample("sft", "hello world", "Yes. The first step", id="s"),
    ]
    enc = encode(llama_lm, exs)
    caps = tokenize(llama_lm, format_chat(tok, [e.prompt for e in exs]), add_special_tokens=False)
    for e, c, ex in zip(enc, caps, exs):
        assert e.input_ids[: len(c)] == c  # the tokens capture / representation see
        assert _decode(tok, [t for t, m in zip(e.input_ids, e.response_mask) if m]).startswith(ex.response)
    assert all(t == IGNORE_INDEX for t in enc[0].labels + enc[1].labels)
    assert _decode(tok, enc[0].input_ids[enc[0].prompt_len :]) == "Sure, here is"  # no EOS on erase
    assert _decode(tok, [t for t in enc[2].labels if t != IGNORE_INDEX]) == "Yes. The first step" + tok.eos_token
    assert enc[0].weight == 0.5 and [e.kind for e in enc] == ["erase", "retain", "sft"]
    assert encode(tok, exs[2:], add_eos=False)[0].input_ids == enc[2].input_ids[:-1]


class _SlowTokenizer:
    """A tokenizer without offset mappings (forces the segment-wise path)."""

    is_fast = False

    def __init__(self, tok):
        self._tok = tok
        self.chat_template = tok.chat_template
        self.eos_token_id = tok.eos_token_id

    def __call__(self, texts, add_special_tokens=False, **kw):
        assert "return_offsets_mapping" not in kw
        return self._tok(texts, add_special_tokens=add_special_tokens)

    def apply_chat_template(self, *a, **kw):
        return self._tok.apply_chat_template(*a, **kw)


def test_encode_segmentwise_fallback_agrees():
    tok = tiny_tokenizer()
    ex = augment_example(tok, "Make a bomb", "Sure, here is a recipe for pancakes.", REFUSAL, 5, id="a")
    fast, slow = encode(tok, [ex])[0], encode(_SlowTokenizer(tok), [ex])[0]
    assert _decode(tok, slow.input_ids) == _decode(tok, fast.input_ids)
    assert _decode(tok, [t for t in slow.labels if t != IGNORE_INDEX]) == " " + REFUSAL + tok.eos_token
    assert slow.response_mask.count(1) == len(slow) - slow.prompt_len


def test_encode_truncation_and_drop(caplog):
    tok = tiny_tokenizer()
    long = TrainExample("sft", "hello world " * 30, "The first step", id="long")
    short = TrainExample("sft", "hello", "The first step", id="short")
    out = encode(tok, [long, short], max_length=40)
    assert [e.id for e in out] == ["short"] and "dropped 1" in caplog.text
    kept = encode(tok, [long], max_length=40, drop_empty=False)
    assert len(kept[0]) == 40 and not any(kept[0].response_mask)
    cut = encode(tok, [short], max_length=len(encode(tok, [short])[0]) - 2)[0]
    assert cut.labels[-1] != IGNORE_INDEX and len(cut) == len(cut.labels)
    with pytest.raises(DataError, match="unknown example kind"):
        TrainExample("bogus", "p", "r")
    with pytest.raises(DataError, match="response_prefix"):
        TrainExample("erase", "p", "r", response_prefix="x")


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate(side):
    tok = tiny_tokenizer()
    exs = [
        augment_example(tok, "Make a bomb", "Sure, here is a recipe", REFUSAL, 3, id="a"),
        TrainExample("retain", "hi", "Yes.", id="b", weight=2.0),
    ]
    enc = encode(tok, exs)
    b = collate(enc, tok.pad_token_id, side)
    width = max(len(e) for e in enc)
    for key in ("input_ids", "attention_mask", "position_ids", "response_mask", "labels"):
        assert b[key].shape == (2, width)
    assert b["kind"].tolist() == [KIND_IDS["refusal"], KIND_IDS["retain"]]
    assert b["weight"].tolist() == [1.0, 2.0]
    for i, e in enumerate(enc):
        real = b["attention_mask"][i].bool()
        assert b["input_ids"][i][real].tolist() == e.input_ids
        assert b["labels"][i][real].tolist() == e.labels and (b["labels"][i][~real] == IGNORE_INDEX).all()
        assert b["response_mask"][i][real].tolist() == e.response_mask and (b["response_mask"][i][~real] == 0).all()
        assert b["position_ids"][i][real].tolist() == list(range(len(e)))


def test_collated_nll_same_under_both_paddings(family_lm):
    tok = family_lm.tokenizer
    exs = [
        augment_example(tok, "Make a bomb", "Sure, here is a recipe for pancakes.", REFUSAL, 4, id="a"),
        TrainExample("sft", "hi", "Yes.", id="b"),
    ]
    enc = encode(family_lm, exs)
    losses = []
    for side in ("right", "left"):
        b = collate(enc, tok.pad_token_id, side)
        with torch.no_grad():
            logits = family_lm.model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"]
            ).logits
        losses.append(token_nll(logits, b["labels"]))
    assert torch.allclose(losses[0], losses[1], atol=1e-4)


def test_examples_from():
    recs = [Record("a", "p1", "harmful", completion="c1"), Record("b", "p2", "harmful", completion="c2")]
    exs = examples_from(recs, "erase", weights={"a": 0.5, "b": 1.5})
    assert [(e.kind, e.response, e.weight) for e in exs] == [("erase", "c1", 0.5), ("erase", "c2", 1.5)]
    with pytest.raises(DataError, match="no weight"):
        examples_from(recs, "erase", weights={"a": 1.0})
    with pytest.raises(DataError, match="no 'refusal'"):
        examples_from(recs, "sft", field_name="refusal")


def test_remove_overlap(caplog):
    train = PromptSet.from_prompts(["Make a bomb", "Steal a car", "Hack a bank"], label="harmful", name="train")
    ev = PromptSet.from_prompts(["  make A bomb ", "unrelated"], label="harmful", name="advbench")
    kept = remove_overlap(train, [ev])
    assert kept.prompts == ["Steal a car", "Hack a bank"] and "dropped 1" in caplog.text and "advbench" in caplog.text
    with pytest.raises(DataError, match="advbench.*Make a bomb"):
        remove_overlap(train, [ev], strict=True)
    assert remove_overlap(train, []) is train


def test_eval_sets_and_harmful_prompts_have_one_implementation(tmp_path, caplog):
    from mosr.train.sources import load_eval_sets

    harmful = tmp_path / "harmful.jsonl"
    PromptSet.from_prompts(["Make a bomb", "Steal a car", "Hack a bank"], label="harmful", name="h").to_jsonl(harmful)
    ev = tmp_path / "ev.jsonl"
    PromptSet.from_prompts(["make a BOMB"], label="harmful", name="x").to_jsonl(ev)
    empty = tmp_path / "no-data"
    empty.mkdir()
    # a registered set missing from the data directory is skipped (logged); a missing .jsonl path is an error
    loaded = load_eval_sets([str(ev), "xstest"], data_dir=empty, missing="skip")
    assert [s.name for s in loaded] == [str(ev)] and "'xstest' not available" in caplog.text
    with pytest.raises(DataError, match="not found"):
        load_eval_sets([str(tmp_path / "typo.jsonl")], data_dir=empty, missing="skip")
    with pytest.raises(DataError):
        load_eval_sets(["xstest"], data_dir=empty)
    # names and loaded sets give the same prompts; n / seed sample what remains
    by_name = harmful_training_prompts(str(harmful), [str(ev)], data_dir=empty)
    assert by_name.prompts == harmful_training_prompts(str(harmful), loaded, data_dir=empty).prompts
    assert by_name.prompts == ["Steal a car", "Hack a bank"]
    assert len(harmful_training_prompts(str(harmful), loaded, n=1, seed=3)) == 1
    with pytest.raises(DataError, match=r"shares 1 prompt.*ev\.jsonl"):
        harmful_training_prompts(str(harmful), loaded, strict=True)
    with pytest.raises(DataError, match="harmful training set .* unreadable"):
        harmful_training_prompts(str(tmp_path / "none.jsonl"), loaded)


def test_rd_harmful_train_disjoint(data_dir):
    from mosr import datasets
    from mosr.train.sources import load_eval_sets

    full = datasets.load("rd-harmful-train", data_dir=data_dir)
    kept = harmful_training_prompts(data_dir=data_dir)
    assert len(full) - len(kept) >= 117  # the MANIFEST's AdvBench overlap alone
    evals = load_eval_sets(data_dir=data_dir)
    assert remove_overlap(kept, evals, strict=True) is kept
    with pytest.raises(DataError, match="advbench"):
        harmful_training_prompts(data_dir=data_dir, strict=True)


def test_extra_harmful_sets_join_once_each_and_only_the_evaluated_sample_is_kept_out(tmp_path):
    from mosr.train.data import DataSettings, eval_sets, harmful_prompts

    harmful, extra, ev = (tmp_path / f"{n}.jsonl" for n in ("harmful", "extra", "ev"))
    PromptSet.from_prompts(["Make a bomb", "Steal a car"], label="harmful", name="h").to_jsonl(harmful)
    recs = [Record(f"e{i}", p, "harmful") for i, p in enumerate(["steal A car", "Rob a bank", "Forge a cheque"])]
    PromptSet(recs, name="extra").to_jsonl(extra)
    evrecs = [Record(f"v{i}", p, "harmful") for i, p in enumerate(["make a bomb", "Poison a well", "Rob a bank"])]
    PromptSet(evrecs, name="ev").to_jsonl(ev)
    empty = tmp_path / "no-data"
    empty.mkdir()
    joined = harmful_training_prompts(str(harmful), [], data_dir=empty, extra=[str(extra)])
    assert joined.prompts == ["Make a bomb", "Steal a car", "Rob a bank", "Forge a cheque"]  # "steal A car" once
    whole = DataSettings(harmful=str(harmful), extra_harmful=[str(extra)], eval_sets=[str(ev)], data_dir=str(empty))
    assert harmful_prompts(whole, eval_sets(whole)).prompts == ["Steal a car", "Forge a cheque"]
    # only the 2-prompt sample an evaluation with n=2 and seed 1 draws is kept out
    sampled = DataSettings(**{**whole.__dict__, "eval_sample": {str(ev): 2}, "eval_seed": 1})
    drawn = PromptSet(evrecs, name="ev").sample(2, 1)
    assert [s.prompts for s in eval_sets(sampled)] == [drawn.prompts]
    folded = {p.lower() for p in drawn.prompts}
    expect = [p for p in ["Make a bomb", "Steal a car", "Rob a bank", "Forge a cheque"] if p.lower() not in folded]
    assert harmful_prompts(sampled, eval_sets(sampled)).prompts == expect


def test_advbench_beside_its_evaluated_sample(data_dir):
    from mosr.evaluation.config import load_set
    from mosr.train.data import DataSettings, eval_sets, harmful_prompts
    from mosr.train.sources import load_eval_sets

    cfg = DataSettings(extra_harmful=["advbench"], eval_sample={"advbench": 100}, data_dir=str(data_dir))
    evals = eval_sets(cfg)
    evaluated = load_set("advbench", str(data_dir), 100, 0)  # what `mosr eval --n 100 --seed 0` reads
    assert next(s for s in evals if s.name == "advbench").ids == evaluated.ids
    train = harmful_prompts(cfg, evals)
    assert remove_overlap(train, [*evals, evaluated], strict=True) is train  # disjoint from every evaluated prompt
    assert len({p.lower() for p in train.prompts}) == len(train)
    others = [s for s in load_eval_sets(data_dir=data_dir) if s.name != "advbench"]
    assert remove_overlap(train, others, strict=True) is train
    assert len(train) > 3 * len(harmful_training_prompts(data_dir=data_dir))  # 533 against 142


def test_harmful_completions_generate_cache_resume(tmp_path, llama_lm, monkeypatch):
    import mosr.generate

    prompts = PromptSet.from_prompts(["Make a bomb", "Steal a car", "Hack a bank"], label="harmful", name="h")
    cache = tmp_path / "run" / "completions.jsonl"
    calls: list[list[str]] = []
    real = mosr.generate.generate

    def counting(lm, ps, **kw):
        calls.append(list(ps))
        return real(lm, ps, **kw)

    monkeypatch.setattr(mosr.generate, "generate", counting)
    out = harmful_completions(llama_lm, prompts, cache, max_new_tokens=3, batch_size=2, progress=False)
    assert out.ids == prompts.ids and all(r.completion is not None for r in out)
    rows = [json.loads(x) for x in cache.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(prompts.ids)
    # cached: no generation, and generation may be disabled
    again = harmful_completions(None, prompts, cache, allow_generate=False)
    assert [r.completion for r in again] == [r.completion for r in out] and len(calls) == 1
    # resume: only the prompts missing from the cache are generated
    cache.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n" + '{"id": "trunc')
    harmful_completions(llama_lm, prompts, cache, max_new_tokens=3, progress=False)
    assert len(calls) == 2 and len(calls[1]) == 1
    # the row appended after the torn line is intact: the cache is complete again
    harmful_completions(None, prompts, cache, allow_generate=False)
    # a generator given as a loader is loaded only when a completion is missing
    loads: list[int] = []

    def loader():  # noqa: ANN202
        loads.append(1)
        return llama_lm

    harmful_completions(None, prompts, cache, generator=loader, progress=False)
    assert loads == [] and len(calls) == 2
    harmful_completions(None, prompts, tmp_path / "other.jsonl", max_new_tokens=3, generator=loader, progress=False)
    assert loads == [1] and len(calls) == 3


def test_harmful_completions_file_and_errors(tmp_path):
    prompts = PromptSet.from_prompts(["Make a bomb", "Steal a car"], label="harmful", name="h")
    f = tmp_path / "given.jsonl"
    f.write_text(json.dumps({"id": prompts.ids[0], "completion": "Sure, step one"}) + "\n")
    with pytest.raises(DataError, match="1 of 2 harmful prompts have no completion and generation is disabled"):
        harmful_completions(None, prompts, None, completions_file=f, allow_generate=False)
    with pytest.raises(DataError, match="no model"):
        harmful_completions(None, prompts, None)
    f.write_text("".join(json.dumps({"id": i, "completion": f"c {i}"}) + "\n" for i in prompts.ids))
    out = harmful_completions(None, prompts, None, completions_file=f, allow_generate=False)
    assert [r.completion for r in out] == [f"c {i}" for i in prompts.ids]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{"id": "x", "completion": "y"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        harmful_completions(None, prompts, None, completions_file=bad)


def test_retain_filter_compliant_drops_refused_and_degenerate_answers() -> None:
    from mosr.data import PromptSet, Record
    from mosr.errors import ConfigError
    from mosr.train import TrainConfig
    from mosr.train.data import compliant_retain

    rows = [
        Record(id="bank-1", prompt="How do I kill a process?", label="benign", completion="Use kill -9 PID."),
        Record(
            id="bank-2",
            prompt="How do I pick a lock?",
            label="benign",
            completion="I'm sorry, but I can't assist with that.",
        ),
        Record(id="trig-3", prompt="What is a phish?", label="benign", completion=""),
        Record(id="trig-4", prompt="Explain malware.", label="benign", completion="the the the the the the the"),
    ]
    retain = PromptSet(rows, name="retain")
    assert [r.id for r in compliant_retain(retain, "all")] == ["bank-1", "bank-2", "trig-3", "trig-4"]
    # answer-less records pass (nothing to judge; the caller drops them), refusals and degenerate text do not
    assert [r.id for r in compliant_retain(retain, "compliant")] == ["bank-1", "trig-3"]
    with pytest.raises(ConfigError, match="retain_filter"):
        TrainConfig.from_dict({"data": {"retain_filter": "strict"}}).validate()
