"""An on-disk cache of frozen reference states (:mod:`mosr.train.reference`), shared between runs and
addressed by content (``TrainConfig.reference_cache``).

Layout: ``<folder>/<model-key>/<example-key>.safetensors``, plus ``<model-key>/meta.json`` (what the key
was hashed from, for a reader; never read back).

- The **model key** (:func:`model_key`) hashes everything besides the tokens that determines a frozen
  state: the model as configured (``TrainConfig.model``) and as loaded (``LM.name``, its Hugging Face
  config dict less ``_name_or_path``, the architecture's block path), the parameters' dtype, a
  fingerprint of the weights (:func:`weights_fingerprint`), the hooked layers, the device type (CPU and
  CUDA kernels round differently) and the torch / transformers versions. The states are always the
  frozen *base* model's: LoRA parameters are left out of the fingerprint and PEFT's ``base_layer`` names
  folded back, so the key is the same before and after the adapter is attached (whatever it has learnt).
- The **example key** hashes the example's token ids alone: right padding and causal attention make a
  row's states independent of the rest of its batch (up to float rounding), so neither the pool, its
  index nor the chunk it was computed in enters.

One file per example rather than per chunk: runs of different methods (rr, mosr, xboundary...) draw
their pools from overlapping example sets at different indices, so a chunk's composition is not shared
between them while an example's token ids are; and a run reads only the examples it draws (the lazy
:meth:`~mosr.train.reference.ReferenceStates.fill`), never a neighbour's states. A file holds ``states``
(``Tensor[layer seq d_model]``, the model's dtype, exactly as the run that computed it held it) and the
example's ``input_ids``, checked on reading.

Writes go to a uniquely named temporary file renamed into place (:func:`mosr.io.save_tensors`), so an
interrupted run leaves no partial entry and several runs may share the folder (the last of two writers
of one entry wins; both wrote the states of the same tokens). An entry that cannot be read or does not
match (wrong shape, dtype or tokens: a truncated copy, a disk error) is logged, ignored, recomputed and
overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mosr.encoding import EncodedExample
from mosr.io import load_tensors, save_tensors, write_json
from mosr.models import LM

log = logging.getLogger(__name__)

#: bump when the file layout or the key's recipe changes (old entries then simply miss)
FORMAT = 1
#: elements read from each weight tensor for the fingerprint (evenly spaced over the flattened tensor)
SAMPLE = 4096


@dataclass
class RefCache:
    """One model's folder of the cache: ``folder/<example-key>.safetensors`` for the states of
    ``layers`` (``Tensor[layer seq d_model]`` in ``dtype``)."""

    folder: Path
    layers: list[int]
    d_model: int
    dtype: torch.dtype

    def path(self, example: EncodedExample) -> Path:
        return self.folder / f"{example_key(example.input_ids)}.safetensors"

    def load(self, example: EncodedExample, device: torch.device) -> Tensor | None:
        """The cached states of ``example`` on ``device``, or None (absent, unreadable or not matching)."""
        path = self.path(example)
        if not path.is_file():
            return None
        try:
            got = load_tensors(path)
            states, ids = got["states"], got["input_ids"]
            want = (len(self.layers), len(example), self.d_model)
            if tuple(states.shape) != want or states.dtype != self.dtype:
                raise ValueError(f"states {tuple(states.shape)} {states.dtype}, expected {want} {self.dtype}")
            if ids.tolist() != list(example.input_ids):
                raise ValueError("token ids differ from the example's")
        except Exception as e:  # noqa: BLE001  # any unreadable entry is a miss: recomputed and overwritten
            log.warning("reference cache: ignoring %s (%s: %s); recomputing it", path, type(e).__name__, e)
            return None
        return states.to(device)

    def save(self, example: EncodedExample, states: Tensor) -> None:
        """Write the states of ``example`` atomically (a temporary file renamed into place)."""
        save_tensors(
            self.path(example),
            {"states": states, "input_ids": torch.tensor(example.input_ids, dtype=torch.long)},
            metadata={"format": str(FORMAT), "layers": ",".join(map(str, self.layers))},
        )


def open_cache(
    root: str | Path, lm: LM, layers: Sequence[int], device: torch.device | str | None = None, model: str = ""
) -> RefCache:
    """The cache folder under ``root`` (relative: to the working directory) for the frozen states of
    ``lm`` at ``layers`` computed on ``device`` (default: where the model is); ``model`` is the model as
    configured (``TrainConfig.model``). Creates the folder and its ``meta.json``."""
    layers = sorted(set(layers))
    device = torch.device(device) if device is not None else lm.device
    parts = model_key_parts(lm, layers, device, model)
    digest = _digest(parts)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model or lm.name).strip("-.")[:60] or "model"
    folder = Path(root).expanduser() / f"{slug}-{digest[:20]}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "meta.json").is_file():
        write_json(folder / "meta.json", parts)
    return RefCache(folder=folder, layers=layers, d_model=lm.d_model, dtype=_dtype(lm.model))


def model_key_parts(lm: LM, layers: Sequence[int], device: torch.device, model: str = "") -> dict[str, Any]:
    """What the model key hashes (see the module docstring), as a JSON-able mapping."""
    import transformers

    config: Any = getattr(lm.model, "config", None)
    hf = json.loads(json.dumps(config.to_dict(), sort_keys=True, default=str)) if hasattr(config, "to_dict") else None
    if hf is not None:  # where the files were, not what they hold: a copied cache folder still hits
        hf.pop("_name_or_path", None)
    return {
        "format": FORMAT,
        "model": model,
        "name": lm.name,
        "config": hf,
        "blocks": lm.arch.blocks,
        "dtype": str(_dtype(lm.model)),
        "weights": weights_fingerprint(lm.model),
        "layers": sorted(set(layers)),
        "device": device.type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def model_key(lm: LM, layers: Sequence[int], device: torch.device | str | None = None, model: str = "") -> str:
    """The hex digest naming ``lm``'s folder (the hash of :func:`model_key_parts`)."""
    device = torch.device(device) if device is not None else lm.device
    return _digest(model_key_parts(lm, sorted(set(layers)), device, model))


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def weights_fingerprint(model: nn.Module, sample: int = SAMPLE) -> str:
    """Hash of every base parameter's name, shape, dtype and ``sample`` evenly spaced elements (exact
    bytes, read on the parameter's device: no full copy of a large model). LoRA parameters are left out
    and PEFT's ``.base_layer`` folded back into the name, so an attached adapter does not change it.

    A sample, not every byte: fine-tuning, merging an adapter, re-initialising or quantising a model
    changes essentially every element of the tensors it touches; an edit confined to unsampled elements
    would go unseen (Qwen2.5-0.5B's 4864 x 896 MLP matrices are sampled about once per row)."""
    h = hashlib.sha256()
    base = {name.replace(".base_layer", ""): p for name, p in model.named_parameters() if "lora_" not in name}
    for name, p in sorted(base.items(), key=lambda x: x[0]):
        flat = p.detach().reshape(-1)
        n = flat.numel()
        k = min(n, sample)
        idx = torch.arange(k, device=flat.device, dtype=torch.long) * n // max(k, 1)
        values = flat[idx].contiguous().cpu().view(torch.uint8).numpy()
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}|".encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def example_key(input_ids: Sequence[int]) -> str:
    """Hex digest of the token ids (int64 bytes)."""
    return hashlib.sha256(np.asarray(list(input_ids), dtype=np.int64).tobytes()).hexdigest()[:40]


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype
