"""MOSR toolkit: over-refusal through the model's safety representation.

Quick start::

    import mosr
    lm = mosr.load("smollm2-135m-instruct")                 # a model (bundled, offline)
    prompts = mosr.load_prompts("xstest-safe", n=8)          # a benchmark prompt set
    acts = mosr.capture(lm, prompts, layers="all")           # prompt layer d_model = (8, 30, 576)
    with mosr.ablate(lm, direction):                         # interventions are context managers
        print(mosr.generate.generate(lm, prompts))

Names are imported on first use, so ``import mosr`` is quick and loads no torch; importing it sets no
environment variable (the ``mosr`` command sets ``OMP_WAIT_POLICY=PASSIVE`` for itself, see
:mod:`mosr.cli`).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> (module, attribute in it)
_EXPORTS: dict[str, tuple[str, str]] = {
    # models and prompts
    "LM": ("mosr.models", "LM"),
    "load": ("mosr.models", "load"),
    "load_prompts": ("mosr.datasets", "load"),
    "PromptSet": ("mosr.data", "PromptSet"),
    "Record": ("mosr.data", "Record"),
    "read_jsonl": ("mosr.data", "read_jsonl"),
    "MosrError": ("mosr.errors", "MosrError"),
    # representations
    "capture": ("mosr.capture", "capture"),
    "ActivationStore": ("mosr.store", "ActivationStore"),
    "capture_to_store": ("mosr.store", "capture_to_store"),
    "ProbeSet": ("mosr.represent.probe", "ProbeSet"),
    "ProbeConfig": ("mosr.represent.probe", "ProbeConfig"),
    "logit_lens": ("mosr.represent.lens", "logit_lens"),
    "compute_weights": ("mosr.train.weighting", "compute_weights"),
    "WeightConfig": ("mosr.train.weighting", "WeightConfig"),
    # evaluation (generation: the module ``mosr.generate``)
    "judge": ("mosr.evaluation.judge", "judge"),
    "evaluate": ("mosr.evaluation.run", "evaluate"),
    "EvalConfig": ("mosr.evaluation.config", "EvalConfig"),
    # interventions
    "steer": ("mosr.interventions.steer", "steer"),
    "ablate": ("mosr.interventions.ablate", "ablate"),
    "orthogonalize": ("mosr.interventions.orthogonalize", "orthogonalize"),
    "load_direction": ("mosr.interventions.directions", "load_direction"),
    # training (the function: mosr.train.train)
    "TrainConfig": ("mosr.train.config", "TrainConfig"),
}
_SUBMODULES = ("datasets", "generate", "testing", "interventions", "represent", "evaluation", "train", "tradeoff")

__all__ = sorted([*_EXPORTS, "datasets"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"mosr.{name}")
    raise AttributeError(f"module 'mosr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


class _Package(types.ModuleType):
    """``mosr.capture`` stays the function when the module ``mosr.capture`` is imported later (the import
    system binds a submodule to its package's attribute of the same name on first import)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "capture" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # the names above, for type checkers and editors
    from mosr import datasets, evaluation, generate, interventions, represent, testing, tradeoff, train  # noqa: F401
    from mosr.capture import capture  # noqa: F401
    from mosr.data import PromptSet, Record, read_jsonl  # noqa: F401
    from mosr.datasets import load as load_prompts  # noqa: F401
    from mosr.errors import MosrError  # noqa: F401
    from mosr.evaluation.config import EvalConfig  # noqa: F401
    from mosr.evaluation.judge import judge  # noqa: F401
    from mosr.evaluation.run import evaluate  # noqa: F401
    from mosr.interventions.ablate import ablate  # noqa: F401
    from mosr.interventions.directions import load_direction  # noqa: F401
    from mosr.interventions.orthogonalize import orthogonalize  # noqa: F401
    from mosr.interventions.steer import steer  # noqa: F401
    from mosr.models import LM, load  # noqa: F401
    from mosr.represent.lens import logit_lens  # noqa: F401
    from mosr.represent.probe import ProbeConfig, ProbeSet  # noqa: F401
    from mosr.store import ActivationStore, capture_to_store  # noqa: F401
    from mosr.train.config import TrainConfig  # noqa: F401
    from mosr.train.weighting import WeightConfig, compute_weights  # noqa: F401
