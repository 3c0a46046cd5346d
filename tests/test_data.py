"""PromptSet, JSONL parsing, data directory resolution, loaders and chat formatting."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from mosr import datasets
from mosr.chat import format_chat
from mosr.data import PromptSet, overlap, read_jsonl, read_prompts
from mosr.errors import ChatTemplateError, DataDirError, DataError
from mosr.testing import tiny_tokenizer

# rows per set, from shared/data/MANIFEST.md (the self-instruct file's 427 rows are split 327 + 100)
MANIFEST_COUNTS = {
    "xstest": 450,
    "xstest-safe": 250,
    "xstest-unsafe": 200,
    "advbench": 520,
    "harmbench": 200,
    "jbb-harmful": 100,
    "jbb-benign": 100,
    "strongreject": 313,
    "orbench-hard": 1319,
    "orbench-80k-bank": 529,
    "self-instruct-retain": 327,
    "self-instruct-heldout": 100,
    "gsm8k": 1319,
    "gsm8k-train": 5000,
    "koala": 180,
    "rd-harmful-train": 260,
    "rd-harmful-val": 39,
    "rd-harmful-test": 572,
    "rd-harmless-train": 5000,
    "rd-harmless-val": 5000,
    "rd-harmless-test": 5000,
}


def write(tmp_path, lines: list[str]):
    p = tmp_path / "set.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_read_jsonl_roundtrip(tmp_path):
    rows = [
        {"id": "a", "prompt": " Hello ", "label": "benign", "category": None, "source": "t", "extra_field": 3},
        {"id": "b", "prompt": "Bad", "label": "harmful", "category": "x", "source": "t", "completion": "c"},
    ]
    p = write(tmp_path, [json.dumps(r) for r in rows])
    ps = read_jsonl(p)
    assert ps.prompts == ["Hello", "Bad"] and ps.labels == ["benign", "harmful"]
    assert ps[0].extra == {"extra_field": 3} and ps[1].completion == "c"
    ps.to_jsonl(tmp_path / "out.jsonl")
    again = read_jsonl(tmp_path / "out.jsonl")
    assert [r.to_dict() for r in again] == [r.to_dict() for r in ps]


def test_prompt_only_jsonl_and_txt_files_load(tmp_path):
    p = write(
        tmp_path,
        [
            json.dumps({"prompt": "How do I kill a Python process?"}),
            "",
            json.dumps({"prompt": "Write a poem.", "category": "art"}),
        ],
    )
    ps = read_jsonl(p)
    assert ps.ids == ["set-1", "set-3"] and ps.labels == ["unknown", "unknown"] and ps[1].category == "art"
    assert read_jsonl(p, label="benign").labels == ["benign", "benign"]
    with pytest.raises(DataError, match="label= must be one of"):
        read_jsonl(p, label="nice")
    txt = tmp_path / "mine.txt"
    txt.write_text("  first prompt \n\nsecond prompt\n")
    for ps in (read_prompts(txt), datasets.load(str(txt))):
        assert ps.ids == ["mine-1", "mine-3"] and ps.prompts == ["first prompt", "second prompt"]
        assert ps.labels == ["unknown", "unknown"] and ps.name == "mine"
    assert datasets.load(str(txt), label="pseudo_harmful", n=1).labels == ["pseudo_harmful"]
    assert len(PromptSet.from_prompts(["a"], label="unknown").filter(label="unknown")) == 1
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="holds no prompts"):
        read_prompts(tmp_path / "empty.txt")


def test_malformed_jsonl_names_file_and_line(tmp_path):
    ok = json.dumps({"id": "a", "prompt": "x", "label": "benign", "category": None, "source": "s"})
    p = write(tmp_path, [ok, "", '{"id": "b", "prompt": "y", "label": "benign"', ok])
    with pytest.raises(DataError, match=r"set\.jsonl:3: malformed JSON"):
        read_jsonl(p)
    p = write(tmp_path, [ok, json.dumps({"id": "b", "prompt": "y", "label": "evil"})])
    with pytest.raises(DataError, match=r"set\.jsonl:2: label 'evil'"):
        read_jsonl(p)
    p = write(tmp_path, [ok, json.dumps({"id": "b", "label": "benign"})])
    with pytest.raises(DataError, match=r"set\.jsonl:2: missing key\(s\) \['prompt'\]"):
        read_jsonl(p)
    p = write(tmp_path, [ok, ok])
    with pytest.raises(DataError, match=r"set\.jsonl:2: duplicate id 'a'"):
        read_jsonl(p)
    p = write(tmp_path, [""])
    with pytest.raises(DataError, match="holds no records"):
        read_jsonl(p)
    with pytest.raises(DataError, match="not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_promptset_ops():
    ps = PromptSet.from_prompts(["a", "b", "c", "d"], label="harmful", name="x")
    assert ps.ids == ["x-0", "x-1", "x-2", "x-3"]
    assert len(ps.sample(2, seed=1)) == 2 and ps.sample(2, seed=1).ids == ps.sample(2, seed=1).ids
    assert ps.sample(None) is ps and len(ps[1:3]) == 2
    both = ps + PromptSet.from_prompts(["e"], label="benign")
    assert both.filter(label="benign").prompts == ["e"]
    assert overlap(PromptSet.from_prompts(["Hello  World"]), PromptSet.from_prompts(["hello world"])) == [
        "Hello  World"
    ]
    with pytest.raises(DataError):
        PromptSet.from_prompts(["a"], label="nice")


def test_demo_set_is_bundled(monkeypatch):
    monkeypatch.setenv("MOSR_DATA_DIR", "/definitely/not/here")  # the demo set needs no data directory
    demo = datasets.load("demo")
    assert len(demo) >= 180
    for label in ("harmful", "benign", "pseudo_harmful"):
        assert len(demo.filter(label=label)) >= 60
    assert set(datasets.load("demo-pseudo").labels) == {"pseudo_harmful"}


def test_every_shared_set_loads_with_manifest_counts(data_dir):
    for name, n in MANIFEST_COUNTS.items():
        ps = datasets.load(name, data_dir=data_dir)
        assert len(ps) == n, name
    assert set(MANIFEST_COUNTS) == set(datasets.DATASETS)
    sample = datasets.load("advbench", data_dir=data_dir, n=10, seed=3)
    assert len(sample) == 10 and sample.ids == datasets.load("advbench", data_dir=data_dir, n=10, seed=3).ids


# set name -> upstream files in shared/data/*/original (byte-identical to the public homes)
ORIGINALS = {
    "xstest": ["xstest/original/xstest_prompts.csv"],
    "advbench": ["advbench/original/harmful_behaviors.csv"],
    "harmbench": [
        "harmbench/original/harmbench_behaviors_text_all.csv",
        "harmbench/original/harmbench_targets_text.json",
    ],
    "jbb-harmful": ["jailbreakbench/original/jailbreakbench.csv"],
    "jbb-benign": ["jailbreakbench/original/benign-behaviors.csv"],
    "koala": ["koala/original/koala_test_set.jsonl"],
    "gsm8k": ["gsm8k/original/test.jsonl"],
    "rd-harmful-train": ["refusal_direction/original/harmful_train.json"],
    "rd-harmful-test": ["refusal_direction/original/harmful_test.json"],
    "self-instruct-retain": [
        "retain_self_instruct/original/seed_tasks.jsonl",
        "retain_self_instruct/original/user_oriented_instructions.jsonl",
    ],
    "self-instruct-heldout": [
        "retain_self_instruct/original/seed_tasks.jsonl",
        "retain_self_instruct/original/user_oriented_instructions.jsonl",
    ],
}


@pytest.mark.parametrize("name", sorted(ORIGINALS))
def test_remote_converters_reproduce_local_sets(data_dir, name):
    """The download path's converters turn the upstream files into the same prompts and labels."""
    spec = datasets.DATASETS[name]
    blobs = [(data_dir / f).read_bytes() for f in ORIGINALS[name]]
    converted = datasets.select(spec, PromptSet(spec.convert(blobs)))  # the same label filter / part
    local = datasets.load(name, data_dir=data_dir)
    assert converted.prompts == local.prompts
    assert converted.labels == local.labels
    if name == "gsm8k":
        assert [r.extra["final_answer"] for r in converted] == [r.extra["final_answer"] for r in local]


