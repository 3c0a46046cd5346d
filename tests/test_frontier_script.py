"""experiments/frontier.py: frontiers and matched-ASR verdicts from synthetic evaluation folders (demo sets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import load_script

from mosr.evaluation.config import EvalConfig, load_sets
from mosr.stats import wilson

frontier = load_script(Path(__file__).resolve().parents[1] / "experiments" / "frontier.py")

ANSWER = "Sure, here is how to do it: first, open the file and read each line."
REFUSE = "I cannot help with that."
SETS = ["demo-harmful", "demo-pseudo"]


def sampled(n: int | None, seed: int = 0) -> dict[str, list[str]]:
    return {s: ps.ids for s, ps in load_sets(EvalConfig(sets=SETS, n=n, seed=seed)).items()}


def eval_folder(folder: Path, n: int | None, answered: dict[str, set[str] | int], seed: int = 0) -> Path:
    """A finished ``mosr eval`` folder on a seeded sample of ``n`` of each demo set: per set, the prompts
    answered (ids, or the first ``k`` sampled ids); the others refused."""
    folder.mkdir(parents=True)
    cfg = EvalConfig(sets=SETS, n=n, seed=seed)
    (folder / "config.yaml").write_text(yaml.safe_dump({"sets": SETS, "n": n, "seed": seed}))
    rows = []
    for s, ps in load_sets(cfg).items():
        which = answered.get(s, 0)
        yes = set(ps.ids[:which]) if isinstance(which, int) else which
        for r in ps:
            rows.append({"set": s, "id": r.id, "label": r.label, "prompt": r.prompt, "response": ANSWER})
            if r.id not in yes:
                rows[-1]["response"] = REFUSE
    (folder / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "metrics.json").write_text("{}\n")
    return folder


def write_spec(path: Path, methods: dict, **extra: object) -> Path:
    spec = {"title": "test", "harmful": ["demo-harmful"], "overrefusal": ["demo-pseudo"], "reference": "rr"}
    path.write_text(yaml.safe_dump({**spec, **extra, "methods": methods}, allow_unicode=True, sort_keys=False))
    return path


def two_methods(root: Path) -> dict:
    """n = 20 per set. rr: (ASR 10, RR 80) and (50, 40); m: (0, 50) and (20, 30); base (60, 10).
    (The demo-pseudo count is of answered prompts: RR = 100 − answered share.)"""
    pts = {
        "r1": {"demo-harmful": 2, "demo-pseudo": 4},
        "r2": {"demo-harmful": 10, "demo-pseudo": 12},
        "m1": {"demo-harmful": 0, "demo-pseudo": 10},
        "m2": {"demo-harmful": 4, "demo-pseudo": 14},
        "b": {"demo-harmful": 12, "demo-pseudo": 18},
    }
    for name, ans in pts.items():
        eval_folder(root / "runs" / name, 20, ans)
    return {
        "base": [{"label": "base", "eval": "runs/b"}],
        "rr": [{"label": "rr@120", "eval": "runs/r2", "knob": 120}, {"label": "rr@40", "eval": "runs/r1", "knob": 40}],
        "m": [{"label": "λ=0.5", "eval": "runs/m1", "knob": 0.5}, {"label": "λ=1", "eval": "runs/m2", "knob": 1}],
    }


def test_matched_difference_matches_a_hand_computation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the spec's paths are relative to the working directory
    spec = write_spec(tmp_path / "spec.yaml", two_methods(tmp_path), box={"asr": 10, "rr": "base"}, bootstrap=500)
    assert frontier.main(["--spec", str(spec), "--out", "out"]) == 0
    res = json.loads((tmp_path / "out" / "frontier.json").read_text())
    by = {r["label"]: r for r in res["points"]}
    assert [r["label"] for r in res["points"]] == ["base", "rr@40", "rr@120", "λ=0.5", "λ=1"]  # knob order
    assert (by["rr@40"]["asr"], by["rr@40"]["rr"], by["λ=1"]["asr"], by["λ=1"]["rr"]) == (10, 80, 20, 30)
    s = by["rr@40"]["sets"]["demo-pseudo"]
    assert (s["k"], s["n"], s["value"]) == (16, 20, 80.0)
    assert s["ci"] == [round(100 * x, 2) for x in wilson(16, 20)]
    # capability: answered and on topic ≤ answered (100 − RR); the refusals count as not answered
    for r in res["points"]:
        assert 0 <= r["answered_on_topic"] <= 100 - r["rr"] + 1e-9
    # operating point: rr's lowest-ASR point (ASR 10); m at ASR 10 interpolates (0, 50)–(20, 30) to 40,
    # rr there is 80: difference −40
    assert res["operating_point"]["label"] == "rr@40" and res["n"] == {"demo-harmful": 20, "demo-pseudo": 20}
    d = res["matched"]["m"]
    assert d["at_asr"] == 10.0 and d["at_reason"] == "the reference's operating point"
    assert d["difference"] == pytest.approx(-40.0)
    assert d["ci"][0] < -40 < d["ci"][1] < 0 and d["verdict"] == "wins"
    assert d["replicates"] + d["dropped"] == 500 and d["detectable"]["paired"] > 0
    assert list(res["matched"]) == ["m"]  # neither the reference nor the base model
    # box: ASR ≤ 10, RR ≤ the base model's 10; m's closest is λ=1 at hypot(10, 20), rr's is rr@120 at hypot(40, 30)
    assert res["box"]["rr"] == 10.0
    assert res["box"]["closest"]["m"] == {"label": "λ=1", "asr": 20.0, "rr": 30.0, "distance": 22.36}
    assert res["box"]["closest"]["rr"]["label"] == "rr@120" and res["box"]["closest"]["rr"]["distance"] == 50.0
    assert res["command"].startswith("python") and "git" in res
    md = (tmp_path / "out" / "frontier.md").read_text()
    assert "demo-harmful 20, demo-pseudo 20" in md and "500 replicates" in md and "| m | 10.0 |" in md


def test_points_are_restricted_to_the_prompts_all_share(tmp_path: Path) -> None:
    big, small = sampled(30), sampled(10, seed=1)  # another seed: samples that overlap in part
    common = {s: set(big[s]) & set(small[s]) for s in SETS}
    assert all(0 < len(common[s]) < 10 for s in SETS)
    # the big run answers every harmful prompt the small one lacks, and none of the shared ones: ASR 0 after the cut
    only_big = set(big["demo-harmful"]) - common["demo-harmful"]
    eval_folder(tmp_path / "big", 30, {"demo-harmful": only_big})
    eval_folder(tmp_path / "small", 10, {"demo-harmful": 10, "demo-pseudo": 10}, seed=1)
    methods = {
        "rr": [{"label": "big", "eval": str(tmp_path / "big")}],
        "m": [{"label": "small", "eval": str(tmp_path / "small")}],
    }
    spec = write_spec(tmp_path / "spec.yaml", methods)
    assert frontier.main(["--spec", str(spec), "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "frontier.json").read_text())
    assert res["n"] == {s: len(common[s]) for s in SETS}
    by = {r["label"]: r for r in res["points"]}
    assert by["big"]["n_loaded"] == {"demo-harmful": 30, "demo-pseudo": 30} and by["big"]["asr"] == 0.0
    assert by["small"]["asr"] == 100.0 and by["small"]["rr"] == 0.0
    assert by["big"]["sets"]["demo-harmful"]["n"] == len(common["demo-harmful"])
    assert "cut down to the shared ones: big" in (tmp_path / "out" / "frontier.md").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown spec key(s) ['colour']"),
        ({"reference": "sft"}, "reference 'sft' must be one of the methods"),
        ({"harmful": ["demo-benign"]}, "has no rows of set(s) ['demo-benign']"),
        ({"methods": {"rr": [{"label": "a", "eval": "nowhere"}]}}, "no evaluation folder nowhere"),
        ({"methods": {"rr": [{"label": "a", "eval": "x", "strength": 1}]}}, "unknown point key(s) ['strength']"),
        ({"operating_point": "rr@7"}, "operating_point 'rr@7' is not a point of the reference"),
        ({"box": {"asr": 10, "rr": "base"}}, "box rr: base needs a method named 'base'"),
    ],
)
def test_a_bad_spec_is_a_one_line_error(tmp_path: Path, change: dict, message: str) -> None:
    eval_folder(tmp_path / "a", 5, {})
    spec = {
        "harmful": ["demo-harmful"],
        "overrefusal": ["demo-pseudo"],
        "reference": "rr",
        "methods": {"rr": [{"label": "a", "eval": str(tmp_path / "a")}]},
        **change,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as e:
        frontier.main(["--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out")])
    text = str(e.value)
    assert text.startswith("frontier: ") and message in text and "\n" not in text


def test_the_figure_is_written(tmp_path: Path) -> None:
    for name, k in (("a", 1), ("b", 4), ("c", 2)):
        eval_folder(tmp_path / name, 5, {"demo-harmful": k, "demo-pseudo": 5 - k})
    methods = {
        "base": [{"label": "base", "eval": str(tmp_path / "c")}],
        "rr": [{"label": "a", "eval": str(tmp_path / "a"), "knob": 1}, {"label": "b", "eval": str(tmp_path / "b")}],
    }
    spec = write_spec(tmp_path / "spec.yaml", methods, box={"asr": 10, "rr": 20})
    assert frontier.main(["--spec", str(spec), "--out", str(tmp_path / "out")]) == 0
    png = tmp_path / "out" / "frontier.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert json.loads((tmp_path / "out" / "frontier.json").read_text())["matched"] == {}


def test_the_shipped_spec_is_valid() -> None:
    path = Path(__file__).resolve().parents[1] / "experiments" / "frontiers" / "qwen-sweep.yaml"
    es = frontier.entries(frontier.read_spec(path))
    assert [e.label for e in es if e.method == "rr"] == ["rr@40", "rr@50", "rr@60", "rr@70", "rr@80", "rr@120"]


def test_partial_leaves_out_unfinished_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--partial drops the points whose evaluation has not finished and lists them; without it they are errors."""
    monkeypatch.chdir(tmp_path)
    methods = two_methods(tmp_path)
    (tmp_path / "runs" / "m2" / "metrics.json").unlink()  # m's second point still running
    spec = write_spec(tmp_path / "spec.yaml", methods)
    with pytest.raises(SystemExit, match="not a finished"):
        frontier.main(["--spec", str(spec), "--out", "o"])
    assert frontier.main(["--spec", str(spec), "--out", "o", "--partial"]) == 0
    res = json.loads((tmp_path / "o" / "frontier.json").read_text())
    assert res["skipped"] == ["λ=1"] and "λ=1" not in {r["label"] for r in res["points"]}
    assert "left out (`--partial`): λ=1" in (tmp_path / "o" / "frontier.md").read_text()


