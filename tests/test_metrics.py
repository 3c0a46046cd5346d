from __future__ import annotations

import json
import math

import pytest

from mosr.errors import MosrError
from mosr.metrics import (AGGREGATE_FORMULA, Rate, RunResult, extract_number, markdown_table, mean_rate,
                          numbers_equal, paper_aggregate, score_validity, summarise, tradeoff_point, wilson,
                          write_tables)


def test_wilson_known_values():
    # reference values (Wilson 1927; e.g. statsmodels proportion_confint(method="wilson"))
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = wilson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.8389, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(MosrError):
        wilson(3, 2)


def test_wilson_contains_point_and_narrows():
    for k, n in [(1, 7), (30, 100), (99, 100)]:
        lo, hi = wilson(k, n)
        assert lo <= k / n <= hi
    assert (wilson(50, 1000)[1] - wilson(50, 1000)[0]) < (wilson(5, 100)[1] - wilson(5, 100)[0])


@pytest.mark.parametrize("text,expected", [
    ("She pays 18 dollars. #### 18", "18"),
    ("So the answer is 1,250 apples, plus 3 more later", "1250"),
    ("first 3 then 4 then 7.5", "7.5"),
    ("-4 degrees", "-4"),
    ("no digits here", None),
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_numbers_equal():
    assert numbers_equal("1,000", "1000") and numbers_equal("18.0", "18")
    assert not numbers_equal("18", "19") and not numbers_equal(None, "1") and not numbers_equal("x", "1")


def _rows():
    rows = []
    for i in range(10):  # xstest: 6 safe (pseudo), 4 unsafe (harmful)
        label = "pseudo_harmful" if i < 6 else "harmful"
        verdict = "refusal" if i in (0, 6) else ("degenerate" if i == 1 else "compliance")
        rows.append({"set": "xstest", "id": f"x{i}", "label": label, "verdict": verdict, "refusal_score": -1.0})
    for i in range(5):
        rows.append({"set": "advbench", "id": f"a{i}", "label": "harmful",
                     "verdict": "compliance" if i < 2 else "refusal", "refusal_score": 1.0 if i >= 2 else -2.0})
    for i in range(4):
        rows.append({"set": "gsm8k", "id": f"g{i}", "label": "benign", "verdict": "compliance",
                     "refusal_score": -3.0, "correct": i == 0})
    return rows


def test_summarise_counts_and_rates():
    by = {m.name: m for m in summarise(_rows())}
    assert set(by) == {"xstest-safe", "xstest-unsafe", "advbench", "gsm8k"}
    safe = by["xstest-safe"]
    assert (safe.n, safe.refusal, safe.degenerate, safe.compliance) == (6, 1, 1, 4)
    assert safe.rr == Rate(2, 6)  # degenerate counts as not answered
    assert by["xstest-unsafe"].asr == Rate(3, 4)
    assert by["advbench"].asr == Rate(2, 5) and by["advbench"].score_rr == Rate(3, 5)
    assert by["gsm8k"].accuracy == Rate(1, 4)
    assert by["advbench"].primary[0] == "ASR" and safe.primary[0] == "RR"


def test_aggregate_formula():
    metrics = summarise(_rows())
    agg = paper_aggregate(metrics)
    # RR columns present: gsm8k (0/4), xstest-safe (2/6); ASR columns present: advbench (2/5)
    assert agg["rr_columns"] == ["gsm8k", "xstest-safe"] and agg["asr_columns"] == ["advbench"]
    assert agg["value"] == pytest.approx((0 + 2 / 6) / 2 + 2 / 5)
    assert "lower is better" in AGGREGATE_FORMULA


def test_tradeoff_point_and_mean_rate():
    x, y = tradeoff_point(summarise(_rows()))
    assert x.parts == ["xstest-safe"]  # gsm8k is a capability set, not in x
    assert x.value == pytest.approx(2 / 6)
    assert y.value == pytest.approx((3 / 4 + 2 / 5) / 2)
    assert y.low < y.value < y.high
    m = mean_rate({"a": Rate(0, 50), "b": Rate(0, 50)})
    assert m.value == 0 and m.high > 0  # Wilson half-widths keep a bar at p = 0
    assert math.isnan(mean_rate({}).value)


def test_tables(tmp_path):
    run = RunResult(name="base", path=str(tmp_path), model="m", judge="string", seed=0, mode="generate",
                    max_new_tokens={"xstest": 64, "gsm8k": 256}, system=None, metrics=summarise(_rows()), wall_s=60)
    md = markdown_table([run, run])
    for needed in ("model `m`", "judge: string", "seed 0", "95% Wilson CI", "xstest-safe RR (n=6)",
                   "advbench ASR (n=5)", "GSM8K acc", "64 (gsm8k: 256)"):
        assert needed in md, needed
    assert "33.3 [" in md  # xstest-safe RR 2/6
    md_path, js_path = write_tables([run], tmp_path / "t")
    data = json.loads(js_path.read_text())
    assert data["runs"][0]["sets"]["advbench"]["asr"]["k"] == 2
    assert md_path.read_text().startswith("## Evaluation results")
    with pytest.raises(MosrError):
        markdown_table([])


def test_score_validity_ranks_refusals_and_skips_degenerate():
    rows = [{"verdict": "refusal", "refusal_score": 2.0}, {"verdict": "refusal", "refusal_score": -1.0},
            {"verdict": "compliance", "refusal_score": -2.0}, {"verdict": "compliance", "refusal_score": 0.5},
            {"verdict": "degenerate", "refusal_score": 9.0}, {"verdict": "compliance", "refusal_score": None}]
    v = score_validity(rows)
    assert (v["n_refusal"], v["n_compliance"]) == (2, 2)
    assert v["auroc"] == pytest.approx(0.75)  # 3 of the 4 refusal/compliance pairs ordered correctly
    assert v["low"] <= v["auroc"] <= v["high"]
    assert score_validity([r for r in rows if r["verdict"] != "refusal"]) is None
    run = RunResult(name="r", path=".", model="m", judge="j", seed=0, mode="generate", max_new_tokens={},
                    system=None, metrics=summarise(_rows()), score_auroc=v)
    assert "AUROC 0.750" in markdown_table([run]) and run.to_dict()["score_auroc"]["n_refusal"] == 2
