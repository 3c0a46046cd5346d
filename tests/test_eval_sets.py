"""Which prompts ``mosr eval`` evaluates (issue 23, bugs 2 and 5): ``--n`` means the same for every name in
``--sets`` (a composite name, mixed set or alias, shares its n among its subsets), and an ``--n-per-set``
key that names no set of the run is a one-line error."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import DATA_DIR

from mosr.cli import main
from mosr.evaluation import config as evaluation
from mosr.evaluation.config import EvalConfig, load_sets


def _sizes(cfg: EvalConfig) -> dict[str, int]:
    return {name: len(ps) for name, ps in load_sets(cfg).items()}


def test_an_alias_shares_n_among_its_subsets_as_a_mixed_set_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(evaluation.SET_ALIASES, "demo-pair", ("demo-harmful", "demo-benign"))
    sizes = _sizes(EvalConfig(sets=["demo", "demo-pair"], n=8))
    assert sizes["demo"] == 8  # a mixed set (three labels) is sampled as a whole
    assert sizes["demo-harmful"] + sizes["demo-benign"] == 8, sizes  # so is an alias: n is per name in sets
    assert min(sizes["demo-harmful"], sizes["demo-benign"]) >= 1
    again = load_sets(EvalConfig(sets=["demo-pair"], n=8))  # seeded
    assert {k: v.ids for k, v in again.items()} == {
        k: v.ids for k, v in load_sets(EvalConfig(sets=["demo-pair"], n=8)).items()
    }
    assert _sizes(EvalConfig(sets=["demo-harmful", "demo-benign"], n=8)) == {"demo-harmful": 8, "demo-benign": 8}
    # --n-per-set for the alias, or for one of its subsets (that subset alone)
    assert sum(_sizes(EvalConfig(sets=["demo-pair"], n=8, n_per_set={"demo-pair": 4})).values()) == 4
    assert _sizes(EvalConfig(sets=["demo-pair"], n=8, n_per_set={"demo-benign": 3}))["demo-benign"] == 3
    assert _sizes(EvalConfig(sets=["demo-pair"]))["demo-benign"] == 70  # no n: every prompt


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason="shared benchmark data not present")
def test_xstest_and_jbb_get_the_same_n() -> None:
    sets = load_sets(EvalConfig(sets=["xstest", "jbb"], n=8, data_dir=str(DATA_DIR)))
    per_name = {"xstest": len(sets["xstest"]), "jbb": len(sets["jbb-harmful"]) + len(sets["jbb-benign"])}
    assert per_name == {"xstest": 8, "jbb": 8}
    assert set(Counter(sets["xstest"].labels)) == {"harmful", "pseudo_harmful"}


def test_n_help_states_the_rule() -> None:
    from mosr.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    text = sub.choices["eval"].format_help()
    assert "jbb" in text and "shares" in text


@pytest.mark.parametrize("pairs", ["demo_harmful=2", "demo-pseudo=2", "demo-harmful=2,xstest-safe=3"])
def test_n_per_set_for_a_set_not_in_sets_is_a_one_line_error(
    pairs: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    rc = main(
        [
            "eval",
            "--model",
            "tiny:llama",
            "--sets",
            "demo-harmful,demo-benign",
            "--n",
            "2",
            "--quiet",
            "--max-new-tokens",
            "2",
            "--n-per-set",
            pairs,
            "--out",
            str(out),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    bad = [p.split("=")[0] for p in pairs.split(",") if not p.startswith("demo-harmful")]
    assert len(err) == 1 and all(repr(b) in err[0] for b in bad) and "Traceback" not in err[0], err
    assert not out.exists()


def test_max_new_tokens_per_set_for_a_set_not_in_sets_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = main(
        [
            "eval",
            "--model",
            "tiny:llama",
            "--sets",
            "demo-harmful",
            "--n",
            "1",
            "--quiet",
            "--max-new-tokens-per-set",
            "gsm8k=256",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert rc == 2 and "'gsm8k'" in capsys.readouterr().err


def test_per_set_keys_of_an_alias_and_its_subsets_are_accepted(tmp_path: Path) -> None:
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny:llama",
                "--sets",
                "demo-harmful",
                "--n-per-set",
                "demo-harmful=1",
                "--max-new-tokens",
                "2",
                "--quiet",
                "--mode",
                "score",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
