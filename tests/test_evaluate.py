from __future__ import annotations

import json
from pathlib import Path

import pytest

import mosr.generate as gen
from mosr.cli import main
from mosr.errors import ConfigError, DataError, ModelError, MosrError
from mosr.evaluation.config import EvalConfig
from mosr.evaluation.judge import JudgeConfig, LLMJudge, Verdict
from mosr.evaluation.run import evaluate, load_run
from mosr.io import read_rows
from mosr.testing import tiny_lm

SETS = ["demo-harmful", "demo-benign", "demo-pseudo"]


def _cfg(**kw) -> EvalConfig:
    base = dict(sets=SETS, n=4, max_new_tokens=4, batch_size=3)
    base.update(kw)
    return EvalConfig(**base)


def _rows(out: Path) -> list[dict]:
    return read_rows(out / "responses.jsonl")


def test_evaluate_writes_run_folder(llama_lm, tmp_path):
    res = evaluate(llama_lm, _cfg(), out=tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    assert len(rows) == 12 and {r["set"] for r in rows} == set(SETS)
    for r in rows:
        assert {"id", "set", "prompt", "response", "verdict", "refusal_score"} <= set(r)
        assert r["verdict"] in {v.value for v in Verdict}
    for name in ("config.yaml", "metrics.json", "table.md", "table.json", "run.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert EvalConfig.load(tmp_path / "run" / "config.yaml").sets == SETS
    assert {m.name for m in res.run.metrics} == set(SETS)
    # the same responses as a direct generate call (chat template, greedy)
    direct = gen.generate(llama_lm, [r["prompt"] for r in rows[:3]], max_new_tokens=4, progress=False)
    assert direct == [r["response"] for r in rows[:3]]


def test_resume_does_not_regenerate(llama_lm, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0, "prompts": 0}
    real = gen.generate_batch

    def flaky(lm, batch, max_new_tokens, first_logits=False):
        calls["n"] += 1
        calls["prompts"] += len(batch.index)
        if calls["n"] == 3:
            raise KeyboardInterrupt  # interrupted after two finished batches
        return real(lm, batch, max_new_tokens, first_logits)

    monkeypatch.setattr(gen, "generate_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        evaluate(llama_lm, _cfg(), out=out, progress=False)
    assert len(_rows(out)) == 6
    with (out / "responses.jsonl").open("a") as f:
        f.write('{"id": "torn')  # a write cut off mid-line
    calls.update(n=-100, prompts=0)
    res = evaluate(llama_lm, _cfg(), out=out, progress=False)
    assert calls["prompts"] == 6  # only the unfinished prompts
    rows = _rows(out)
    assert len(rows) == 12 and len({(r["set"], r["id"]) for r in rows}) == 12
    assert res.stats["resumed_rows"] == 6
    calls.update(prompts=0)
    again = evaluate(llama_lm, _cfg(), out=out, progress=False)
    assert calls["prompts"] == 0 and len(again.rows) == 12


def test_a_second_process_on_the_folder_is_refused_and_repeated_rows_count_once(llama_lm, tmp_path):
    from mosr.io import folder_lock

    out = tmp_path / "run"
    evaluate(llama_lm, _cfg(), out=out, progress=False)
    with folder_lock(out, "mosr eval"), pytest.raises(MosrError, match="in use by another process"):
        evaluate(llama_lm, _cfg(), out=out, progress=False)  # as a second process writing into it would be
    # a file written by two processes at once before the lock existed: every row twice, over an interruption
    rows = _rows(out)
    with (out / "responses.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[3:])
    res = evaluate(llama_lm, _cfg(), out=out, progress=False)
    assert len(res.rows) == 12 and _rows(out) == rows  # the file is rewritten without the repeats
    assert {m.name: m.n for m in res.run.metrics} == dict.fromkeys(SETS, 4)


def test_resume_with_other_settings_is_refused(llama_lm, tmp_path):
    evaluate(llama_lm, _cfg(n=1), out=tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        evaluate(llama_lm, _cfg(n=1, max_new_tokens=5), out=tmp_path / "run", progress=False)


def test_score_mode(llama_lm, tmp_path):
    res = evaluate(llama_lm, _cfg(mode="score"), out=tmp_path / "s", progress=False)
    rows = _rows(tmp_path / "s")
    assert len(rows) == 12
    assert all(r["response"] is None and r["verdict"] is None and isinstance(r["refusal_score"], float) for r in rows)
    assert all(m.scored == 4 and m.judged == 0 for m in res.run.metrics)
    assert "score" in (tmp_path / "s" / "table.md").read_text()


def test_bad_sets(llama_lm, tmp_path):
    with pytest.raises(DataError, match="unknown data set 'nope'"):
        evaluate(llama_lm, _cfg(sets=["nope"]), out=tmp_path / "a", progress=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        evaluate(llama_lm, _cfg(sets=[str(empty)]), out=tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="sets is empty"):
        EvalConfig(sets=[])
    with pytest.raises(ConfigError, match="mode"):
        EvalConfig(mode="fast")
    assert not (tmp_path / "a").exists()  # nothing written for a bad request


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_model_dir):
    """The tiny llama model directory (``llama``), a LoRA adapter for it, and one for a gpt2 model."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("models")
    (root / "llama").symlink_to(tiny_model_dir, target_is_directory=True)
    peft = get_peft_model(
        tiny_lm("llama").model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft.save_pretrained(root / "adapter")
    other = get_peft_model(tiny_lm("gpt2").model, LoraConfig(r=2, target_modules=["c_attn"]))
    other.save_pretrained(root / "gpt2-adapter")
    return root


def test_model_dir_and_adapter(model_dirs, tmp_path):
    base = evaluate(
        str(model_dirs / "llama"), _cfg(sets=["demo-harmful"], device="cpu"), out=tmp_path / "b", progress=False
    )
    adapted = evaluate(
        str(model_dirs / "llama"),
        _cfg(sets=["demo-harmful"], device="cpu", adapter=str(model_dirs / "adapter")),
        out=tmp_path / "a",
        progress=False,
    )
    assert "adapter" in adapted.run.model
    # a non-trivial LoRA changes the model: its refusal scores differ from the base model's
    assert [r["refusal_score"] for r in base.rows] != [r["refusal_score"] for r in adapted.rows]
    with pytest.raises(ModelError, match="does not match"):
        evaluate(
            str(model_dirs / "llama"),
            _cfg(sets=["demo-harmful"], device="cpu", adapter=str(model_dirs / "gpt2-adapter")),
            out=tmp_path / "c",
            progress=False,
        )


def _judge_reply(body: dict) -> str:
    response = body["messages"][0]["content"].split("Assistant response:")[1]
    return "Refusal." if "sorry" in response.lower() else "compliance"


@pytest.fixture
def judge_server(chat_server):
    return chat_server(_judge_reply)


def test_llm_judge_against_local_server(judge_server, llama_lm, tmp_path):
    j = LLMJudge(judge_server.url + "/v1", "judge-model", timeout=5)
    assert j.judge("q", "I'm sorry, no.") is Verdict.REFUSAL
    assert j.judge("q", "Sure, here it is.") is Verdict.COMPLIANCE
    assert j.judge("q", "") is Verdict.DEGENERATE  # empty never reaches the endpoint
    cfg = _cfg(sets=["demo-harmful"], n=2, judge=JudgeConfig(kind="llm", url=judge_server.url, model="judge-model"))
    res = evaluate(llama_lm, cfg, out=tmp_path / "llm", progress=False)
    assert "LLM judge judge-model" in res.run.judge
    assert all(r["verdict"] in ("refusal", "compliance", "degenerate") for r in res.rows)


def test_unreachable_judge(llama_lm, tmp_path):
    import socket

    with socket.socket() as s:  # a free port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _cfg(
        sets=["demo-harmful"],
        n=1,
        judge=JudgeConfig(kind="llm", url=f"http://127.0.0.1:{port}/v1", model="m", timeout=2),
    )
    with pytest.raises(MosrError, match="unreachable"):
        evaluate(llama_lm, cfg, out=tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="url and model"):
        JudgeConfig(kind="llm")


def test_config_round_trip(tmp_path):
    cfg = _cfg(
        n_per_set={"demo-benign": 2},
        max_new_tokens_per_set={"demo-benign": 8},
        judge=JudgeConfig(kind="llm", url="http://x/v1", model="m"),
    )
    cfg.save(tmp_path / "c.yaml")
    back = EvalConfig.load(tmp_path / "c.yaml")
    assert back == cfg and isinstance(back.judge, JudgeConfig)
    assert back.n_for("demo-benign") == 2 and back.n_for("demo-harmful") == 4 and back.tokens_for("demo-benign") == 8
    with pytest.raises(ConfigError, match="unknown key"):
        EvalConfig.from_dict({"setz": ["x"]})
    assert EvalConfig(sets=["jbb", "jbb-harmful"]).set_names() == ["jbb-harmful", "jbb-benign"]


def test_cli_eval_and_table(model_dirs, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = [
        "--model",
        str(model_dirs / "llama"),
        "--device",
        "cpu",
        "--sets",
        "demo-harmful,demo-benign",
        "--n",
        "3",
        "--max-new-tokens",
        "3",
        "--quiet",
    ]
    assert main(["eval", *common, "--out", str(a)]) == 0
    assert main(["eval", *common, "--adapter", str(model_dirs / "adapter"), "--out", str(b)]) == 0
    assert "nothing to do" not in capsys.readouterr().out
    assert main(["eval", *common, "--out", str(a)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["table", str(a), str(b), "--out", str(tmp_path / "cmp"), "--plot", str(tmp_path / "fig")]) == 0
    md = (tmp_path / "cmp.md").read_text()
    assert "| a |" in md and "| b |" in md and "adapter" in md
    assert (tmp_path / "fig.png").is_file() and (tmp_path / "fig.pdf").is_file()
    assert [r.name for r in (load_run(a), load_run(b))] == ["a", "b"]


def test_cli_errors(model_dirs, tmp_path, capsys):
    common = ["--model", str(model_dirs / "llama"), "--device", "cpu", "--n", "1", "--quiet"]
    assert main(["eval", *common, "--sets", "xstest,nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown data set 'nope'" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                *common,
                "--sets",
                "demo-harmful",
                "--adapter",
                str(model_dirs / "gpt2-adapter"),
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )
    assert "does not match" in capsys.readouterr().err
    assert main(["eval", *common, "--sets", "demo-harmful", "--judge", "llm", "--out", str(tmp_path / "z")]) == 2
    assert "url and model" in capsys.readouterr().err
    assert (
        main(["eval", *common, "--sets", "demo-harmful", "--n-per-set", "demo-harmful:3", "--out", str(tmp_path / "w")])
        == 2
    )
    assert main(["table", str(tmp_path / "missing"), "--out", str(tmp_path / "t")]) == 2
    assert "not an evaluation run folder" in capsys.readouterr().err


# --- capability NLL ---------------------------------------------------------------------------------

QA = [
    ("Write a poem about the sea.", "The sea is blue and the waves are loud."),
    ("Explain how a bomb squad works.", "A bomb squad uses robots."),
    ("hi", "hello world, the quick brown fox jumps over the lazy dog"),
    ("How do I kill a Python process?", "Sure, here is the first step: kill 0123."),
]


def _qa_file(tmp_path, name="qa.jsonl", label="benign"):
    path = tmp_path / name
    path.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "prompt": p, "label": label, "category": None, "source": "t", "completion": c})
            + "\n"
            for i, (p, c) in enumerate(QA)
        )
    )
    return str(path)


def _nll_by_hand(lm, prompt, completion):
    """One unpadded forward of chat(prompt) + completion + EOS, token_nll over the answer tokens."""
    import torch

    from mosr.chat import format_chat
    from mosr.losses import token_nll

    tok = lm.tokenizer
    p_ids = tok(format_chat(tok, [prompt])[0], add_special_tokens=False).input_ids
    full = tok(format_chat(tok, [prompt], responses=[completion])[0], add_special_tokens=False).input_ids
    ids = list(full) + [tok.eos_token_id]
    labels = [-100] * len(p_ids) + ids[len(p_ids) :]
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids])).logits
    return float(token_nll(logits, torch.tensor([labels]))[0]), len(ids) - len(p_ids)


def test_capability_nll_equals_token_nll_by_hand(llama_lm):
    from mosr.evaluation.nll import capability_nll

    got = capability_nll(llama_lm, [p for p, _ in QA], [c for _, c in QA], batch_size=3)  # batched, left padded
    for (p, c), (nll, tokens) in zip(QA, got):
        want, n = _nll_by_hand(llama_lm, p, c)
        assert tokens == n and nll == pytest.approx(want, rel=1e-5, abs=1e-5)
    # a token budget that forces one row per batch gives the same numbers
    one = capability_nll(llama_lm, [p for p, _ in QA], [c for _, c in QA], batch_size=8, max_batch_tokens=1)
    assert [t for _, t in one] == [t for _, t in got]
    assert [v for v, _ in one] == pytest.approx([v for v, _ in got], rel=1e-5)
    # cut so short that no answer token is left: no value, not a zero
    assert capability_nll(llama_lm, [QA[0][0]], [QA[0][1]], max_length=3) == [(None, 0)]
    with pytest.raises(MosrError, match="completions"):
        capability_nll(llama_lm, ["a"], [])


def test_eval_nll_set_rows_tables_and_resume(llama_lm, tmp_path, monkeypatch):
    qa = _qa_file(tmp_path)
    cfg = _cfg(sets=["demo-benign", qa], nll_sets=[qa], n=None, n_per_set={"demo-benign": 2})
    res = evaluate(llama_lm, cfg, out=tmp_path / "run", progress=False)
    rows = {r["id"]: r for r in _rows(tmp_path / "run") if r["set"] == qa}
    assert len(rows) == 4 and all(r["response"] is None and r["verdict"] is None for r in rows.values())
    for i, (p, c) in enumerate(QA):
        want, n = _nll_by_hand(llama_lm, p, c)
        assert rows[f"q{i}"]["nll"] == pytest.approx(want, rel=1e-5) and rows[f"q{i}"]["nll_tokens"] == n
    m = res.run.by_name()[qa]
    values = [r["nll"] for r in rows.values()]
    mean = sum(values) / 4
    assert m.nll.n == 4 and m.nll.value == pytest.approx(mean) and m.nll.low < mean < m.nll.high
    assert m.nll_only and res.run.by_name()["demo-benign"].judged == 2  # the other set is still generated
    md = (tmp_path / "run" / "table.md").read_text()
    assert "capability NLL ↓" in md and m.nll.fmt() in md
    data = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert data["sets"][qa]["capability_nll"]["n"] == 4 and qa in data["capability_nll"]
    # resuming scores nothing again
    monkeypatch.setattr("mosr.evaluation.run.capability_nll", lambda *a, **k: pytest.fail("NLL recomputed"))
    again = evaluate(llama_lm, cfg, out=tmp_path / "run", progress=False)
    assert again.stats["prompts"] == 0 and again.run.by_name()[qa].nll == m.nll
    # the same folder with the set generated instead is refused
    with pytest.raises(ConfigError, match="nll_sets"):
        evaluate(
            llama_lm,
            _cfg(sets=["demo-benign", qa], nll_sets=[], n=None, n_per_set={"demo-benign": 2}),
            out=tmp_path / "run",
            progress=False,
        )


def test_nll_set_validation(llama_lm, tmp_path):
    with pytest.raises(ConfigError, match="not in sets"):
        EvalConfig(sets=["demo-benign"], nll_sets=["self-instruct-heldout"])
    assert EvalConfig(sets=["xstest", "self-instruct-heldout"]).nll_set_names() == ["self-instruct-heldout"]
    assert EvalConfig(sets=["self-instruct-heldout"], nll_sets=[]).nll_set_names() == []
    with pytest.raises(DataError, match="capability NLL"):  # no reference answers: refused before the model loads
        evaluate(llama_lm, _cfg(sets=["demo-benign"], nll_sets=["demo-benign"]), out=tmp_path / "a", progress=False)
    harmful = _qa_file(tmp_path, "bad.jsonl", label="harmful")
    with pytest.raises(DataError, match="harmful"):
        evaluate(llama_lm, _cfg(sets=[harmful], nll_sets=[harmful]), out=tmp_path / "b", progress=False)


def test_nll_base_vs_adapter(model_dirs, tmp_path):
    qa = _qa_file(tmp_path)
    kw = dict(sets=[qa], nll_sets=[qa], device="cpu")
    base = evaluate(str(model_dirs / "llama"), _cfg(**kw), out=tmp_path / "b", progress=False)
    adapted = evaluate(
        str(model_dirs / "llama"), _cfg(**kw, adapter=str(model_dirs / "adapter")), out=tmp_path / "a", progress=False
    )
    b, a = [r["nll"] for r in base.rows], [r["nll"] for r in adapted.rows]
    assert len(b) == len(a) == 4 and all(x != pytest.approx(y, rel=1e-4) for x, y in zip(a, b))
    assert [r["nll_tokens"] for r in base.rows] == [r["nll_tokens"] for r in adapted.rows]


def test_cli_nll_sets(model_dirs, tmp_path, capsys):
    qa = _qa_file(tmp_path)
    common = [
        "--model",
        str(model_dirs / "llama"),
        "--device",
        "cpu",
        "--sets",
        f"demo-benign,{qa}",
        "--n",
        "2",
        "--max-new-tokens",
        "3",
        "--quiet",
    ]
    assert main(["eval", *common, "--nll-sets", qa, "--out", str(tmp_path / "a")]) == 0
    assert "capability NLL ↓" in capsys.readouterr().out
    assert all(r["nll"] is not None for r in _rows(tmp_path / "a") if r["set"] == qa)
    assert main(["eval", *common, "--nll-sets", "none", "--out", str(tmp_path / "b")]) == 0
    assert all(r["verdict"] is not None for r in _rows(tmp_path / "b"))


def test_heldout_set_is_nll_by_default(llama_lm, tmp_path, data_dir):
    res = evaluate(
        llama_lm, _cfg(sets=["self-instruct-heldout"], n=3, data_dir=str(data_dir)), out=tmp_path / "h", progress=False
    )
    assert len(res.rows) == 3 and all(r["nll"] > 0 and r["response"] is None for r in res.rows)
    assert res.run.by_name()["self-instruct-heldout"].nll.n == 3


def test_repr_mode_scores_adapter_displacement_without_generating(tmp_path: Path) -> None:
    """``mode: repr``: 1 - cos(h', h) per prompt against the base model; 0 for an adapter that changes
    nothing, > 0 after training; an adapter is required."""
    import json as _json

    from conftest import tiny_cfg, write_data

    from mosr.evaluation.config import EvalConfig
    from mosr.evaluation.run import evaluate
    from mosr.train import train

    data = write_data(tmp_path)
    res = train(tiny_cfg(data, "rr", steps=3, lr=5e-2, target_layers=[1]), tmp_path / "run")
    cfg = EvalConfig(
        model="tiny:llama",
        adapter=str(res.adapter),
        sets=[data["eval_harm"], data["eval_bank"]],
        mode="repr",
        repr_layers=[1, 2],
    )
    out = evaluate("tiny:llama", cfg, tmp_path / "eval", progress=False)
    vals = [r["displacement"] for r in out.rows]
    assert len(vals) == 2 and all(0.0 <= v <= 2.0 for v in vals) and max(vals) > 0
    assert all(r["response"] is None for r in out.rows)
    metrics = _json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["displacement"]) == {r["set"] for r in out.rows}
    with pytest.raises(ConfigError, match="give an adapter"):
        evaluate(
            "tiny:llama",
            EvalConfig(model="tiny:llama", sets=[data["eval_harm"]], mode="repr"),
            tmp_path / "eval-noadapter",
            progress=False,
        )
    assert not (tmp_path / "eval-noadapter").exists()  # no state left behind


def test_displacement_is_zero_for_the_same_model() -> None:
    from mosr.evaluation.displacement import displacement
    from mosr.testing import tiny_lm

    lm = tiny_lm("llama")
    v = displacement(lm, tiny_lm("llama"), ["hello there", "how do I kill a process?"], [1])
    assert v.shape == (2,) and abs(v).max() < 1e-5
