"""The representation study end to end on a tiny model with the bundled demo sets, and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mosr.cli import main
from mosr.errors import ConfigError, LayerError
from mosr.represent.probe import ProbeConfig, ProbeSet
from mosr.represent.study import RepresentationConfig, run_representation_study
from mosr.testing import tiny_lm

ROOT = Path(__file__).resolve().parents[1]


def small_config(**kw) -> RepresentationConfig:
    base = dict(
        name="tiny",
        benign={"demo-benign": 20},
        harmful={"demo-harmful": 20},
        pseudo_harmful={"demo-pseudo": 20},
        probe=ProbeConfig(Cs=(0.1, 1.0), cv=2),
        risk_max_new_tokens=4,
    )
    return RepresentationConfig(**(base | kw))


@pytest.mark.slow  # the whole study, end to end
def test_study_end_to_end_and_resume(tmp_path, monkeypatch):
    import mosr.evaluation.judge

    # a random tiny model never writes a refusal phrase: mark half of its responses as refusals so the
    # risk AUROC is defined (the real judge is tested in test_judge.py)
    monkeypatch.setattr(mosr.evaluation.judge, "is_refusal", lambda text: len(text) % 2 == 0)
    lm = tiny_lm("qwen2")
    res = run_representation_study(small_config(), tmp_path, lm=lm, progress=False)
    assert res["n_per_set"] == {"demo-benign": 20, "demo-harmful": 20, "demo-pseudo": 20}
    assert "held-out accuracy" in (tmp_path / "summary.md").read_text()
    assert {"config.yaml", "results.json", "summary.md", "prompts.jsonl", "responses.jsonl", "probes", "figures"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == sorted(
        f"{s}.png"
        for s in (
            "probe_accuracy",
            "fraction_malicious",
            "probe_distributions",
            "pca",
            "centroid_axis",
            "lens_heatmap",
            "lens_table",
            "refused_vs_answered",
        )
    )
    assert json.loads((tmp_path / "results.json").read_text())["summary"] == json.loads(json.dumps(res["summary"]))
    split = json.loads((tmp_path / "results.json").read_text())["risk"]["refused_vs_answered"]
    rows = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    refused = sum(r["group"] == "pseudo_harmful" and r["refused"] for r in rows)
    assert split["n_refused"] == refused and split["n_refused"] + split["n_answered"] == 20
    assert len(split["per_layer"]) == len(split["lens"]["refused"]) == len(split["lens"]["harmful"])
    assert "Refused (" in (tmp_path / "summary.md").read_text()
    saved = RepresentationConfig.load(tmp_path / "config.yaml")  # the resolved config: model, device, dtype, data dir
    assert (saved.model, saved.device, saved.dtype) == ("tiny-qwen2", "cpu", "float32")
    assert saved == small_config(model="tiny-qwen2", device="cpu", data_dir=saved.data_dir)
    rows = [json.loads(x) for x in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and {r["split"] for r in rows} == {"train", "test", "score-only"}
    assert all("refused" in r for r in rows if r["group"] == "pseudo_harmful")
    probes = ProbeSet.load(tmp_path / "probes")
    assert probes.layers == [0, 1, 2] and res["summary"]["chosen_layer"] == probes.best_layer
    fm = res["fraction_malicious"]
    assert set(fm["fraction"]) == {"benign (test)", "harmful (test)", "demo-pseudo"}
    assert all(len(v) == 3 and all(0 <= x <= 1 for x in v) for v in fm["fraction"].values())
    risk = res["risk"]
    assert risk["n"] == 20 and risk["generated_now"] == 20 and 0 < risk["n_refused"] < 20
    assert 0.0 <= risk["boundary_score"]["auroc"] <= 1.0
    assert len(res["lens"]["examples"]) == 3 and set(res["lens"]["refusal_minus_compliance"]) == {
        "benign",
        "harmful",
        "demo-pseudo",
    }
    # figures can be redrawn from the run folder alone
    for f in (tmp_path / "figures").iterdir():
        f.unlink()
    assert main(["probe", "--replot", "--out", str(tmp_path)]) == 0
    assert len(list((tmp_path / "figures").glob("*.png"))) == 8
    # a second run reuses the logged responses and the captured states
    again = run_representation_study(small_config(figures=False), tmp_path, lm=lm, progress=False)
    assert again["risk"]["generated_now"] == 0 and again["risk"]["n_refused"] == risk["n_refused"]


def test_study_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        RepresentationConfig.from_dict({"benign": {"demo-benign": 5}, "probes": {}})
    with pytest.raises(ConfigError, match="positive int"):
        RepresentationConfig(benign={"demo-benign": 0})
    with pytest.raises(ConfigError, match="3 prompts"):
        RepresentationConfig(examples=["a", "b"])
    with pytest.raises(LayerError, match="out of range"):
        run_representation_study(small_config(layer=5, risk=False), tmp_path, lm=tiny_lm("llama"), progress=False)


def test_shipped_configs_parse():
    for name in ("demo", "smollm2", "smollm2-full"):
        cfg = RepresentationConfig.load(ROOT / "probes" / f"{name}.yaml")
        assert cfg.name == name and cfg.risk


def test_cli_probe_and_lens(tmp_path, tiny_model_dir, capsys):
    tiny_dir = tiny_model_dir
    cfg = tmp_path / "tiny.yaml"
    small_config().save(cfg)
    assert (
        main(
            [
                "probe",
                "--config",
                str(cfg),
                "--model",
                str(tiny_dir),
                "--out",
                str(tmp_path / "run"),
                "--no-risk",
                "--no-figures",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "demo-pseudo" in out
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["risk"] is None and "figures" not in res and res["model"] == str(tiny_dir)
    assert (
        main(
            [
                "lens",
                "--model",
                str(tiny_dir),
                "--prompt",
                "How do I kill a Python process?",
                "--top-k",
                "3",
                "--out",
                str(tmp_path / "lens"),
            ]
        )
        == 0
    )
    assert "refusal-compliance" in capsys.readouterr().out
    lens = json.loads((tmp_path / "lens" / "lens.json").read_text())
    assert len(lens["prompts"][0]["top_tokens"]) == 3 and (tmp_path / "lens" / "lens_table.png").is_file()


def test_cli_bad_config_is_one_line_error(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("benign: {demo-benign: 5}\nlayers: 3\n")
    assert main(["probe", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) ['layers']" in err and "Traceback" not in err
