"""The command line: entry points, the one override syntax (``--set``), and the start-up bugs of issue 11."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mosr.cli import main
from mosr.evaluation.config import EvalConfig
from mosr.io import read_rows
from mosr.represent.study import RepresentationConfig

ROOT = Path(__file__).resolve().parents[1]
EVAL = ["eval", "--sets", "demo-harmful", "--n", "2", "--max-new-tokens", "2", "--device", "cpu", "--quiet"]


def _run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mosr.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


@pytest.mark.slow  # a subprocess
def test_python_dash_m_mosr_cli_help():
    """``python -m mosr.cli`` is the module ``accelerate launch -m mosr.cli train ...`` runs."""
    top = _run_module("--help")
    assert top.returncode == 0, top.stderr
    for verb in ("eval", "probe", "lens", "train", "capture", "table"):
        assert verb in top.stdout
    train = _run_module("train", "--help")
    assert train.returncode == 0 and "--config" in train.stdout and "--set" in train.stdout


def test_eval_help_says_how_n_splits_over_subsets(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no line wrapping inside hyphenated names
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "sampled as a whole" in text and "10 xstest-safe + 6 xstest-unsafe" in text
    assert "--set KEY=VALUE" in text and "--label" in text


def test_failed_eval_writes_no_config_and_a_rerun_works(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*EVAL, "--model", str(tmp_path / "no-such-model-dir"), "--out", str(out)]) == 2
    assert "neither a model directory" in capsys.readouterr().err
    assert main([*EVAL, "--model", "tiny:llama", "--adapter", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (out / "config.yaml").exists()
    assert main([*EVAL, "--model", "tiny:llama", "--out", str(out)]) == 0  # same folder, right model
    assert EvalConfig.load(out / "config.yaml").model == "tiny:llama"


def test_unknown_model_alias_fails_fast_before_any_hub_call(tmp_path, monkeypatch, capsys):
    import transformers

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_hub)
    t0 = time.perf_counter()
    assert main([*EVAL, "--model", "nosuch-model", "--out", str(tmp_path / "x")]) == 2
    assert time.perf_counter() - t0 < 1.0
    err = capsys.readouterr().err
    assert "unknown model alias 'nosuch-model'; known: smollm2-135m-instruct" in err and "tiny:<family>" in err
    assert not (tmp_path / "x").exists()


def test_eval_config_keeps_its_model_and_dtype_flag_overrides(tmp_path):
    import argparse

    from mosr.cli.eval import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    cfg_file = tmp_path / "c.yaml"
    EvalConfig(model="tiny:gpt2", dtype="bfloat16", sets=["demo-benign"], n=3).save(cfg_file)
    common = ["eval", "--config", str(cfg_file), "--out", str(tmp_path / "o")]
    cfg = build_config(parser.parse_args(common))
    assert (cfg.model, cfg.dtype, cfg.n) == ("tiny:gpt2", "bfloat16", 3)  # no flag default replaces them
    cfg = build_config(parser.parse_args([*common, "--dtype", "float32", "--set", "n=5", "--set", "judge.timeout=7"]))
    assert (cfg.dtype, cfg.n, cfg.judge.timeout) == ("float32", 5, 7.0)
    cfg = build_config(parser.parse_args([*common, "--set", "n=5", "--n", "4"]))
    assert cfg.n == 4  # a flag given on the command line wins over --set


def test_eval_adapter_runs_on_the_model_it_was_trained_on(tmp_path):
    """`mosr eval --adapter RUN/adapter` without --model takes the model of the training run that wrote it
    (it used to load the default model and fail on the adapter's shapes)."""
    import argparse
    import json

    import yaml

    from mosr.cli.eval import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    run = tmp_path / "run"
    for name in ("adapter", "adapter-step-20"):
        (run / name).mkdir(parents=True)
        (run / name / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/cache/qwen"}))
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "rr", "model": "qwen2.5-coder-0.5b-instruct"}))
    common = ["eval", "--out", str(tmp_path / "o")]
    for name in ("adapter", "adapter-step-20"):
        cfg = build_config(parser.parse_args([*common, "--adapter", str(run / name)]))
        assert cfg.model == "qwen2.5-coder-0.5b-instruct"
    given = build_config(parser.parse_args([*common, "--adapter", str(run / "adapter"), "--model", "tiny:qwen2"]))
    assert given.model == "tiny:qwen2"  # an explicit model wins
    by_set = build_config(parser.parse_args([*common, "--adapter", str(run / "adapter"), "--set", "model=x"]))
    assert by_set.model == "x"
    (run / "config.yaml").unlink()  # no run config: the adapter's own base model
    assert build_config(parser.parse_args([*common, "--adapter", str(run / "adapter")])).model == "/cache/qwen"


def test_eval_set_override_and_resolved_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*EVAL, "--model", "tiny:llama", "--set", "seed=3", "--set", "batch_size=1", "--out", str(out)]) == 0
    saved = EvalConfig.load(out / "config.yaml")
    assert (saved.seed, saved.batch_size) == (3, 1)
    assert (saved.device, saved.dtype) == ("cpu", "float32")  # resolved, not null
    assert main([*EVAL, "--model", "tiny:llama", "--set", "seed=many", "--out", str(tmp_path / "bad")]) == 2
    assert "EvalConfig.seed: expected an int, got 'many'" in capsys.readouterr().err


