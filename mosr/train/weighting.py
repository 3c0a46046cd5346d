"""Overlap-Aware Loss Weighting (docs/method.md §4).

For each malicious training prompt ``x_i`` and a pseudo-malicious bank ``P`` (benign prompts that
look harmful, disjoint from every evaluation set):

* ``s_i = mean(top-k_{p∈P} cos(r(x_i) − μ, r(p) − μ))`` with ``r`` = :func:`mosr.capture.representation`
  (post-instruction hidden state averaged over the target layers) and ``μ`` the mean representation
  of benign ∪ malicious training prompts (``center=False`` drops ``μ``);
* ``mode="linear"``: ``w_i = clip(1 − λ·(s_i − s_min)/(s_max − s_min), w_min, 1)``, then rescaled to
  ``mean_i w_i = 1``; ``mode="softmax"``: ``w_i = N·softmax(−s/τ)_i``.

Samples that overlap the bank more are erased less. Weights are computed once with the frozen model
before training and saved with the run (``weights.json`` + ``weights.safetensors``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mosr.capture import default_target_layers, representation, resolve_layers
from mosr.config import Config
from mosr.data import PromptSet, overlap
from mosr.errors import ConfigError, DataError, MosrError
from mosr.io import load_tensors, read_json, save_tensors, write_json
from mosr.models import LM

log = logging.getLogger(__name__)

MODES = ("linear", "softmax")
WEIGHTS_JSON = "weights.json"
WEIGHTS_TENSORS = "weights.safetensors"


@dataclass
class WeightConfig(Config):
    """Overlap-aware weighting options (defaults = docs/method.md §4)."""

    #: neighbours in the bank averaged into s_i
    k: int = 8
    #: strength λ of the linear map
    lam: float = 0.7
    #: lower clip of the linear map (before the rescale to mean 1)
    w_min: float = 0.1
    #: "linear" (clip map) or "softmax" (N·softmax(−s/τ))
    mode: str = "linear"
    #: temperature τ of the softmax variant
    tau: float = 0.1
    #: layers whose post-instruction states are averaged into r(x); None = default_target_layers
    layers: list[int] | None = None
    #: subtract μ (mean of benign ∪ malicious representations) before the cosine
    center: bool = True
    #: capture batch size
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"WeightConfig.k must be ≥ 1, got {self.k}")
        if self.mode not in MODES:
            raise ConfigError(f"WeightConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.lam < 0:
            raise ConfigError(f"WeightConfig.lam must be ≥ 0, got {self.lam}")
        if not 0 < self.w_min <= 1:
            raise ConfigError(f"WeightConfig.w_min must be in (0, 1], got {self.w_min}")
        if self.tau <= 0:
            raise ConfigError(f"WeightConfig.tau must be > 0, got {self.tau}")
        if self.batch_size < 1:
            raise ConfigError(f"WeightConfig.batch_size must be ≥ 1, got {self.batch_size}")


def overlap_similarity(mal: Tensor, bank: Tensor, mu: Tensor | None, k: int) -> Tensor:
    """``s_i`` = mean of the top-k centred cosines of each malicious row to the bank rows.

    Args:
        mal: ``Tensor[n d_model]`` malicious representations.
        bank: ``Tensor[m d_model]`` pseudo-malicious bank representations.
        mu: ``Tensor[d_model]`` centre subtracted from both, or None.
        k: neighbours averaged (clipped to ``m``).

    Returns:
        ``Tensor[n]``.
    """
    return _topk_similarity(mal, bank, mu, k)[0]


def _topk_similarity(mal: Tensor, bank: Tensor, mu: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    """``(s: Tensor[n], neighbours: LongTensor[n k])`` (bank row indices, most similar first)."""
    if mal.dim() != 2 or bank.dim() != 2 or mal.shape[1] != bank.shape[1]:
        raise MosrError(
            f"expected (n d_model) and (m d_model) representations, got {tuple(mal.shape)} and {tuple(bank.shape)}"
        )
    if len(mal) == 0 or len(bank) == 0:
        raise DataError(f"empty representations: {len(mal)} malicious, {len(bank)} bank prompts")
    if k < 1:
        raise MosrError(f"k must be ≥ 1, got {k}")
    if k > len(bank):
        log.warning("k=%d exceeds the bank size %d; using k=%d", k, len(bank), len(bank))
        k = len(bank)
    a, b = mal.float(), bank.float()
    if mu is not None:
        a, b = a - mu.float(), b - mu.float()
    sims = F.normalize(a, dim=-1, eps=1e-8) @ F.normalize(b, dim=-1, eps=1e-8).T  # n m
    top = sims.topk(k, dim=1)
    return top.values.mean(1), top.indices


def overlap_weights(s: Tensor, cfg: WeightConfig) -> Tensor:
    """Map similarities ``Tensor[n]`` to weights ``Tensor[n]`` with mean 1 (see module docstring).

    Constant similarities (or a single sample) give all-ones weights.
    """
    s = s.double()
    n = s.numel()
    if n == 0:
        raise DataError("no similarities to weight")
    if cfg.mode == "softmax":
        w = torch.softmax(-s / cfg.tau, dim=0) * n
    else:
        span = s.max() - s.min()
        if float(span) <= 1e-12:
            return torch.ones(n, dtype=torch.float32)
        w = (1.0 - cfg.lam * (s - s.min()) / span).clamp(cfg.w_min, 1.0)
        w = w / w.mean()
    return w.float()


@dataclass
class WeightResult:
    """Per-sample similarity and weight of the malicious training prompts, in input order."""

    ids: list[str]
    similarity: Tensor  # n
    weights: Tensor  # n
    config: WeightConfig
    layers: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    #: bank ids of the k nearest neighbours of each sample (most similar first)
    neighbours: list[list[str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.similarity) == len(self.weights)):
            raise MosrError(
                f"WeightResult: {len(self.ids)} ids, {len(self.similarity)} similarities and "
                f"{len(self.weights)} weights"
            )
        if len(set(self.ids)) != len(self.ids):
            raise MosrError("WeightResult: duplicate sample ids")
        self._index = {i: j for j, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def weight(self, sample_id: str) -> float:
        """The weight of one malicious sample by id."""
        if sample_id not in self._index:
            raise MosrError(
                f"no overlap weight for sample {sample_id!r}: the weights were computed for "
                f"{len(self.ids)} other prompts (recompute them for this training set)"
            )
        return float(self.weights[self._index[sample_id]])

    def as_dict(self) -> dict[str, float]:
        """``id -> weight``."""
        return dict(zip(self.ids, self.weights.tolist()))

    def ranked(self) -> list[dict[str, Any]]:
        """Rows sorted by similarity, most overlapping first."""
        rows = self.rows()
        return sorted(rows, key=lambda r: -r["similarity"])

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "id": i,
                "prompt": self.prompts[j] if self.prompts else None,
                "similarity": float(self.similarity[j]),
                "weight": float(self.weights[j]),
                "neighbours": self.neighbours[j] if self.neighbours else [],
            }
            for j, i in enumerate(self.ids)
        ]

    def summary(self) -> dict[str, float]:
        return {
            "n": len(self),
            "similarity_min": float(self.similarity.min()),
            "similarity_max": float(self.similarity.max()),
            "similarity_mean": float(self.similarity.mean()),
            "weight_min": float(self.weights.min()),
            "weight_max": float(self.weights.max()),
            "weight_mean": float(self.weights.mean()),
        }

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``weights.json`` (config, layers, summary, rows) and ``weights.safetensors`` atomically."""
        run_dir = Path(run_dir)
        save_tensors(run_dir / WEIGHTS_TENSORS, {"similarity": self.similarity, "weights": self.weights})
        write_json(
            run_dir / WEIGHTS_JSON,
            {
                "config": self.config.to_dict(),
                "layers": self.layers,
                "summary": self.summary(),
                "info": self.info,
                "rows": self.rows(),
            },
        )
        return run_dir / WEIGHTS_JSON

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> WeightResult:
        """Read a result written by :meth:`save` (tensors from the safetensors file, exact)."""
        run_dir = Path(run_dir)
        jpath, tpath = run_dir / WEIGHTS_JSON, run_dir / WEIGHTS_TENSORS
        for p in (jpath, tpath):
            if not p.is_file():
                raise DataError(f"overlap weights not found: {p} (run compute_weights first)")
        meta = read_json(jpath)
        tensors = load_tensors(tpath)
        rows = meta["rows"]
        return cls(
            ids=[r["id"] for r in rows],
            similarity=tensors["similarity"],
            weights=tensors["weights"],
            config=WeightConfig.from_dict(meta["config"]),
            layers=list(meta.get("layers", [])),
            prompts=[r.get("prompt") or "" for r in rows],
            neighbours=[r.get("neighbours", []) for r in rows],
            info=meta.get("info", {}),
        )


