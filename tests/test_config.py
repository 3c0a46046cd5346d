"""Tests of mosr.config: values coerce to their field's type hint; bad values are one-line ConfigErrors."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mosr.config import Config, apply_overrides
from mosr.errors import ConfigError
from mosr.evaluation.config import EvalConfig
from mosr.represent.study import RepresentationConfig
from mosr.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inner(Config):
    """Nested config for the coercion table."""

    n: int = 1
    name: str = "x"


@dataclass
class Sample(Config):
    """One field per kind of type hint that ``_coerce`` handles."""

    f: float = 0.0
    i: int = 0
    b: bool = False
    s: str = ""
    li: list[int] = field(default_factory=list)
    ls: list[str] = field(default_factory=list)
    tf: tuple[float, ...] = ()
    pair: tuple[int, str] = (0, "")
    df: dict[str, float] = field(default_factory=dict)
    dn: dict[str, int | None] = field(default_factory=dict)
    oi: int | None = None
    os_: str | None = "set"
    ob: bool | None = None
    ol: list[int] | None = None
    inner: Inner = field(default_factory=Inner)
    oinner: Inner | None = None
    anything: Any = None


GOOD = [
    ("f", "5e-5", 5e-5),
    ("f", "1e-3", 1e-3),
    ("f", 3, 3.0),
    ("f", 2.5, 2.5),
    ("f", " 0.1 ", 0.1),
    ("i", "40", 40),
    ("i", 40, 40),
    ("i", 4.0, 4),
    ("i", "1e3", 1000),
    ("i", "-3", -3),
    ("b", True, True),
    ("b", "true", True),
    ("b", "False", False),
    ("b", "YES", True),
    ("b", "no", False),
    ("b", "1", True),
    ("b", "0", False),
    ("b", "on", True),
    ("b", "Off", False),
    ("b", 1, True),
    ("b", 0, False),
    ("s", "abc", "abc"),
    ("s", 12, "12"),
    ("s", 1.5, "1.5"),
    ("s", Path("a/b"), "a/b"),
    ("li", [1, "2", 3.0], [1, 2, 3]),
    ("li", "10,20", [10, 20]),
    ("li", " 10 , 20 ", [10, 20]),
    ("li", 7, [7]),
    ("li", "7", [7]),
    ("li", (1, 2), [1, 2]),
    ("li", [], []),
    ("ls", "a,b", ["a", "b"]),
    ("ls", "xstest", ["xstest"]),
    ("ls", [1, "b"], ["1", "b"]),
    ("tf", [1, "1e-2"], (1.0, 0.01)),
    ("tf", "0.1,1", (0.1, 1.0)),
    ("tf", 2, (2.0,)),
    ("pair", [1, 2], (1, "2")),
    ("pair", "3,x", (3, "x")),
    ("df", {"erase": 4, "retain": "0.5"}, {"erase": 4.0, "retain": 0.5}),
    ("dn", {"a": None, "b": "5", "c": "null"}, {"a": None, "b": 5, "c": None}),
    ("oi", None, None),
    ("oi", "null", None),
    ("oi", "none", None),
    ("oi", "None", None),
    ("oi", "7", 7),
    ("os_", None, None),
    ("os_", "None", None),
    ("os_", "", ""),
    ("os_", 5, "5"),
    ("ob", "false", False),
    ("ob", "null", None),
    ("ol", "10,20", [10, 20]),
    ("ol", None, None),
    ("inner", {"n": "3"}, Inner(n=3)),
    ("inner", Inner(n=2), Inner(n=2)),
    ("oinner", {"name": 5}, Inner(name="5")),
    ("oinner", None, None),
    ("anything", "5e-5", "5e-5"),
    ("anything", [1, "a"], [1, "a"]),
]


@pytest.mark.parametrize("key, value, expected", GOOD)
def test_values_coerce_to_the_field_type(key: str, value: Any, expected: Any) -> None:
    got = getattr(Sample.from_dict({key: value}), key)
    assert got == expected
    assert type(got) is type(expected)
    if isinstance(expected, (list, tuple)):
        assert [type(x) for x in got] == [type(x) for x in expected]
    if isinstance(expected, dict):
        assert [type(x) for x in got.values()] == [type(x) for x in expected.values()]


BAD = [
    ("f", "abc", "Sample.f: expected a float, got 'abc'"),
    ("f", True, "Sample.f: expected a float"),
    ("f", None, "Sample.f: expected a float, got None"),
    ("f", [1], "Sample.f: expected a float"),
    ("i", 2.5, "Sample.i: expected an int, got 2.5"),
    ("i", "2.5", "Sample.i: expected an int, got '2.5'"),
    ("i", "forty", "Sample.i: expected an int"),
    ("i", False, "Sample.i: expected an int"),
    ("b", "maybe", "Sample.b: expected a bool"),
    ("b", 2, r"Sample.b: expected a bool \(true/false\), got 2"),
    ("b", 1.0, "Sample.b: expected a bool"),
    ("b", None, "Sample.b: expected a bool"),
    ("s", False, "Sample.s: expected a string, got False"),
    ("s", ["a"], "Sample.s: expected a string"),
    ("li", "10,x", r"Sample.li\[1\]: expected an int, got 'x'"),
    ("li", {"a": 1}, "Sample.li: expected a list"),
    ("li", None, "Sample.li: expected a list, got None"),
    ("tf", ["a"], r"Sample.tf\[0\]: expected a float"),
    ("pair", [1, 2, 3], "Sample.pair: expected a tuple of 2"),
    ("df", [1, 2], "Sample.df: expected a mapping"),
    ("df", {"erase": "x"}, "Sample.df.erase: expected a float"),
    ("dn", {"a": 2.5}, "Sample.dn.a: expected an int"),
    ("oi", "seven", "Sample.oi: expected an int, got 'seven'"),
    ("ob", "maybe", "Sample.ob: expected a bool"),
    ("inner", 3, "Sample.inner: expected a mapping, got 3"),
    ("inner", {"n": "x"}, "Sample.inner.n: expected an int"),
    ("inner", {"m": 1}, r"Sample.inner: unknown key\(s\) \['m'\]"),
    ("oinner", {"n": 1.5}, "Sample.oinner.n: expected an int"),
]


@pytest.mark.parametrize("key, value, match", BAD)
def test_bad_values_are_one_line_config_errors_naming_the_key(key: str, value: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=f"^{match}") as info:
        Sample.from_dict({key: value})
    assert "\n" not in str(info.value)


def test_from_dict_rejects_a_non_mapping() -> None:
    with pytest.raises(ConfigError, match="Sample: expected a mapping, got"):
        Sample.from_dict([1, 2])  # type: ignore[arg-type]


# --- TrainConfig and `--set` -------------------------------------------------------------------------------


def test_train_config_lr_from_a_yaml_string() -> None:
    assert TrainConfig.from_dict({"lr": "5e-5"}).lr == 5e-5
    assert TrainConfig.from_dict({"steps": "40", "target_layers": "10,20"}).target_layers == [10, 20]


def test_yaml_file_with_exponent_lr(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("method: rr\nlr: 5e-5\nweighting: {lam: 7e-1}\n")  # YAML 1.1: strings
    cfg = TrainConfig.load(tmp_path / "c.yaml")
    assert cfg.lr == 5e-5 and isinstance(cfg.lr, float) and cfg.weighting.lam == 0.7


def _with(*items: str) -> TrainConfig:
    return TrainConfig.from_dict(apply_overrides(TrainConfig().to_dict(), list(items)))


@pytest.mark.parametrize(
    "item, key, expected",
    [
        ("lr=5e-5", "lr", 5e-5),
        ("lr=0.001", "lr", 0.001),
        ("target_layers=10,20", "target_layers", [10, 20]),
        ("target_layers=[3, 4]", "target_layers", [3, 4]),
        ("target_layers=5", "target_layers", [5]),
        ("use_weights=false", "use_weights", False),
        ("use_weights=null", "use_weights", None),
        ("mixed_precision=no", "mixed_precision", "no"),
        ("steps=40", "steps", 40),
        ("alpha=5", "alpha", 5.0),
        ("mix={erase: 3, retain: 1}", "mix", {"erase": 3.0, "retain": 1.0}),
    ],
)
def test_set_overrides_coerce(item: str, key: str, expected: Any) -> None:
    got = getattr(_with(item), key)
    assert got == expected and type(got) is type(expected)


def test_set_nested_overrides() -> None:
    cfg = _with(
        "data.n_harmful=32", "lora.rank=2", "data.extra_retain=a,b", "weighting.lam=5e-1", "data.completions_cache=null"
    )
    assert cfg.data.n_harmful == 32 and cfg.lora.rank == 2 and cfg.data.extra_retain == ["a", "b"]
    assert cfg.weighting.lam == 0.5 and cfg.data.completions_cache is None


@pytest.mark.parametrize(
    "item, match",
    [
        ("lr=abc", "TrainConfig.lr: expected a float, got 'abc'"),
        ("steps=2.5", "TrainConfig.steps: expected an int, got 2.5"),
        ("use_weights=maybe", "TrainConfig.use_weights: expected a bool"),
        ("data.n_harmful=lots", "TrainConfig.data.n_harmful: expected an int, got 'lots'"),
        ("target_layers=10,x", r"TrainConfig.target_layers\[1\]: expected an int"),
        ("lora.bogus=1", r"TrainConfig.lora: unknown key\(s\) \['bogus'\]"),
        ("lr=[1,2", r"--set lr: cannot parse value '\[1,2' as YAML"),
        ("lr", "--set expects KEY=VALUE"),
        ("lr.x=1", "--set lr.x: 'lr' is not a nested config"),
    ],
)
def test_bad_set_values_are_config_errors_naming_the_key(item: str, match: str) -> None:
    with pytest.raises(ConfigError, match=f"^{match}") as info:
        _with(item)
    assert "\n" not in str(info.value)


def test_cli_train_bad_set_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mosr.cli import main

    rc = main(
        ["train", "--config", str(ROOT / "experiments" / "rr.yaml"), "--out", str(tmp_path / "run"), "--set", "lr=abc"]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == "mosr train: error: TrainConfig.lr: expected a float, got 'abc'"


# --- round trips and shipped configs -----------------------------------------------------------------------


def test_train_config_yaml_round_trip(tmp_path: Path) -> None:
    cfg = _with("lr=5e-5", "target_layers=10,20", "use_weights=false", "data.n_harmful=32", "mix={erase: 3, retain: 1}")
    again = TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "experiments" / "*.yaml"))))
def test_shipped_train_configs_load(path: str) -> None:
    cfg = TrainConfig.load(path)
    cfg.validate()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "probes" / "*.yaml"))))
def test_shipped_study_configs_load(path: str) -> None:
    cfg = RepresentationConfig.load(path)
    assert isinstance(cfg.probe.Cs, tuple) and all(isinstance(c, float) for c in cfg.probe.Cs)
    assert RepresentationConfig.from_dict(cfg.to_dict()) == cfg


def test_eval_config_coerces_sets_and_counts() -> None:
    cfg = EvalConfig.from_dict(
        {"sets": "xstest,gsm8k", "n": "20", "n_per_set": {"gsm8k": "5"}, "judge": {"timeout": "30"}}
    )
    assert cfg.sets == ["xstest", "gsm8k"] and cfg.n == 20 and cfg.n_per_set == {"gsm8k": 5}
    assert cfg.judge.timeout == 30.0
    with pytest.raises(ConfigError, match="^EvalConfig.judge.timeout: expected a float"):
        EvalConfig.from_dict({"judge": {"timeout": "soon"}})