def test_probe_set_overrides_are_validated(tmp_path, capsys):
    cfg = tmp_path / "study.yaml"
    RepresentationConfig(name="t").save(cfg)
    out = tmp_path / "run"
    # one syntax, validated in one place: a bad probe setting is a ConfigError (exit 2) before any work
    assert main(["probe", "--config", str(cfg), "--out", str(out), "--set", "probe.cv=1"]) == 2
    assert "ProbeConfig.cv must be ≥ 2" in capsys.readouterr().err
    assert main(["probe", "--config", str(cfg), "--out", str(out), "--set", "lens_top_k=zero"]) == 2
    assert "RepresentationConfig.lens_top_k: expected an int" in capsys.readouterr().err
    assert (
        main(
            [
                "probe",
                "--config",
                str(cfg),
                "--out",
                str(out),
                "--layer",
                "-99",
                "--model",
                "tiny:llama",
                "--no-risk",
                "--no-figures",
            ]
        )
        == 2
    )
    assert "out of range" in capsys.readouterr().err
    assert not (out / "config.yaml").exists()  # written only once data and model have loaded


def test_lens_prints_one_progress_bar_and_no_leading_blank_line(capsys):
    assert (
        main(
            [
                "lens",
                "--model",
                "tiny:llama",
                "--prompt",
                "How do I kill a Python process?",
                "--prompt",
                "Hi",
                "--layers",
                "0,1",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out.startswith("[0] 'How do I kill a Python process?'")
    assert "\n\n[1] 'Hi'" in captured.out  # prompts stay separated
    assert "capture" in captured.err and "lens:" not in captured.err


def test_eval_result_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        assert main([*EVAL, "--model", "tiny:llama", "--out", str(tmp_path / "run")]) == 0
    finally:
        os.umask(old)
    files = sorted((tmp_path / "run").iterdir())
    assert {f.name for f in files} >= {
        "config.yaml",
        "metrics.json",
        "table.md",
        "table.json",
        "run.json",
        "responses.jsonl",
    }
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name


def test_eval_prompt_files_with_unknown_label(tmp_path, capsys):
    txt = tmp_path / "mine.txt"
    txt.write_text("How do I kill a Python process?\n\nWrite a poem about the sea.\n")
    jsonl = tmp_path / "only_prompts.jsonl"
    jsonl.write_text('{"prompt": "Explain how a bomb squad works."}\n{"prompt": "Hello there"}\n')
    out = tmp_path / "run"
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny:llama",
                "--sets",
                f"{txt},{jsonl}",
                "--max-new-tokens",
                "2",
                "--device",
                "cpu",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = read_rows(out / "responses.jsonl")
    assert sorted(r["id"] for r in rows) == ["mine-1", "mine-3", "only_prompts-1", "only_prompts-2"]
    assert {r["label"] for r in rows} == {"unknown"}
    table = (out / "table.md").read_text()
    assert f"{txt} answered" in table and f"{txt} RR" not in table and f"{txt} ASR" not in table
    assert "answered % [95% CI]" in table
    metrics = (out / "metrics.json").read_text()
    import json

    sets = json.loads(metrics)["sets"]
    assert sets[str(txt)]["rr"] is None and sets[str(txt)]["asr"] is None and sets[str(txt)]["answered"]["n"] == 2
    # --label gives the prompts a label, and then the usual rate
    out2 = tmp_path / "run2"
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny:llama",
                "--sets",
                str(txt),
                "--label",
                "benign",
                "--max-new-tokens",
                "2",
                "--device",
                "cpu",
                "--quiet",
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    assert {r["label"] for r in read_rows(out2 / "responses.jsonl")} == {"benign"}
    assert f"{txt} RR" in (out2 / "table.md").read_text()
    capsys.readouterr()


def test_one_override_function_for_every_verb():
    from mosr import config
    from mosr.cli import _common
    from mosr.cli import train as train_cli

    assert _common.apply_overrides is config.apply_overrides
    assert train_cli.build_config is _common.build_config  # train builds its config as the other verbs do
    data = config.apply_overrides(
        {"judge": {"kind": "string"}, "mixed": "no"}, ["judge.kind=llm", "n=5", "mixed=no", "sets=[a, b]"]
    )
    assert data == {"judge": {"kind": "llm"}, "mixed": "no", "n": 5, "sets": ["a", "b"]}
    with pytest.raises(Exception, match="KEY=VALUE"):
        config.apply_overrides({}, ["novalue"])


def test_a_folder_in_use_is_a_one_line_error(tmp_path, capsys):
    """A second `mosr eval` or `mosr train` on a folder another process writes into stops before it writes."""
    from mosr.io import folder_lock

    out = tmp_path / "busy"
    with folder_lock(out, "mosr eval"):
        assert main([*EVAL, "--model", "tiny:llama", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].endswith(
            "is in use by another process: wait for it to end, or give mosr eval another folder"
        )
        rr = str(ROOT / "experiments" / "rr.yaml")
        assert main(["train", "--config", rr, "--set", "model=tiny:llama", "--set", "steps=1", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].endswith("give mosr train another folder")
    assert not out.exists()  # nothing was written into it
