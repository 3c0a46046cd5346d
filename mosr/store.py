"""On-disk ActivationStore: captured representations streamed to safetensors shards.

Layout of a store folder::

    meta.json                 model, layers, position, dtype, d_model, shard_size, ids, labels, categories
    shard-00000.safetensors   {"acts": Tensor[prompt layer d_model]} for prompts [0, shard_size)
    shard-00001.safetensors   ...

Each shard is written atomically, so an interrupted capture resumes by skipping finished shards;
only one shard of activations is in memory at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mosr.capture import Layers, Position, capture, check_position, resolve_layers
from mosr.data import PromptSet
from mosr.errors import DataError, LayerError, MosrError
from mosr.io import read_json, save_tensors, write_json
from mosr.models import LM, _dtype

#: the dtypes a store keeps its states in (torch dtypes by :func:`mosr.models._dtype`, the one name table)
STORE_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")


class ActivationStore:
    """Read access to a store folder written by :func:`capture_to_store`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        meta = self.path / "meta.json"
        if not meta.is_file():
            raise DataError(f"{self.path} is not an activation store (no meta.json)")
        self.meta: dict[str, Any] = read_json(meta)

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    @property
    def ids(self) -> list[str]:
        return list(self.meta["ids"])

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def n_shards(self) -> int:
        return -(-len(self) // int(self.meta["shard_size"]))

    def __len__(self) -> int:
        return len(self.meta["ids"])

    def shard_path(self, k: int) -> Path:
        return self.path / f"shard-{k:05d}.safetensors"

    def missing_shards(self) -> list[int]:
        return [k for k in range(self.n_shards) if not self.shard_path(k).is_file()]

    @property
    def complete(self) -> bool:
        return not self.missing_shards()

    def _slots(self, layers: Sequence[int] | None) -> list[int]:
        if layers is None:
            return list(range(len(self.layers)))
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise LayerError(f"layers {missing} are not in the store (it has {self.layers})")
        return [self.layers.index(layer) for layer in layers]

    def iter_shards(self, layers: Sequence[int] | None = None) -> Iterator[Tensor]:
        """Yield ``Tensor[prompt layer d_model]`` one shard at a time (only the requested layers)."""
        from safetensors import safe_open

        if not self.complete:
            raise DataError(
                f"store {self.path} is incomplete (missing shards {self.missing_shards()}); "
                "re-run the capture to resume it"
            )
        slots = self._slots(layers)
        for k in range(self.n_shards):
            with safe_open(str(self.shard_path(k)), framework="pt") as f:
                acts = f.get_slice("acts")
                yield torch.stack([acts[:, s] for s in slots], dim=1) if layers is not None else f.get_tensor("acts")

    def load(self, layers: Sequence[int] | None = None) -> Tensor:
        """All prompts, the requested layers. Shape: prompt layer d_model."""
        return torch.cat(list(self.iter_shards(layers)), dim=0)


def capture_to_store(
    lm: LM,
    prompts: PromptSet,
    path: str | os.PathLike[str],
    layers: Layers = "all",
    position: Position = "last",
    shard_size: int = 1024,
    batch_size: int = 16,
    dtype: str = "float16",
    chat: bool = True,
    progress: bool = True,
) -> ActivationStore:
    """Capture ``prompts`` into a store at ``path``, resuming if it was interrupted."""
    if position == "all":
        raise MosrError("position='all' gives ragged tensors; the store keeps one vector per prompt and layer")
    check_position(position)
    if dtype not in STORE_DTYPES:
        raise MosrError(f"unknown store dtype {dtype!r}; use one of {sorted(STORE_DTYPES)}")
    if not len(prompts):
        raise DataError("the prompt set is empty")
    layer_ids = resolve_layers(lm, layers)
    meta = {
        "model": lm.name,
        "layers": layer_ids,
        "position": position,
        "dtype": dtype,
        "d_model": lm.d_model,
        "shard_size": shard_size,
        "chat": chat,
        "ids": prompts.ids,
        "labels": prompts.labels,
        "categories": prompts.categories,
        "set": prompts.name,
    }
    path = Path(path)
    if (path / "meta.json").is_file():
        old = read_json(path / "meta.json")
        diff = [k for k in meta if old.get(k) != meta[k]]
        if diff:
            raise MosrError(
                f"{path} holds a store made with different settings ({', '.join(diff)}); "
                "use another folder or delete it"
            )
    else:
        write_json(path / "meta.json", meta)
    store = ActivationStore(path)
    todo = store.missing_shards()
    for k in tqdm(todo, desc=f"store {path.name}", disable=not progress, unit="shard"):
        chunk = prompts[k * shard_size : (k + 1) * shard_size]
        acts = capture(
            lm,
            chunk,
            layers=layer_ids,
            position=position,
            batch_size=batch_size,
            chat=chat,
            dtype=_dtype(dtype),
            progress=False,
        )
        save_tensors(store.shard_path(k), {"acts": acts})  # type: ignore[dict-item]
    return store
