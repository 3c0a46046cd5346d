"""The trade-off study's plan: which methods, seeds, sets and comparisons (``experiments/studies/*.yaml``),
and the name of a point. Used by the stages (:mod:`mosr.tradeoff.run`) and the report
(:mod:`mosr.tradeoff.report`), which do not import each other at module level."""

from __future__ import annotations

from dataclasses import dataclass, field

from mosr.config import Config
from mosr.errors import ConfigError
from mosr.evaluation.metrics import PAPER_ASR_COLUMNS
from mosr.models import DEFAULT_MODEL

RR_SETS = ("xstest-safe", "orbench-hard", "jbb-benign")


@dataclass
class StudyPlan(Config):
    """One trade-off study. Method configs are ``mosr train`` YAML files; ``set`` applies to all."""

    name: str = "study"
    model: str = DEFAULT_MODEL
    #: method name -> train config (YAML path)
    methods: dict[str, str] = field(
        default_factory=lambda: {"rr": "experiments/rr.yaml", "mosr": "experiments/mosr.yaml"}
    )
    #: ``key=value`` overrides applied to every method's config
    set: list[str] = field(default_factory=list)
    #: per-method ``key=value`` overrides, applied after ``set`` (a method = a config plus overrides, e.g.
    #: ``sft_a025: [sft_alpha=0.25]`` or a sensitivity variant ``mosr_lam1: [weighting.lam=1.0]``)
    method_set: dict[str, list[str]] = field(default_factory=dict)
    #: named groups of methods that differ in one setting (SFT over alpha, a sensitivity sweep): their
    #: final points are tabulated together and drawn as one curve each in ``groups.png``
    groups: dict[str, list[str]] = field(default_factory=dict)
    #: methods drawn in ``frontier.png`` (empty = all); the groups have their own figure
    figure_methods: list[str] = field(default_factory=list)
    #: training steps at which the frontier seed also saves an adapter (the final step is always a point)
    frontier_steps: list[int] = field(default_factory=lambda: [20, 25, 30, 35])
    #: methods whose seeds[0] run saves the frontier (empty = all methods; the others give one point)
    frontier_methods: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    #: methods trained at every seed (the others at seeds[0] only)
    seed_methods: list[str] = field(default_factory=lambda: ["rr", "mosr"])
    harmful: list[str] = field(default_factory=lambda: list(PAPER_ASR_COLUMNS))
    overrefusal: list[str] = field(default_factory=lambda: list(RR_SETS))
    n: int = 30
    n_per_set: dict[str, int] = field(default_factory=lambda: {"orbench-hard": 200})
    max_new_tokens: int = 40
    eval_seed: int = 0
    #: capability NLL on held-out Self-Instruct answers at every point
    nll: bool = True
    #: methods whose final adapter (seeds[0]) gets the representation stage, besides the base model
    repr_methods: list[str] = field(default_factory=lambda: ["rr", "mosr"])
    #: training sets for the base model's benign-vs-harmful probe (representation stage)
    probe_benign: str = "self-instruct-retain"
    probe_harmful: str = "rd-harmful-train"
    probe_n: int = 128
    #: LogitLens per set in the representation stage (``lens.png``; the costliest part of that stage)
    lens: bool = True
    #: the method every other is compared with at matched ASR
    reference: str = "rr"
    #: further ``[method, reference]`` pairs compared the same way (e.g. ``[[mosr, xboundary]]``)
    compare: list[list[str]] = field(default_factory=list)
    bootstrap: int = 1000
    data_dir: str | None = None
    dtype: str = "float32"
    device: str | None = None

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError("study: methods is empty")
        if not self.seeds:
            raise ConfigError("study: seeds is empty")
        grouped = [m for ms in [*self.groups.values(), *self.compare] for m in ms]
        if any(len(pair) != 2 for pair in self.compare):
            raise ConfigError(f"study: compare takes [method, reference] pairs, got {self.compare}")
        stray = [
            m
            for m in [
                *self.seed_methods,
                *self.repr_methods,
                *self.frontier_methods,
                *self.method_set,
                *grouped,
                *self.figure_methods,
            ]
            if m not in self.methods
        ]
        if stray:
            raise ConfigError(f"study: {stray} are not in methods {sorted(self.methods)}")
        if self.reference not in self.methods:
            raise ConfigError(f"study: reference {self.reference!r} is not in methods {sorted(self.methods)}")
        bad = [m for m in self.methods if "-s" in m or "@" in m or m == "base"]
        if bad:
            raise ConfigError(f"study: method names {bad} may not be 'base' or contain '-s' or '@' (point names)")
        if not self.harmful or not self.overrefusal:
            raise ConfigError("study: name at least one harmful and one over-refusal set")

    def eval_sets(self) -> list[str]:
        return [*self.harmful, *self.overrefusal, *(["self-instruct-heldout"] if self.nll else [])]


def point_name(method: str, seed: int, step: int) -> str:
    return f"{method}-s{seed}@{step}"
