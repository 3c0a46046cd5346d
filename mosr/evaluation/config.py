"""What an evaluation run is: :class:`EvalConfig` (sets, sampling, generation, judge, capability-NLL sets,
intervention) and the loading of its prompt sets (:func:`load_set`, :func:`load_sets`); the run itself is
:func:`mosr.evaluation.run.evaluate`."""

from __future__ import annotations

from dataclasses import dataclass, field

from mosr.config import Config
from mosr.data import ALL_LABELS, PromptSet
from mosr.errors import ConfigError, DataError
from mosr.evaluation.judge import JudgeConfig
from mosr.interventions.apply import InterventionConfig
from mosr.models import DEFAULT_MODEL

#: shorthand set names expanded before loading
SET_ALIASES: dict[str, tuple[str, ...]] = {"jbb": ("jbb-harmful", "jbb-benign")}
#: config fields that define what a run folder contains; a resumed run must agree on them
RUN_DEFINING = (
    "model",
    "adapter",
    "seed",
    "mode",
    "max_new_tokens",
    "max_new_tokens_per_set",
    "system",
    "chat",
    "dtype",
    "judge",
    "nll_max_length",
    "label",
    "intervention",
)
MODES = ("generate", "score", "repr")
#: sets scored by capability NLL (not generated) when listed in ``sets`` and ``nll_sets`` is not given
DEFAULT_NLL_SETS: tuple[str, ...] = ("self-instruct-heldout",)


