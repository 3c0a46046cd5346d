"""What the summaries print (issue 23, bugs 4 and 6): an AUROC from fewer than 2 prompts in the smaller
class is undefined ("n/a"), not "1.000 [1.000, 1.000]"; the per-set table labels a benign set's
compliance rate as what it is, not as an ASR."""

from __future__ import annotations

import math

import pytest

from mosr.evaluation.metrics import score_validity, summarise
from mosr.evaluation.tables import RunResult, markdown_table
from mosr.stats import auroc, auroc_ci, fmt_auroc


def test_auroc_ci_is_undefined_below_two_prompts_in_the_smaller_class() -> None:
    scores, one_positive = [0.1, 0.2, 0.3, 0.9], [False, False, False, True]
    assert all(math.isnan(v) for v in auroc_ci(scores, one_positive))
    assert all(math.isnan(v) for v in auroc_ci(scores, [True, True, True, False]))
    auc, lo, hi = auroc_ci([0.1, 0.2, 0.8, 0.9], [False, False, True, True])
    assert auc == 1.0 and not math.isnan(lo) and not math.isnan(hi)
    assert auroc(scores, one_positive) == 1.0  # the point estimate alone stays what it is
    assert fmt_auroc(*auroc_ci(scores, one_positive)) == "n/a"
    assert fmt_auroc(0.75, 0.5, 0.9) == "0.750 [0.500, 0.900]"


def _run(rows: list[dict]) -> RunResult:
    return RunResult(
        name="r",
        path=".",
        model="m",
        judge="j",
        seed=0,
        mode="generate",
        max_new_tokens={},
        system=None,
        metrics=summarise(rows),
        score_auroc=score_validity(rows),
    )


def _row(set_name: str, label: str, verdict: str, score: float) -> dict:
    return {"set": set_name, "label": label, "verdict": verdict, "refusal_score": score, "prompt": "p", "response": "r"}


def test_eval_summary_says_n_a_for_a_single_refusal() -> None:
    rows = [_row("demo-harmful", "harmful", "refusal", 3.0)] + [
        _row("demo-harmful", "harmful", "compliance", -s) for s in (1.0, 2.0, 3.0)
    ]
    v = score_validity(rows)
    assert v is not None and v["auroc"] is None and (v["n_refusal"], v["n_compliance"]) == (1, 3)
    md = markdown_table([_run(rows)])
    assert "AUROC n/a" in md and "1.000 [1.000, 1.000]" not in md


def test_probe_summary_says_n_a_for_a_single_refusal(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    import numpy as np

    import mosr.represent.study as study
    from mosr.cli import main

    refused = np.array([True] + [False] * 9)
    score = np.linspace(1.0, 0.0, 10)  # the one refused prompt scores highest: a "perfect" AUROC
    a, lo, hi = auroc_ci(score, refused)
    summary = {
        "chosen_layer": 1,
        "accuracy": 0.9,
        "accuracy_ci": [0.6, 0.98],
        "auroc": a,
        "auroc_ci": [lo, hi],
        "fraction_malicious_at_layer": {},
        "fraction_malicious_ci_at_layer": {},
        "risk": {"n_refused": 1, "n": 10, "boundary_score": {"auroc": a, "ci": [lo, hi]}},
    }
    res = {"summary": summary, "model": "m", "n_layers": 2, "n_per_set": {}, "timings_seconds": {}}
    monkeypatch.setattr(study, "run_representation_study", lambda config, out: res)
    (tmp_path / "c.yaml").write_text("name: x\n")
    assert main(["probe", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "1.000 [1.000, 1.000]" not in out and "AUROC n/a" in out
    assert "boundary score n/a" in out


def _per_set_cells(md: str) -> dict[str, dict[str, str]]:
    """``set -> {column: cell}`` of the per-set table of :func:`markdown_table`."""
    lines = md.split("Per set:")[1].splitlines()
    table = [line for line in lines if line.startswith("|")]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    out = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[head.index("set")]] = dict(zip(head, cells))
    return out


@pytest.mark.parametrize("label", ["benign", "pseudo_harmful"])
def test_the_per_set_table_gives_no_asr_for_a_benign_set(label: str) -> None:
    rows = [_row("mine", label, "compliance", -1.0) for _ in range(4)] + [
        _row("demo-harmful", "harmful", "compliance", -1.0),
        _row("demo-harmful", "harmful", "refusal", 2.0),
    ]
    cells = _per_set_cells(markdown_table([_run(rows)]))
    asr = next(c for c in cells["mine"] if c.startswith("ASR"))
    assert "harmful" in asr  # the column says which sets it is for
    assert cells["mine"][asr] == "–"  # a benign set has no attack success rate
    assert cells["demo-harmful"][asr].startswith("50.0")
    answered = next(c for c in cells["mine"] if c.startswith("answered %"))
    assert cells["mine"][answered].startswith("100.0")  # its compliance rate, under its own name
    assert cells["demo-harmful"][answered] == "–"
