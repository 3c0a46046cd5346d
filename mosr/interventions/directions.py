"""Directions in the residual stream: differences in means, partial orthogonalisation, direction folders.

* :func:`post_instruction_positions`: the chat template's tokens after the user's text (the
  end-of-instruction tokens of refusal_direction, ``eoi_toks``), as offsets from the last prompt token.
* :func:`mean_diff`: ``mean(a) − mean(b)`` of the hidden states of two prompt sets at every (position,
  layer), from :func:`mosr.capture.capture`: refusal_direction's candidate directions.
* :func:`partial_orthogonalize`: ``v ← v − λ (v·r̂) r̂``, the false-refusal vector of Wang et al.
  (ICLR 2025) before ablation.
* :class:`Direction`: one chosen vector with where it came from, saved to / loaded from a folder
  (``direction.safetensors`` + ``direction.json``) that ``mosr eval --ablate / --steer`` reads.

Layers follow the package's convention (layer ``i`` = the stream after block ``i``); refusal_direction
numbers the stream before block ``l`` (``resid_pre``), so its layer ``l`` is this package's ``l − 1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mosr.capture import Layers, capture, resolve_layers
from mosr.chat import format_chat
from mosr.data import PromptSet, as_prompt_list
from mosr.errors import MosrError
from mosr.io import load_tensors, read_json, save_tensors, write_json
from mosr.models import LM
from mosr.types import Float

DIRECTION_TENSORS = "direction.safetensors"
DIRECTION_JSON = "direction.json"
KINDS = ("refusal", "false-refusal")


def post_instruction_positions(lm: LM, system: str | None = None) -> list[int]:
    """Offsets (``-n .. -1``, from the last prompt token) of the tokens the chat template puts after the
    user's text: the common token suffix of two formatted prompts (``<|im_end|>\\n<|im_start|>assistant\\n``
    for ChatML). Position ``-1`` is the last prompt token, :func:`mosr.capture.capture`'s ``"last"``."""
    a, b = (
        list(ids)
        for ids in lm.tokenizer(
            format_chat(lm.tokenizer, ["A", "Z"], system=system), add_special_tokens=False
        ).input_ids
    )
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    if n == 0:
        raise MosrError(
            f"{lm.name}: the chat template puts no token after the user's text; give positions explicitly (e.g. [-1])"
        )
    return list(range(-n, 0))


@dataclass
class Candidates:
    """Candidate directions ``vectors[i, j]`` = ``mean(a) − mean(b)`` at ``positions[i]`` (offset from the last
    prompt token) and ``layers[j]``. Shape of ``vectors``: position layer d_model (float32, CPU)."""

    vectors: Float[Tensor, "position layer d_model"]
    positions: list[int]
    layers: list[int]

    def at(self, position: int, layer: int) -> Float[Tensor, " d_model"]:
        """The candidate of one (position, layer)."""
        if position not in self.positions or layer not in self.layers:
            raise MosrError(
                f"no candidate at position {position}, layer {layer}: positions {self.positions}, layers {self.layers}"
            )
        return self.vectors[self.positions.index(position), self.layers.index(layer)]


@torch.inference_mode()
def mean_diff(
    lm: LM,
    prompts_a: str | list[str] | PromptSet,
    prompts_b: str | list[str] | PromptSet,
    layers: Layers = "all",
    positions: list[int] | None = None,
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = False,
) -> Candidates:
    """Difference in means of the hidden states of ``prompts_a`` and ``prompts_b`` per (position, layer).

    Args:
        layers: ``"all"``, an int or a list (layer ``i`` = the stream after block ``i``).
        positions: offsets from the last prompt token (``-1`` = last); None = every post-instruction
            token (:func:`post_instruction_positions`), as refusal_direction does.

    The states come from :func:`mosr.capture.capture` (chat template, ``position="all"``) in chunks of
    ``batch_size`` prompts, one forward pass per chunk for every position at once; means accumulate in
    float64. Returns :class:`Candidates` (``vectors``: position layer d_model, float32).
    """
    layer_ids = resolve_layers(lm, layers)
    offsets = list(positions) if positions is not None else post_instruction_positions(lm, system)
    bad = [p for p in offsets if not isinstance(p, int) or isinstance(p, bool) or p >= 0]
    if bad or not offsets:
        raise MosrError(f"positions must be negative offsets from the last prompt token (-1 = last), got {offsets}")
    means = [
        _mean_states(lm, as_prompt_list(p), layer_ids, offsets, batch_size, system, progress)
        for p in (prompts_a, prompts_b)
    ]
    return Candidates((means[0] - means[1]).float(), offsets, layer_ids)


