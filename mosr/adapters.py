"""LoRA adapters on a loaded model: the folder check, the merge on load, and the model an adapter was
trained on (so ``mosr eval --adapter`` needs no ``--model``)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from mosr.errors import ModelError


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Wrapping a model in peft asks transformers' deprecated ``is_gradient_checkpointing`` (a FutureWarning on
    every load); silence that one warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def check_adapter(adapter: str | os.PathLike[str]) -> Path:
    """The adapter directory, or a :class:`ModelError` saying that it is missing or not an adapter."""
    path = Path(adapter)
    if not path.is_dir():
        raise ModelError(
            f"adapter directory {path} does not exist"
            if not path.exists()
            else f"adapter {path} is not a directory (give the folder holding adapter_config.json)"
        )
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"adapter directory {path} has no adapter_config.json")
    return path


def adapter_base_model(adapter: str | os.PathLike[str]) -> str | None:
    """The model an adapter was trained on: the ``model`` of the ``mosr train`` run that wrote it (its
    ``config.yaml`` sits beside ``adapter/`` and ``adapter-step-N/``), else the adapter's own
    ``base_model_name_or_path``; None when neither says."""
    import json

    import yaml

    path = check_adapter(adapter)
    run_config = path.parent / "config.yaml"
    if run_config.is_file():
        try:
            data = yaml.safe_load(run_config.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("model"), str) and "method" in data:
            return data["model"]
    try:
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return base if isinstance(base, str) and base else None


def apply_adapter(model: nn.Module, adapter: Path) -> nn.Module:
    """Load a PEFT adapter and merge it, so hooks see a plain model with the same block paths."""
    import json

    from peft import PeftModel

    cfg = check_adapter(adapter) / "adapter_config.json"
    try:
        with quiet_peft():
            peft_model = PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError, KeyError) as e:
        base = json.loads(cfg.read_text()).get("base_model_name_or_path")
        raise ModelError(
            f"adapter {adapter} does not match this model (adapter was trained on {base!r}): "
            f"{str(e).splitlines()[0][:300]}"
        ) from None
    return peft_model.merge_and_unload()