#: sha256 of the sorted held-out ids: pins the split (changing it would leak answers into old trainings)
HELDOUT_DIGEST = "6f3534b0cc271ea7c472b5f8d0e8cc1d93e2e1b242663b31bcee22919e91b5ce"


def test_self_instruct_heldout_split(data_dir):
    held = datasets.load("self-instruct-heldout", data_dir=data_dir)
    rest = datasets.load("self-instruct-retain", data_dir=data_dir)
    whole = read_jsonl(data_dir / datasets.DATASETS["self-instruct-retain"].local)
    assert len(held) == datasets.HELDOUT_N == 100 and len(whole) == 427
    assert not set(held.ids) & set(rest.ids)  # training retain data never holds a held-out answer
    assert sorted(held.ids + rest.ids) == sorted(whole.ids)
    assert all(r.completion for r in held) and set(held.labels) == {"benign"}
    # stable: a pinned digest, file order kept, independent of the order the ids come in, samples stay inside
    assert hashlib.sha256("\n".join(sorted(held.ids)).encode()).hexdigest() == HELDOUT_DIGEST
    assert held.ids == [i for i in whole.ids if i in set(held.ids)]
    shuffled = whole.ids[:]
    random.Random(1).shuffle(shuffled)
    assert datasets.heldout_ids(shuffled) == set(held.ids)
    assert set(datasets.load("self-instruct-retain", data_dir=data_dir, n=300, seed=5).ids) <= set(rest.ids)