def _mean_states(
    lm: LM,
    prompts: list[str],
    layers: list[int],
    offsets: list[int],
    batch_size: int,
    system: str | None,
    progress: bool,
) -> Float[Tensor, "position layer d_model"]:
    total = torch.zeros(len(offsets), len(layers), lm.d_model, dtype=torch.float64)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        states = capture(
            lm, chunk, layers=layers, position="all", batch_size=batch_size, system=system, progress=progress
        )
        for i, h in enumerate(states):  # layer seq_i d_model
            if h.shape[1] < -min(offsets):
                raise MosrError(f"position {min(offsets)} is outside prompt {start + i} ({h.shape[1]} tokens)")
            total += h[:, offsets].transpose(0, 1).double()
    return total / len(prompts)


def partial_orthogonalize(
    v: Float[Tensor, "*batch d_model"], r: Float[Tensor, "*batch d_model"], lam: float = 1.0
) -> Float[Tensor, "*batch d_model"]:
    """``v − λ (v·r̂) r̂`` over the last axis (broadcast over the leading ones), with ``r̂ = r / ‖r‖``.

    ``λ = 1`` makes ``v`` orthogonal to ``r``, ``λ = 0`` leaves it unchanged. This is the direction of
    Wang et al.'s λ (False-Refusal-Mitigation's ``ortho_refusal_directions``: ``v − λ·proj_r(v)``, the
    false-refusal candidates against the true-refusal candidates of the same position and layer); their
    code then normalises the result, which ablation does anyway (only the direction is ablated)."""
    r_hat = r / r.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return v - lam * (v * r_hat).sum(-1, keepdim=True) * r_hat


@dataclass
class Direction:
    """A chosen direction: ``vector`` (``Tensor[d_model]``, the raw difference in means, not normalised)
    taken at ``layer`` and ``position``; ``info`` holds how it was chosen (scores, baseline, cost, config)."""

    vector: Float[Tensor, " d_model"]
    layer: int
    position: int
    kind: str = "refusal"
    model: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    candidates: Candidates | None = None

    @property
    def unit(self) -> Float[Tensor, " d_model"]:
        return self.vector / self.vector.norm()

    def save(self, out: str | os.PathLike[str]) -> Path:
        """Write ``direction.safetensors`` (``direction``, and ``candidates`` when present) and
        ``direction.json`` into the folder ``out``."""
        out = Path(out)
        tensors = {"direction": self.vector.float()}
        meta: dict[str, Any] = {
            "kind": self.kind,
            "model": self.model,
            "layer": self.layer,
            "position": self.position,
            "norm": float(self.vector.norm()),
        }
        if self.candidates is not None:
            tensors["candidates"] = self.candidates.vectors
            meta |= {"candidate_positions": self.candidates.positions, "candidate_layers": self.candidates.layers}
        save_tensors(out / DIRECTION_TENSORS, tensors)
        write_json(out / DIRECTION_JSON, meta | self.info)
        return out


def load_direction(path: str | os.PathLike[str]) -> Direction:
    """The :class:`Direction` saved in folder ``path`` (by ``mosr direction`` or :meth:`Direction.save`)."""
    path = Path(path)
    if not (path / DIRECTION_TENSORS).is_file() or not (path / DIRECTION_JSON).is_file():
        what = "does not exist" if not path.exists() else f"has no {DIRECTION_TENSORS} / {DIRECTION_JSON}"
        raise MosrError(f"direction folder {path} {what} (write one with `mosr direction`)")
    meta = read_json(path / DIRECTION_JSON)
    tensors = load_tensors(path / DIRECTION_TENSORS)
    if "direction" not in tensors or meta.get("kind") not in KINDS:
        raise MosrError(f"{path} is not a direction folder: no 'direction' tensor or unknown kind {meta.get('kind')!r}")
    cands = None
    if "candidates" in tensors and "candidate_positions" in meta:
        cands = Candidates(tensors["candidates"], list(meta["candidate_positions"]), list(meta["candidate_layers"]))
    known = {"kind", "model", "layer", "position", "norm", "candidate_positions", "candidate_layers"}
    return Direction(
        tensors["direction"],
        int(meta["layer"]),
        int(meta["position"]),
        meta["kind"],
        str(meta.get("model", "")),
        {k: v for k, v in meta.items() if k not in known},
        cands,
    )