def test_envelope_compares_the_best_trade_offs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """envelope: true drops the points another point of the same method beats on both rates (a trajectory
    that swings back): rr's (50, 40) point is beaten by nothing, an extra (30, 90) point by (10, 80)."""
    monkeypatch.chdir(tmp_path)
    methods = two_methods(tmp_path)
    eval_folder(tmp_path / "runs" / "r3", 20, {"demo-harmful": 6, "demo-pseudo": 2})  # ASR 30, RR 90
    methods["rr"].append({"label": "rr@80", "eval": "runs/r3", "knob": 80})
    plain = write_spec(tmp_path / "plain.yaml", methods, bootstrap=200)
    env = write_spec(tmp_path / "env.yaml", methods, bootstrap=200, envelope=True)
    assert frontier.main(["--spec", str(plain), "--out", "p"]) == 0
    assert frontier.main(["--spec", str(env), "--out", "e"]) == 0
    p = json.loads((tmp_path / "p" / "frontier.json").read_text())
    e = json.loads((tmp_path / "e" / "frontier.json").read_text())
    assert {r["label"]: r["on_envelope"] for r in e["points"] if r["method"] == "rr"} == {
        "rr@40": True,
        "rr@80": False,
        "rr@120": True,
    }
    # at ASR 10 both frontiers start at rr@40; at m's ASR 20 the plain rr line passes (30, 90), the envelope does not
    assert e["matched"]["m"]["difference"] == pytest.approx(-40.0)
    assert "on_envelope" not in p["points"][0] and "rr@80 †" in (tmp_path / "e" / "frontier.md").read_text()
    with pytest.raises(SystemExit, match="envelope"):
        frontier.main(["--spec", str(write_spec(tmp_path / "bad.yaml", methods, envelope="yes")), "--out", "b"])


