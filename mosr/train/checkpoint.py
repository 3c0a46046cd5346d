"""Checkpoints and saved adapters of a run folder, and what resuming needs.

``checkpoints/step-N/`` holds ``adapter.safetensors`` (the LoRA weights), ``state.pt`` (optimizer,
scheduler, RNG states of python / numpy / torch (/ CUDA), step) and ``step.json``; each is written
into a temporary folder and renamed into place, so a folder that exists is complete. ``adapter/`` (and
``adapter-step-N/``) are PEFT adapters (``save_pretrained``), written the same way.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from mosr.config import changed_run_error
from mosr.io import read_json, write_json, write_jsonl
from mosr.train.config import TrainConfig

if TYPE_CHECKING:
    from peft import PeftModel


def rng_state() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch, and CUDA when present), as a checkpoint stores them."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states of :func:`rng_state` (CUDA only where present then and now)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path, peft_model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: Any, step: int
) -> Path:
    """Write ``path`` (a folder) atomically: adapter weights, optimizer, scheduler, RNG states, step."""
    from peft import get_peft_model_state_dict

    from mosr.io import save_tensors

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_tensors(tmp / "adapter.safetensors", get_peft_model_state_dict(peft_model))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(), "step": step},
        tmp / "state.pt",
    )
    write_json(tmp / "step.json", {"step": step})
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def latest_checkpoint(run: Path) -> Path | None:
    """The checkpoint folder with the highest step (only complete ones: they are renamed into place)."""
    root = run / "checkpoints"
    found = [(read_json(p / "step.json")["step"], p) for p in root.glob("step-*") if (p / "step.json").is_file()]
    return max(found)[1] if found else None


def load_checkpoint(path: Path, peft_model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: Any) -> int:
    """Restore a checkpoint into the live objects; returns the number of finished optimizer steps."""
    from peft import set_peft_model_state_dict

    from mosr.io import load_tensors

    set_peft_model_state_dict(peft_model, load_tensors(path / "adapter.safetensors"))
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["step"])


def save_adapter(peft_model: PeftModel, path: Path, state_dict: dict[str, Tensor] | None = None) -> Path:
    """``save_pretrained`` (optionally from a gathered ``state_dict``) into a temporary folder, then
    rename into place."""
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp), state_dict=state_dict)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def save_gathered_adapter(accelerator: Any, forward: nn.Module, path: Path, main: bool) -> None:
    """Save the adapter of the wrapped ``forward`` to ``path``. ``get_state_dict`` gathers sharded
    parameters (FSDP / DeepSpeed), so every process must call this; only the main one writes."""
    full = accelerator.get_state_dict(forward)
    prefix = "peft_model."
    state = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
    if main:
        save_adapter(accelerator.unwrap_model(forward).peft_model, path, state)


#: config fields a resumed (or finished) run may change
_FREE = frozenset({"progress", "reference_cache"})


def check_same_config(saved: TrainConfig, now: TrainConfig, out: Path) -> None:
    """A resumed run must use the config it was started with (``progress`` and ``reference_cache`` may
    differ: the cache changes results by float rounding at most, and a run folder made before it existed
    still resumes); else the :func:`~mosr.config.changed_run_error` of ``mosr eval``, naming the
    differing fields (dotted keys)."""
    a, b = _flat(saved.to_dict()), _flat(now.to_dict())
    diff = sorted(k for k in set(a) | set(b) if k not in _FREE and a.get(k) != b.get(k))
    if diff:
        raise changed_run_error(out, diff, a)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as ``{"lora.rank": 16, ...}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def truncate_log(log: Path, step: int) -> None:
    """Drop log rows past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not log.is_file():
        return
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    write_jsonl(log, [r for r in rows if r.get("step", 0) <= step])


def prune_checkpoints(run: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest complete checkpoints of ``run`` (``keep`` ≤ 0: keep every one)."""
    found = sorted(
        (read_json(p / "step.json")["step"], p)
        for p in (run / "checkpoints").glob("step-*")
        if (p / "step.json").is_file()
    )
    for _, p in found[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)


#: the name the helper had in the single-module ``mosr/train.py``
_save_gathered_adapter = save_gathered_adapter
