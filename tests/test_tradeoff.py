"""Tests of the trade-off study (mosr.tradeoff.run): frontier statistics on hand-made points, and a dry run
of every stage on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mosr.errors import ConfigError
from mosr.tradeoff.frontier import (
    Point,
    boot_rate,
    bootstrap_draws,
    interpolate,
    matched_difference,
    seed_difference,
    seed_spread,
    verdict,
)
from mosr.tradeoff.plan import StudyPlan

PLAN = StudyPlan(
    harmful=["h"],
    overrefusal=["b"],
    methods={"rr": "a.yaml", "mosr": "b.yaml"},
    seed_methods=[],
    repr_methods=[],
    bootstrap=400,
)


def point(name: str, asr: float, rr: float, n: int = 50, seed: int = 0, step: int = 40) -> Point:
    """A point whose harmful set has round(asr * n) answered prompts and benign set round((1 - rr) * n)."""
    h = np.zeros(n, dtype=int)
    h[: round(asr * n)] = 1
    b = np.zeros(n, dtype=int)
    b[: round((1 - rr) * n)] = 1
    method = name.split("-")[0]
    return Point(
        name, method, seed, step, {"h": h, "b": b}, {"h": [f"h{i}" for i in range(n)], "b": [f"b{i}" for i in range(n)]}
    )


def test_rates_are_shares_in_percent() -> None:
    p = point("rr-s0@40", 0.2, 0.6)
    assert p.asr(["h"]) == pytest.approx(20.0)
    assert p.rr(["b"]) == pytest.approx(60.0)


def test_interpolate_is_piecewise_linear_in_asr_and_nan_outside() -> None:
    asr, rr = np.array([80.0, 0.0, 40.0]), np.array([10.0, 90.0, 50.0])
    assert interpolate(asr, rr, 20.0) == pytest.approx(70.0)
    assert interpolate(asr, rr, 60.0) == pytest.approx(30.0)
    assert np.isnan(interpolate(asr, rr, 90.0))


def test_bootstrap_is_paired_and_centred_on_the_estimate() -> None:
    pts = [point("rr-s0@40", 0.3, 0.5), point("mosr-s0@40", 0.3, 0.2)]
    draws = bootstrap_draws(pts, ["h", "b"], 400)
    a = boot_rate(pts[0], ["h"], draws, refuse=False)
    assert a.shape == (400,) and abs(a.mean() - 30.0) < 3
    # same harmful outcomes + same draws -> identical replicates (pairing)
    assert np.array_equal(a, boot_rate(pts[1], ["h"], draws, refuse=False))


def test_bootstrap_refuses_points_evaluated_on_other_prompts() -> None:
    a, b = point("rr-s0@40", 0.3, 0.5), point("mosr-s0@40", 0.3, 0.5)
    b.ids["b"] = [f"x{i}" for i in range(50)]
    with pytest.raises(ConfigError, match="other prompts"):
        bootstrap_draws([a, b], ["h", "b"], 10)


def test_matched_difference_finds_a_better_frontier_and_its_sign() -> None:
    rr = [point("rr-s0@20", 0.9, 0.05, step=20), point("rr-s0@30", 0.5, 0.5, step=30), point("rr-s0@40", 0.0, 0.9)]
    better = [
        point("mosr-s0@20", 0.9, 0.0, step=20),
        point("mosr-s0@30", 0.5, 0.1, step=30),
        point("mosr-s0@40", 0.0, 0.3),
    ]
    draws = bootstrap_draws(rr + better, ["h", "b"], 400)
    d = matched_difference(better, rr, 50.0, PLAN, draws)
    assert d["difference"] == pytest.approx(-40.0)
    assert d["ci"][1] < 0 and verdict(d) == "wins"
    worse = matched_difference(rr, better, 50.0, PLAN, draws)
    assert worse["difference"] == pytest.approx(40.0) and verdict(worse) == "loses"
    same = matched_difference(rr, rr, 50.0, PLAN, draws)
    assert same["difference"] == 0 and verdict(same) == "ties"


def test_single_point_frontiers_without_shared_asr_are_not_comparable() -> None:
    """np.interp returns the only value of a one-point frontier for any x, NaN included: a comparison of
    two single operating points at different ASR must still say 'not comparable'."""
    from mosr.tradeoff.frontier import bootstrap_draws, interpolate, matched_asr, matched_difference, verdict

    assert np.isnan(interpolate(np.array([20.0]), np.array([40.0]), float("nan")))
    a, b = [point("mosr-s0@40", 0.2, 0.4)], [point("rr-s0@40", 0.05, 0.4)]
    at, why = matched_asr(a, b, 5.0, PLAN)
    assert np.isnan(at) and "share no" in why
    d = matched_difference(a, b, at, PLAN, bootstrap_draws([*a, *b], ["h", "b"], 200, 0))
    assert np.isnan(d["difference"]) and verdict(d).startswith("not comparable")


def test_matched_difference_outside_the_frontier_is_not_comparable() -> None:
    rr = [point("rr-s0@40", 0.0, 0.9), point("rr-s0@30", 0.1, 0.8, step=30)]
    other = [point("mosr-s0@40", 0.8, 0.1), point("mosr-s0@30", 0.9, 0.0, step=30)]
    draws = bootstrap_draws(rr + other, ["h", "b"], 100)
    assert verdict(matched_difference(other, rr, 5.0, PLAN, draws)).startswith("not comparable")


def test_seed_spread_and_seed_difference() -> None:
    a = [point("mosr-s0@40", 0.1, 0.2, seed=0), point("mosr-s1@40", 0.1, 0.4, seed=1)]
    b = [point("rr-s0@40", 0.1, 0.8, seed=0), point("rr-s1@40", 0.1, 0.8, seed=1)]
    s = seed_spread(a, PLAN)
    assert s["rr_mean"] == pytest.approx(30.0) and s["rr_sd"] == pytest.approx(np.std([20, 40], ddof=1), abs=0.01)
    d = seed_difference(a, b, PLAN, bootstrap_draws(a + b, ["h", "b"], 400))
    assert d["rr_difference"] == pytest.approx(-50.0) and d["rr_ci"][1] < 0
    assert d["asr_difference"] == pytest.approx(0.0)


def test_plan_validation() -> None:
    with pytest.raises(ConfigError, match="not in methods"):
        StudyPlan(methods={"rr": "a.yaml"}, seed_methods=["mosr"], repr_methods=[])
    with pytest.raises(ConfigError, match="reference"):
        StudyPlan(methods={"mosr": "a.yaml"}, seed_methods=[], repr_methods=[], reference="rr")
    with pytest.raises(ConfigError, match="not in methods"):
        StudyPlan(methods={"rr": "a.yaml"}, seed_methods=[], repr_methods=[], method_set={"sft": ["steps=4"]})
    with pytest.raises(ConfigError, match="not in methods"):
        StudyPlan(methods={"rr": "a.yaml"}, seed_methods=[], repr_methods=[], groups={"g": ["rr", "sft"]})
    with pytest.raises(ConfigError, match="may not"):
        StudyPlan(methods={"rr": "a.yaml", "rr-s1": "a.yaml"}, seed_methods=[], repr_methods=[])


@pytest.mark.slow  # every stage of a study, end to end
def test_dry_run_runs_every_stage_and_resumes(tmp_path: Path) -> None:
    from mosr.tradeoff.run import dry_run_plan, run_tradeoff

    root = Path(__file__).resolve().parents[1]
    plan = StudyPlan.load(root / "experiments" / "studies" / "study.yaml")
    plan.methods = {m: str(root / p) for m, p in plan.methods.items()}
    plan = dry_run_plan(
        StudyPlan.from_dict(
            {
                **plan.to_dict(),
                "methods": {"rr": plan.methods["rr"], "mosr": plan.methods["mosr"], "mosr_lam1": plan.methods["mosr"]},
                "method_set": {"mosr_lam1": ["weighting.lam=1.0"]},
                "groups": {"lambda": ["mosr", "mosr_lam1"]},
                "compare": [["mosr_lam1", "mosr"]],
                "figure_methods": ["rr", "mosr"],
                "frontier_methods": ["rr"],
                "seeds": [0, 1],
                "seed_methods": ["rr"],
            }
        )
    )
    res = run_tradeoff(plan, tmp_path / "study", progress=False)
    names = {p["name"] for p in res["points"]}
    assert names == {"base", "rr-s0@1", "rr-s0@2", "rr-s1@2", "mosr-s0@2", "mosr_lam1-s0@2"}
    # a method = its config plus its own overrides, after the plan's
    from mosr.train import TrainConfig

    assert TrainConfig.load(tmp_path / "study" / "train" / "mosr_lam1-s0" / "config.yaml").weighting.lam == 1.0
    assert TrainConfig.load(tmp_path / "study" / "train" / "mosr-s0" / "config.yaml").weighting.lam == 0.7
    assert [r["name"] for r in res["groups"]["lambda"]] == ["mosr-s0@2", "mosr_lam1-s0@2"]
    assert "verdict" in res["pairs"]["mosr_lam1 vs mosr"]
    summary = (tmp_path / "study" / "summary.md").read_text()
    assert "## Groups" in summary and "| mosr_lam1 vs mosr |" in summary
    assert (tmp_path / "study" / "groups.png").is_file() and (tmp_path / "study" / "lens.png").is_file()
    lens = res["representation"]["lens"]
    assert set(lens) == {"base", "rr", "mosr"} and len(lens["base"]["sets"]["demo-harmful"]["score"]) == len(
        lens["base"]["layers"]
    )
    assert "LogitLens" in summary
    assert set(res["matched"]) == {"mosr", "mosr_lam1"} and "verdict" in res["matched"]["mosr"]
    # rr has seeds 0 and 1, mosr seed 0 only: the final-step comparison pairs mosr with rr's seed 0
    assert res["matched"]["mosr"]["final_step_seeds"] == [0]
    assert set(res["matched"]["mosr"]["per_set_over_seeds"]) == {"demo-harmful", "demo-pseudo", "demo-benign"}
    assert set(res["representation"]["models"]) == {"base", "rr", "mosr"}
    assert res["representation"]["models"]["base"]["moved"]["demo-harmful"] == pytest.approx(1.0)
    for f in ("summary.md", "frontier.png", "results.json", "plan.yaml"):
        assert (tmp_path / "study" / f).is_file()
    stamp = (tmp_path / "study" / "eval" / "rr-s0@1" / "metrics.json").stat().st_mtime_ns
    again = run_tradeoff(plan, tmp_path / "study", progress=False)  # resumes: nothing is re-run
    assert (tmp_path / "study" / "eval" / "rr-s0@1" / "metrics.json").stat().st_mtime_ns == stamp
    assert json.dumps(again["seeds"]) == json.dumps(res["seeds"])


def test_matched_asr_prefers_the_operating_point_then_the_nearest_shared_asr() -> None:
    from mosr.tradeoff.frontier import matched_asr

    rr = [point("rr-s0@30", 0.8, 0.1, step=30), point("rr-s0@40", 0.02, 0.9)]
    mosr = [point("mosr-s0@30", 0.9, 0.0, step=30), point("mosr-s0@40", 0.2, 0.5)]
    at, why = matched_asr(mosr, rr, 2.0, PLAN)
    assert at == pytest.approx(20.0) and "nearest" in why
    at, why = matched_asr(mosr, rr, 50.0, PLAN)
    assert at == 50.0 and "operating point" in why
    one = [point("x-s0@40", 2 / 6, 0.4, n=6)]  # a one-point frontier whose ASR, rounded, is the target
    at, why = matched_asr(mosr, one, 33.33, PLAN)
    assert at == pytest.approx(100 / 3) and "operating point" in why
    far = [point("x-s0@40", 0.95, 0.0), point("x-s0@30", 0.9, 0.0, step=30)]
    assert np.isnan(matched_asr(far, rr[1:], 2.0, PLAN)[0])


@pytest.mark.slow  # worker subprocesses
def test_workers_skip_runs_another_live_worker_holds_and_take_over_locks_of_ended_workers(tmp_path: Path) -> None:
    from mosr.io import try_lock
    from mosr.tradeoff.run import dry_run_plan, run_tradeoff

    root = Path(__file__).resolve().parents[1]
    plan = dry_run_plan(
        StudyPlan.from_dict(
            {
                "methods": {
                    "rr": str(root / "experiments" / "rr.yaml"),
                    "mosr": str(root / "experiments" / "mosr.yaml"),
                },
                "frontier_steps": [],
                "seeds": [0],
                "seed_methods": [],
                "repr_methods": ["rr", "mosr"],
                "reference": "rr",
            }
        )
    )
    out = tmp_path / "study"
    (out / "train").mkdir(parents=True)
    lock = out / "train" / ".mosr-s0.lock"
    held = try_lock(lock)  # a live worker (here: this process, through another handle) is training mosr
    assert held is not None
    run_tradeoff(plan, out, stages=("train", "eval", "repr"), progress=False)
    assert (out / "train" / "rr-s0" / "adapter").is_dir() and not (out / "train" / "mosr-s0").exists()
    assert (out / "eval" / "rr-s0@2" / "metrics.json").is_file() and not (out / "eval" / "mosr-s0@2").exists()
    partial = json.loads((out / "repr" / "summary.json").read_text())
    assert set(partial["models"]) == {"base", "rr"}  # the untrained method is left for a later run
    held.close()  # its worker ended without removing the file (killed): the OS released the lock
    assert lock.exists()
    res = run_tradeoff(plan, out, progress=False)
    assert not lock.exists() and {p["name"] for p in res["points"]} >= {"base", "rr-s0@2", "mosr-s0@2"}
    assert set(res["representation"]["models"]) == {"base", "rr", "mosr"}
    # more prompts per set in the plan: each finished point is resumed with only the new prompts
    stamp = {p: (out / "eval" / p / "responses.jsonl").read_text().count("\n") for p in ("base", "rr-s0@2")}
    bigger = StudyPlan.from_dict({**plan.to_dict(), "n": plan.n + 2})
    run_tradeoff(bigger, out, stages=("eval",), progress=False)
    for p, rows in stamp.items():
        got = (out / "eval" / p / "responses.jsonl").read_text().count("\n")
        assert got == rows + 2 * len([*plan.harmful, *plan.overrefusal]), p
