"""The public face: what ``import mosr`` gives, without side effects."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import subprocess_env

import mosr


def test_import_sets_no_environment_variable_and_loads_no_torch() -> None:
    code = (
        "import os, sys, json; before = dict(os.environ); import mosr; "
        "print(json.dumps([dict(os.environ) == before, 'torch' in sys.modules]))"
    )
    env = subprocess_env()
    env.pop("OMP_WAIT_POLICY", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [True, False]


def test_the_command_sets_a_passive_wait_policy_before_torch() -> None:
    code = "import os, mosr.cli, sys; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    env = subprocess_env()
    env.pop("OMP_WAIT_POLICY", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["PASSIVE", "False"]


def test_every_exported_name_resolves_and_model_and_prompt_loading_are_distinct() -> None:
    for name in mosr.__all__:
        assert getattr(mosr, name) is not None, name
    assert mosr.load is not mosr.load_prompts
    assert mosr.load.__module__ == "mosr.models" and mosr.load_prompts.__module__ == "mosr.datasets"


def test_capture_stays_the_function_after_its_module_is_imported() -> None:
    import mosr.capture  # noqa: F401  (binds the submodule on first import)
    from mosr.capture import hooked  # noqa: F401

    assert callable(mosr.capture) and mosr.capture.__name__ == "capture"
    lm = mosr.load("tiny:llama")
    assert mosr.capture(lm, ["hi"], layers="all", progress=False).shape == (1, lm.n_layers, lm.d_model)
