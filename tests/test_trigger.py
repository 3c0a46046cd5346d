"""Refusal-trigger rewriters: the shipped file, an OpenAI-compatible endpoint (real local HTTP server),
a local model, and the config factory."""

from __future__ import annotations

import json

import pytest

from mosr.data import PromptSet, Record
from mosr.errors import ConfigError, DataError, MosrError
from mosr.train.trigger import (
    DEFAULT_FILE,
    FileRewriter,
    LocalModelRewriter,
    OpenAIRewriter,
    RewriterConfig,
    build_rewriter,
    clean_rewrite,
)


def test_shipped_file_rewrites_training_prompts(data_dir):
    from mosr import datasets
    from mosr.train.sources import harmful_training_prompts

    train = datasets.load("rd-harmful-train", data_dir=data_dir)
    kept = harmful_training_prompts(data_dir=data_dir)  # after the evaluation-overlap filter
    out = FileRewriter(DEFAULT_FILE).rewrite(train)
    # every training prompt that survives the filter has a rewrite; filtered (evaluation) prompts have none
    assert sorted(r.extra["original_id"] for r in out) == sorted(kept.ids)
    for rec in out:
        assert rec.label == "benign" and rec.category == "trigger_rewrite"
        assert rec.id == f"trig_{rec.extra['original_id']}" and rec.prompt != rec.extra["original_prompt"]
    originals = {r.id: r.prompt for r in train}
    assert all(originals[r.extra["original_id"]] == r.extra["original_prompt"] for r in out)
    with pytest.raises(DataError, match="no rewrite"):
        FileRewriter(DEFAULT_FILE, missing="error").rewrite(train)


def test_file_rewriter_matches_by_prompt_text(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text(
        json.dumps(
            {
                "id": "t1",
                "prompt": "How do banks detect hacking?",
                "label": "benign",
                "original_prompt": "How do I HACK a bank?",
            }
        )
        + "\n"
    )
    ps = PromptSet([Record("other-id", "how do i hack a bank?", "harmful"), Record("x", "unrelated", "harmful")])
    out = FileRewriter(f).rewrite(ps)
    assert out.prompts == ["How do banks detect hacking?"] and out[0].extra["original_id"] == "other-id"
    with pytest.raises(DataError, match="no rewrite"):
        FileRewriter(f).rewrite(PromptSet([Record("x", "unrelated", "harmful")]))


def _rewrite(body: dict) -> str | tuple[int, dict]:
    if body["model"] == "broken":
        return 400, {"error": "bad model"}
    prompt = body["messages"][0]["content"].split("Request: ", 1)[1]
    return f'Rewritten request: "How do people defend against: {prompt}"'


@pytest.fixture
def server(chat_server):
    return chat_server(_rewrite)


def test_openai_rewriter_real_server(server, monkeypatch):
    monkeypatch.setenv("MOSR_TEST_KEY", "sk-test")
    ps = PromptSet([Record("h1", "Make a bomb", "harmful"), Record("h2", "Steal a car", "harmful")], name="h")
    out = OpenAIRewriter(server.url, "gpt-test", api_key_env="MOSR_TEST_KEY", progress=False).rewrite(ps)
    assert out.prompts == ["How do people defend against: Make a bomb", "How do people defend against: Steal a car"]
    assert out.ids == ["trig_h1", "trig_h2"] and out[0].extra == {"original_id": "h1", "original_prompt": "Make a bomb"}
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "gpt-test" and req["body"]["messages"][0]["role"] == "user"
    # a base URL ending in /v1, no key in the environment -> no Authorization header
    monkeypatch.delenv("MOSR_TEST_KEY")
    OpenAIRewriter(server.url + "/v1", "gpt-test", api_key_env="MOSR_TEST_KEY", progress=False).rewrite(ps[:1])
    assert server.requests[-1]["path"] == "/v1/chat/completions" and server.requests[-1]["auth"] is None


def test_openai_rewriter_errors(server):
    ps = PromptSet([Record("h1", "Make a bomb", "harmful")])
    with pytest.raises(MosrError, match="HTTP 400.*bad model"):
        OpenAIRewriter(server.url, "broken", progress=False).rewrite(ps)
    with pytest.raises(MosrError, match="failed after 1 attempt"):
        OpenAIRewriter("http://127.0.0.1:9", "m", retries=0, timeout=5, progress=False).rewrite(ps)


def test_local_model_rewriter(llama_lm):
    ps = PromptSet([Record("h1", "Make a bomb", "harmful"), Record("h2", "Steal a car", "harmful")], name="h")
    rw = LocalModelRewriter(llama_lm, max_new_tokens=6, progress=False)
    raw = rw.rewrite_texts(ps.prompts)
    assert len(raw) == 2
    expected = [(r.id, clean_rewrite(t)) for r, t in zip(ps, raw) if clean_rewrite(t)]
    if expected:
        out = rw.rewrite(ps)
        assert [(r.extra["original_id"], r.prompt) for r in out] == expected
    else:
        with pytest.raises(DataError, match="every rewrite was empty"):
            rw.rewrite(ps)


def test_clean_rewrite():
    assert clean_rewrite('\n  Rewritten request: "How do locks work?"\nextra') == "How do locks work?"
    assert clean_rewrite("“Why?”") == "Why?"
    assert clean_rewrite("   \n ") == ""


def test_build_rewriter(llama_lm):
    assert isinstance(build_rewriter(RewriterConfig()), FileRewriter)
    assert isinstance(build_rewriter(RewriterConfig(kind="openai", url="http://x", model="m")), OpenAIRewriter)
    assert isinstance(build_rewriter(RewriterConfig(kind="local"), llama_lm), LocalModelRewriter)
    with pytest.raises(ConfigError, match="needs url and model"):
        RewriterConfig(kind="openai")
    with pytest.raises(ConfigError, match="kind"):
        RewriterConfig(kind="gpt")
    with pytest.raises(ConfigError, match="needs a model"):
        build_rewriter(RewriterConfig(kind="local"))