@dataclass
class EvalConfig(Config):
    """What to evaluate and how. Saved as ``config.yaml`` in the run folder."""

    model: str = DEFAULT_MODEL
    adapter: str | None = None
    sets: list[str] = field(default_factory=lambda: ["xstest", "jbb-harmful", "jbb-benign"])
    #: seeded sample of n prompts for each name in ``sets`` (None = all). A composite name, a mixed set
    #: (xstest) or an alias (jbb), shares its n among its subsets, drawn as one set: n=16 of xstest gave
    #: 10 safe + 6 unsafe; name the subsets (xstest-safe, xstest-unsafe) for n of each
    n: int | None = None
    #: overrides n for some names of ``sets`` (or subsets of a composite name, each then drawn alone)
    n_per_set: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    mode: str = "generate"  # generate | score (refusal score only, no generation)
    max_new_tokens: int = 64
    max_new_tokens_per_set: dict[str, int] = field(default_factory=dict)  # e.g. {"gsm8k": 256}
    batch_size: int = 16
    max_batch_tokens: int | None = 4096  # padded prompt tokens per batch (long prompts get smaller batches)
    system: str | None = None  # system prompt (None = the chat template's default)
    chat: bool = True
    data_dir: str | None = None
    dtype: str = "float32"
    device: str | None = None
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    #: sets scored by capability NLL of their reference ``completion`` instead of being generated
    #: (None = those of :data:`DEFAULT_NLL_SETS` that are in ``sets``; [] = none)
    nll_sets: list[str] | None = None
    nll_max_length: int = 1024  # prompt + answer tokens per NLL example (longer ones are cut on the right)
    #: ``mode: repr``: layers of the displacement 1 − cos(h', h) (None: ≈1/3 and 2/3 depth)
    repr_layers: list[int] | None = None
    #: label of prompts in prompt files that carry none (.txt files, {"prompt": ...} lines); None = unknown
    label: str | None = None
    intervention: InterventionConfig = field(default_factory=InterventionConfig)  # --ablate / --steer DIR, whole run

    def __post_init__(self) -> None:
        if self.label is not None and self.label not in ALL_LABELS:
            raise ConfigError(f"EvalConfig.label must be one of {ALL_LABELS}, got {self.label!r}")
        if self.mode not in MODES:
            raise ConfigError(f"EvalConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("EvalConfig.batch_size and max_new_tokens must be ≥ 1")
        if isinstance(self.sets, str):
            self.sets = [s.strip() for s in self.sets.split(",") if s.strip()]
        if not self.sets:
            raise ConfigError("EvalConfig.sets is empty: name at least one data set")
        if isinstance(self.nll_sets, str):
            self.nll_sets = [s.strip() for s in self.nll_sets.split(",") if s.strip()]
        if self.nll_sets is not None:
            stray = [s for s in self.nll_sets if s not in self.set_names()]
            if stray:
                raise ConfigError(
                    f"EvalConfig.nll_sets {stray} are not in sets {self.set_names()}: an NLL set "
                    "must also be listed in sets"
                )
        if self.nll_max_length < 2:
            raise ConfigError("EvalConfig.nll_max_length must be ≥ 2")

    def set_names(self) -> list[str]:
        """Set names with aliases expanded, duplicates removed, order kept."""
        out: list[str] = []
        for name in self.sets:
            for s in SET_ALIASES.get(name, (name,)):
                if s not in out:
                    out.append(s)
        return out

    def nll_set_names(self) -> list[str]:
        """The sets scored by capability NLL (``nll_sets`` resolved; set order kept)."""
        chosen = self.nll_sets if self.nll_sets is not None else DEFAULT_NLL_SETS
        return [s for s in self.set_names() if s in chosen]

    def set_groups(self) -> list[tuple[str, list[str]]]:
        """Each name of ``sets`` with the sets it loads (an alias expanded; a set loaded once, by its
        first name)."""
        seen: set[str] = set()
        groups = []
        for name in self.sets:
            members = [s for s in SET_ALIASES.get(name, (name,)) if s not in seen]
            seen.update(members)
            if members:
                groups.append((name, members))
        return groups

    def check_per_set(self) -> None:
        """Raise :class:`ConfigError` for a ``n_per_set`` / ``max_new_tokens_per_set`` key that names no set
        of this run (a typo or a set missing from ``sets`` would otherwise be ignored)."""
        known = [*dict.fromkeys([*self.sets, *self.set_names()])]
        for field_name, flag in (("n_per_set", "--n-per-set"), ("max_new_tokens_per_set", "--max-new-tokens-per-set")):
            bad = [k for k in getattr(self, field_name) if k not in known]
            if bad:
                raise ConfigError(
                    f"{field_name} ({flag}): {', '.join(map(repr, bad))} not among the sets of this "
                    f"run ({', '.join(known)}); a key must name a set given in sets"
                )

    def n_for(self, name: str) -> int | None:
        return self.n_per_set.get(name, self.n)

    def tokens_for(self, name: str) -> int:
        return self.max_new_tokens_per_set.get(name, self.max_new_tokens)


def load_set(
    name: str, data_dir: str | None = None, n: int | None = None, seed: int = 0, label: str | None = None
) -> PromptSet:
    """A benchmark set by name (see :func:`mosr.datasets.names`) or a prompt file (``.jsonl`` / ``.txt``;
    ``label`` for its unlabelled prompts), seeded sample of ``n``."""
    from mosr import datasets

    ps = datasets.load(name, data_dir=data_dir, label=label)  # a set name or a prompt file
    if not len(ps):
        raise DataError(f"data set {name!r} is empty: nothing to evaluate")
    if n is not None and n < 1:
        raise DataError(f"n={n} for data set {name!r}: need at least 1 prompt")
    ids = ps.ids
    if len(set(ids)) != len(ids):
        raise DataError(f"data set {name!r} has duplicate ids; resuming needs unique ids")
    return ps.sample(n, seed)


def load_sets(cfg: EvalConfig) -> dict[str, PromptSet]:
    """Every set of ``cfg`` (errors for unknown or empty sets are raised before any model is loaded)."""
    from mosr import datasets

    for name in cfg.set_names():  # every name first: a typo is reported before a missing data directory
        datasets.check_name(name)
    sets: dict[str, PromptSet] = {}
    for group, names in cfg.set_groups():  # a composite name shares its n (mixed sets are loaded as one)
        alone = [s for s in names if s == group or s in cfg.n_per_set]
        sets.update({s: load_set(s, cfg.data_dir, cfg.n_for(s), cfg.seed, cfg.label) for s in alone})
        shared = [s for s in names if s not in alone]
        n = cfg.n_for(group)
        if shared and n is not None and n < 1:
            raise DataError(f"n={n} for data set {group!r}: need at least 1 prompt")
        parts = [load_set(s, cfg.data_dir, None, cfg.seed, cfg.label) for s in shared]
        sets.update(zip(shared, PromptSet.sample_together(parts, n, cfg.seed)))
    sets = {name: sets[name] for name in cfg.set_names()}
    for name in cfg.nll_set_names():
        bad = [r.id for r in sets[name] if not r.completion or r.label == "harmful"]
        if bad:
            raise DataError(
                f"data set {name!r} cannot be scored by capability NLL: {len(bad)} record(s) "
                f"(e.g. {bad[:3]}) are harmful or have no reference 'completion'. NLL sets need "
                "benign / pseudo-harmful records with good answers (e.g. self-instruct-heldout)"
            )
    return sets