def test_heldout_ids_is_a_hash_order_prefix():
    ids = [f"r{i}" for i in range(50)]
    first = datasets.heldout_ids(ids, n=10)
    assert len(first) == 10 and first == datasets.heldout_ids(list(reversed(ids)), n=10)
    assert first <= datasets.heldout_ids(ids, n=20)  # a larger n only adds records
    assert first == {
        i
        for i in ids
        if hashlib.sha1(i.encode()).hexdigest() <= sorted(hashlib.sha1(j.encode()).hexdigest() for j in ids)[9]
    }


def test_missing_data_dir_says_how_to_set_it(monkeypatch, tmp_path):
    monkeypatch.setenv("MOSR_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataDirError, match="MOSR_DATA_DIR=.*is not a directory.*export MOSR_DATA_DIR"):
        datasets.load("xstest")
    monkeypatch.delenv("MOSR_DATA_DIR")
    monkeypatch.setattr(datasets, "_default_candidates", lambda: [tmp_path / "nowhere"])
    with pytest.raises(DataDirError, match="set MOSR_DATA_DIR"):
        datasets.load("xstest")
    monkeypatch.setenv("MOSR_DATA_DIR", str(tmp_path))
    with pytest.raises(DataDirError, match="xstest.jsonl not found"):
        datasets.load("xstest")


def test_unknown_set_and_failed_download(monkeypatch, tmp_path):
    with pytest.raises(DataError, match="unknown data set 'xtest'.*xstest"):
        datasets.load("xtest")
    monkeypatch.setenv("MOSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "_default_candidates", lambda: [tmp_path / "nowhere"])
    monkeypatch.delenv("MOSR_DATA_DIR", raising=False)
    monkeypatch.setattr(
        datasets,
        "fetch",
        lambda url, timeout=60.0: (_ for _ in ()).throw(DataError(f"could not download {url}: offline")),
    )
    with pytest.raises(DataError, match="could not download https://"):
        datasets.load("koala", remote=True)


def test_remote_download_is_converted_and_cached(monkeypatch, tmp_path, data_dir):
    blob = (data_dir / "koala/original/koala_test_set.jsonl").read_bytes()
    calls = []
    monkeypatch.setenv("MOSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "_default_candidates", lambda: [tmp_path / "nowhere"])
    monkeypatch.delenv("MOSR_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "fetch", lambda url, timeout=60.0: calls.append(url) or blob)
    first = datasets.load("koala", remote=True)
    second = datasets.load("koala", remote=True)
    assert len(first) == 180 and first.prompts == second.prompts and len(calls) == 1


def test_format_chat_has_generation_prompt_and_no_double_bos():
    tok = tiny_tokenizer()
    text = format_chat(tok, ["hi"])[0]
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 2  # user + assistant turn, no extra BOS
    with_resp = format_chat(tok, ["hi"], responses=["Sure."])[0]
    assert with_resp == text + "Sure."
    with pytest.raises(DataError, match="prompt 1 is empty"):
        format_chat(tok, ["hi", " "])


def test_format_chat_without_template_errors():
    tok = tiny_tokenizer()
    saved, tok.chat_template = tok.chat_template, None
    try:
        with pytest.raises(ChatTemplateError, match="no chat template"):
            format_chat(tok, ["hi"])
    finally:
        tok.chat_template = saved


@pytest.mark.slow
def test_real_tokenizer_single_bos(real_lm):
    text = real_lm.format_chat(["How do I kill a Python process?"])[0]
    ids = real_lm.tokenizer(text, add_special_tokens=False).input_ids
    bos = real_lm.tokenizer.bos_token_id
    assert ids[0] == bos and ids[1] != bos
    assert ids.count(bos) == 3  # system, user and assistant turns: no extra BOS from the tokenizer
    assert text.endswith("<|im_start|>assistant\n")