def compute_weights(
    lm: LM,
    malicious: PromptSet,
    bank: PromptSet,
    benign: PromptSet,
    cfg: WeightConfig | None = None,
    progress: bool = True,
) -> WeightResult:
    """Overlap-aware weights of ``malicious`` w.r.t. ``bank`` with the frozen model ``lm``.

    ``μ`` is the mean representation of ``benign`` ∪ ``malicious`` (not used when ``cfg.center`` is
    False, in which case ``benign`` may be empty). Representations come from
    :func:`mosr.capture.representation` at ``cfg.layers`` (default: :func:`~mosr.capture.default_target_layers`).
    """
    cfg = cfg or WeightConfig()
    if not len(malicious):
        raise DataError("compute_weights: the malicious (harmful training) set is empty")
    if not len(bank):
        raise DataError("compute_weights: the pseudo-malicious bank is empty")
    if cfg.center and not len(benign):
        raise DataError("compute_weights: the benign set is empty (needed for the centre μ; or set center=False)")
    layers = resolve_layers(lm, cfg.layers if cfg.layers is not None else default_target_layers(lm.n_layers))
    rep = {}
    for name, ps in (("malicious", malicious), ("bank", bank), ("benign", benign)):
        if name == "benign" and not cfg.center:
            continue
        if progress:
            log.info("representations of %d %s prompts at layers %s", len(ps), name, layers)
        rep[name] = representation(lm, ps, layers, reduce="mean", batch_size=cfg.batch_size, progress=progress)
    mu = torch.cat([rep["benign"], rep["malicious"]]).mean(0) if cfg.center else None
    s, idx = _topk_similarity(rep["malicious"], rep["bank"], mu, cfg.k)
    w = overlap_weights(s, cfg)
    bank_ids = bank.ids
    neighbours = [[bank_ids[j] for j in row] for row in idx.tolist()]
    info = {
        "model": lm.name,
        "n_malicious": len(malicious),
        "n_bank": len(bank),
        "n_benign": len(benign),
        "malicious_set": malicious.name,
        "bank_set": bank.name,
        "benign_set": benign.name,
    }
    return WeightResult(
        ids=malicious.ids,
        similarity=s,
        weights=w,
        config=dataclasses.replace(cfg, layers=layers),
        layers=layers,
        prompts=malicious.prompts,
        neighbours=neighbours,
        info=info,
    )


def check_disjoint(bank: PromptSet, eval_sets: Sequence[PromptSet], role: str = "pseudo-malicious bank") -> None:
    """Raise :class:`DataError` if the training set ``bank`` (its ``role`` in training, for the message:
    the pseudo-malicious bank, a retain set) shares any prompt (normalised text) with an evaluation set."""
    problems = []
    for ev in eval_sets:
        shared = overlap(bank, ev)
        if shared:
            examples = "; ".join(repr(p[:80]) for p in shared[:3])
            problems.append(f"{len(shared)} prompt(s) shared with evaluation set {ev.name!r} (e.g. {examples})")
    if problems:
        raise DataError(
            f"the {role} {bank.name!r} is not disjoint from the evaluation sets: "
            + " | ".join(problems)
            + f". Remove these prompts from the {role} (training on evaluation "
            "prompts would inflate the over-refusal results)."
        )