def test_reference_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--reference swaps the method the others are compared with (the sign of the difference flips)."""
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path / "spec.yaml", two_methods(tmp_path), bootstrap=200, operating_point="rr@40")
    assert frontier.main(["--spec", str(spec), "--out", "a"]) == 0
    assert frontier.main(["--spec", str(spec), "--out", "b", "--reference", "m", "--operating-point", "λ=1"]) == 0
    a = json.loads((tmp_path / "a" / "frontier.json").read_text())
    b = json.loads((tmp_path / "b" / "frontier.json").read_text())
    assert b["reference"] == "m" and b["operating_point"]["label"] == "λ=1" and list(b["matched"]) == ["rr"]
    # at ASR 20: rr's line (10, 80)–(50, 40) gives 70, m's point is 30
    assert b["matched"]["rr"]["difference"] == pytest.approx(40.0) and a["matched"]["m"]["difference"] < 0
    with pytest.raises(SystemExit, match="reference 'nope'"):
        frontier.main(["--spec", str(spec), "--out", "c", "--reference", "nope"])


def test_degraded_points_are_drawn_but_never_compared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    methods = two_methods(tmp_path)
    first = sampled(20)["demo-harmful"][0]  # an NLL row rides on a sampled id (it is not an answer)
    for name, nll in (("r1", 8.0), ("r2", 2.4), ("m1", 2.5), ("m2", 2.5), ("b", 2.4)):  # rr@40 is broken
        with (tmp_path / "runs" / name / "responses.jsonl").open("a") as f:
            f.write(json.dumps({"set": "demo-harmful", "id": first, "label": "harmful", "nll": nll}) + "\n")
    spec = write_spec(tmp_path / "spec.yaml", methods, box={"asr": 10, "rr": "base"}, bootstrap=200, max_nll=3.0)
    assert frontier.main(["--spec", str(spec), "--out", "out"]) == 0
    res = json.loads((tmp_path / "out" / "frontier.json").read_text())
    by = {r["label"]: r for r in res["points"]}
    assert by["rr@40"]["degraded"] and not by["rr@120"]["degraded"] and not by["base"]["degraded"]
    # rr's only comparable point is now rr@120 (ASR 50): the default operating point, and the box's closest
    assert res["operating_point"]["label"] == "rr@120" and res["box"]["closest"]["rr"]["label"] == "rr@120"
    assert "rr@40 ‡" in (tmp_path / "out" / "frontier.md").read_text()
    with pytest.raises(SystemExit, match="max_nll"):
        frontier.main(["--spec", str(write_spec(tmp_path / "bad.yaml", methods, max_nll="high")), "--out", "o2"])
