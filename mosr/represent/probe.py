"""Per-layer linear probes that separate benign from harmful prompt representations.

One logistic-regression probe per layer on standardised features, with the inverse regularisation
strength ``C`` chosen per layer by stratified cross-validation (log-loss). Fit once on
``Tensor[prompt layer d_model]`` from :func:`mosr.capture.capture`, then score any prompt set:

    acts = mosr.capture(lm, prompts, layers="all")            # prompt layer d_model
    probes = ProbeSet.fit(acts, labels)                         # labels: "harmful" / "benign" (or 1 / 0)
    probes.proba(acts)                                          # prompt layer, P(harmful)
    probes.boundary_score(acts, layer=12)                       # per-prompt probability, logit, margin

:func:`evaluate_probes` holds out a stratified test split and reports accuracy (Wilson 95% CI) and
AUROC (DeLong 95% CI, :mod:`mosr.stats`) per layer and the best layer (chosen on the training folds, not on the test
split). Probes save to ``probes.safetensors`` + ``probes.json`` (no pickle).

Positive class = harmful ("malicious"); probability > threshold (0.5) means "classified malicious".
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from mosr.config import Config
from mosr.errors import ConfigError, DataError, LayerError, MosrError
from mosr.io import load_tensors, read_json, save_tensors, write_json
from mosr.stats import auroc_ci, wilson

PROBE_FORMAT = "mosr-probes-v1"


@dataclass
class ProbeConfig(Config):
    """How probes are fitted and evaluated."""

    #: grid of inverse L2 strengths searched by cross-validation (per layer)
    Cs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    #: cross-validation folds used to choose C (each class needs at least this many prompts)
    cv: int = 3
    #: share of benign+harmful prompts held out for test accuracy / AUROC
    test_size: float = 0.3
    #: probability above which a prompt counts as classified malicious
    threshold: float = 0.5
    seed: int = 0
    max_iter: int = 1000
    #: parallel layer fits (joblib); 1 = serial
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if not self.Cs or any(c <= 0 for c in self.Cs):
            raise ConfigError(f"ProbeConfig.Cs must be non-empty positive numbers, got {self.Cs}")
        if self.cv < 2:
            raise ConfigError(f"ProbeConfig.cv must be ≥ 2 folds, got {self.cv}")
        if not 0.0 < self.test_size < 1.0:
            raise ConfigError(f"ProbeConfig.test_size must be in (0, 1), got {self.test_size}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"ProbeConfig.threshold must be in (0, 1), got {self.threshold}")


# --- labels and splits -----------------------------------------------------------------------------


def binary_labels(labels: Sequence[str] | Sequence[int] | Sequence[bool] | np.ndarray | Tensor) -> np.ndarray:
    """Map labels to 0/1 (1 = harmful). Strings must be ``harmful`` or ``benign``."""
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    items = list(labels)
    if items and all(isinstance(v, str) for v in items):
        bad = sorted({v for v in items if v not in ("harmful", "benign")})
        if bad:
            raise DataError(
                f"probe labels must be 'harmful' or 'benign' (pseudo-harmful prompts are only scored, "
                f"never trained on); got {bad}"
            )
        return np.array([v == "harmful" for v in items], dtype=np.int64)
    arr = np.asarray(items)
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise DataError(f"numeric probe labels must be 0 (benign) or 1 (harmful), got values {np.unique(arr)[:5]}")
    return arr.astype(np.int64)


def check_classes(y: np.ndarray, cv: int) -> None:
    """Both classes present and each at least ``cv`` times (else a :class:`DataError` naming the counts)."""
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        have = "harmful" if n_pos else "benign"
        raise DataError(f"probes need both benign and harmful prompts; got only {have} ({len(y)} prompts)")
    if min(n_pos, n_neg) < cv:
        raise DataError(
            f"too few prompts for {cv}-fold cross-validation: {n_pos} harmful and {n_neg} benign; "
            f"each class needs at least {cv} (lower ProbeConfig.cv or add prompts)"
        )


def split_indices(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train / test row indices (sorted)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        train, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
    except ValueError as e:
        raise DataError(f"cannot make a stratified {test_size:.0%} test split of {len(y)} prompts: {e}") from None
    return np.sort(train), np.sort(test)


def _check_acts(acts: Tensor, what: str = "acts") -> Tensor:
    if not isinstance(acts, Tensor) or acts.ndim != 3:
        shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
        raise MosrError(f"{what} must be a Tensor[prompt layer d_model] (from mosr.capture), got {shape}")
    return acts


# --- the probes ------------------------------------------------------------------------------------


@dataclass
class BoundaryScore:
    """Per-prompt distance to a probe's decision boundary at one layer (all shape ``prompt``)."""

    layer: int
    #: P(harmful)
    prob: Tensor
    #: log-odds ``w·z + b`` (standardised features z)
    logit: Tensor
    #: signed Euclidean distance to the hyperplane in standardised space, ``logit / |w|``
    margin: Tensor

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "prob": self.prob.tolist(),
            "logit": self.logit.tolist(),
            "margin": self.margin.tolist(),
        }


def _fit_layer(x: np.ndarray, y: np.ndarray, config: ProbeConfig) -> dict[str, Any]:
    """Standardise, choose C by stratified CV, refit on all rows. ``x``: prompt d_model."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    x = x.astype(np.float64)
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-8] = 1.0
    z = (x - mean) / scale
    folds = StratifiedKFold(n_splits=config.cv, shuffle=True, random_state=config.seed)
    with warnings.catch_warnings(), threadpool_limits(1):  # one BLAS thread per fit: parallelism is per layer
        warnings.simplefilter("ignore")  # convergence notes at tiny C / future-default notices
        model = LogisticRegressionCV(
            Cs=list(config.Cs),
            cv=folds,
            l1_ratios=(0.0,),
            scoring="neg_log_loss",
            max_iter=config.max_iter,
            use_legacy_attributes=False,
        ).fit(z, y)
    c_index = int(np.argmin(np.abs(np.asarray(model.Cs_) - model.C_)))
    cv_score = float(np.asarray(model.scores_).reshape(config.cv, -1)[:, c_index].mean())
    return {
        "mean": mean,
        "scale": scale,
        "coef": model.coef_[0],
        "intercept": float(model.intercept_[0]),
        "C": float(model.C_),
        "cv_log_loss": -cv_score,
    }


@dataclass
class ProbeSet:
    """One fitted linear probe per layer. Tensors: ``mean, scale, coef`` are ``layer d_model``."""

    layers: list[int]
    mean: Tensor
    scale: Tensor
    coef: Tensor
    intercept: Tensor  # layer
    C: Tensor  # layer
    #: mean cross-validated log-loss of the chosen C on the fitting data (lower is better)
    cv_log_loss: Tensor  # layer
    config: ProbeConfig = field(default_factory=ProbeConfig)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        acts: Tensor,
        labels: Sequence[str] | Sequence[int] | np.ndarray | Tensor,
        layers: Sequence[int] | None = None,
        config: ProbeConfig | None = None,
        progress: bool = True,
    ) -> ProbeSet:
        """Fit one probe per layer.

        Args:
            acts: ``Tensor[prompt layer d_model]``; its layer axis holds the model layers ``layers``
                (default ``0..layer-1``, i.e. ``capture(..., layers="all")``).
            labels: per prompt ``"harmful"``/``"benign"`` or 1/0.
            layers: the model layer id of each slice of the layer axis.
        """
        config = config or ProbeConfig()
        acts = _check_acts(acts)
        y = binary_labels(labels)
        if len(y) != acts.shape[0]:
            raise DataError(f"{acts.shape[0]} prompts in acts but {len(y)} labels")
        check_classes(y, config.cv)
        layer_ids = list(range(acts.shape[1])) if layers is None else [int(v) for v in layers]
        if len(layer_ids) != acts.shape[1]:
            raise LayerError(f"acts has {acts.shape[1]} layers but {len(layer_ids)} layer ids were given")
        x = acts.detach().to("cpu", torch.float64).numpy()
        t0 = time.perf_counter()
        jobs = range(len(layer_ids))
        if config.n_jobs != 1:
            from joblib import Parallel, delayed

            fits = Parallel(n_jobs=config.n_jobs)(delayed(_fit_layer)(x[:, j], y, config) for j in jobs)
        else:
            fits = [
                _fit_layer(x[:, j], y, config) for j in tqdm(jobs, desc="probes", unit="layer", disable=not progress)
            ]

        def stack(key: str, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.tensor(np.stack([f[key] for f in fits]), dtype=dtype)

        return cls(
            layers=layer_ids,
            mean=stack("mean"),
            scale=stack("scale"),
            coef=stack("coef"),
            intercept=stack("intercept"),
            C=stack("C", torch.float64),
            cv_log_loss=stack("cv_log_loss", torch.float64),
            config=config,
            meta={
                "n_prompts": int(len(y)),
                "n_harmful": int(y.sum()),
                "d_model": int(acts.shape[2]),
                "fit_seconds": round(time.perf_counter() - t0, 3),
            },
        )

    # -- scoring --

    def slot(self, layer: int) -> int:
        """Index of model layer ``layer`` in this set's layer axis (negative counts from the end)."""
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
            raise LayerError(f"layer must be an int, got {layer!r}")
        if layer in self.layers:
            return self.layers.index(int(layer))
        if -len(self.layers) <= layer < 0 and self.layers == list(range(len(self.layers))):
            return len(self.layers) + int(layer)
        raise LayerError(f"layer {layer} out of range: these probes cover layers {_span(self.layers)}")

    @property
    def best_layer(self) -> int:
        """Layer with the lowest cross-validated log-loss on the fitting data (ties: the earliest)."""
        return self.layers[int(torch.argmin(self.cv_log_loss))]

    def _layer_view(self, acts: Tensor, layer: int | None) -> tuple[Tensor, list[int]]:
        """acts as ``prompt layer d_model`` restricted to ``layer`` (or all), with the slots used."""
        if acts.ndim == 2:
            if layer is None:
                raise LayerError("a Tensor[prompt d_model] needs layer= (the model layer it was taken from)")
            return acts.unsqueeze(1), [self.slot(layer)]
        _check_acts(acts)
        if acts.shape[1] != len(self.layers):
            raise LayerError(
                f"acts has {acts.shape[1]} layers but these probes cover {len(self.layers)} "
                f"({_span(self.layers)}); capture the same layers"
            )
        slots = list(range(len(self.layers))) if layer is None else [self.slot(layer)]
        return acts[:, slots], slots

    def logits(self, acts: Tensor, layer: int | None = None) -> Tensor:
        """Log-odds of harmful: ``prompt layer`` (all layers) or ``prompt`` when ``layer`` is given."""
        view, slots = self._layer_view(acts, layer)
        if view.shape[-1] != self.coef.shape[1]:
            raise MosrError(f"acts have d_model {view.shape[-1]}, probes were fitted on {self.coef.shape[1]}")
        z = (view.float() - self.mean[slots]) / self.scale[slots]
        out = torch.einsum("pld,ld->pl", z, self.coef[slots]) + self.intercept[slots]
        return out[:, 0] if layer is not None else out

    def proba(self, acts: Tensor, layer: int | None = None) -> Tensor:
        """P(harmful): ``prompt layer`` or ``prompt`` when ``layer`` is given."""
        return torch.sigmoid(self.logits(acts, layer))

    def predict(self, acts: Tensor, layer: int | None = None) -> Tensor:
        """Classified malicious (bool): probability above ``config.threshold``."""
        return self.proba(acts, layer) > self.config.threshold

    def fraction_malicious(self, acts: Tensor) -> dict[int, float]:
        """Share of prompts classified malicious, keyed by model layer (``acts``: ``prompt layer d_model``
        over :attr:`layers`)."""
        share = self.predict(acts).float().mean(0)  # layer slot
        return {layer: float(share[j]) for j, layer in enumerate(self.layers)}

    def boundary_score(self, acts: Tensor, layer: int | None = None) -> BoundaryScore:
        """Per-prompt closeness to the benign/harmful boundary at ``layer`` (default: :attr:`best_layer`).

        ``acts``: ``Tensor[prompt layer d_model]`` (same layers as the probes) or the representation
        at that layer, ``Tensor[prompt d_model]``.
        """
        layer = self.best_layer if layer is None else layer
        logit = self.logits(acts, layer)
        norm = self.coef[self.slot(layer)].norm().clamp_min(1e-12)
        return BoundaryScore(
            layer=self.layers[self.slot(layer)], prob=torch.sigmoid(logit), logit=logit, margin=logit / norm
        )

    # -- persistence (no pickle) --

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<path>/probes.safetensors`` (weights, scaler stats) and ``<path>/probes.json``."""
        path = Path(path)
        save_tensors(
            path / "probes.safetensors",
            {
                "mean": self.mean,
                "scale": self.scale,
                "coef": self.coef,
                "intercept": self.intercept,
                "C": self.C,
                "cv_log_loss": self.cv_log_loss,
                "layers": torch.tensor(self.layers, dtype=torch.int64),
            },
            metadata={"format": PROBE_FORMAT},
        )
        write_json(
            path / "probes.json",
            {
                "format": PROBE_FORMAT,
                "layers": self.layers,
                "positive": "harmful",
                "best_layer": self.best_layer,
                "config": self.config.to_dict(),
                "meta": self.meta,
            },
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ProbeSet:
        """Read probes written by :meth:`save`."""
        path = Path(path)
        weights, info = path / "probes.safetensors", path / "probes.json"
        if not weights.is_file() or not info.is_file():
            raise DataError(f"{path} holds no saved probes (expected probes.safetensors and probes.json)")
        try:
            meta = read_json(info)
        except json.JSONDecodeError as e:
            raise DataError(f"{info}: not valid JSON: {e}") from None
        if meta.get("format") != PROBE_FORMAT:
            raise DataError(f"{info}: unknown probe format {meta.get('format')!r} (expected {PROBE_FORMAT})")
        t = load_tensors(weights)
        missing = {"mean", "scale", "coef", "intercept", "C", "cv_log_loss", "layers"} - set(t)
        if missing:
            raise DataError(f"{weights}: missing tensors {sorted(missing)}")
        return cls(
            layers=[int(v) for v in t["layers"].tolist()],
            mean=t["mean"],
            scale=t["scale"],
            coef=t["coef"],
            intercept=t["intercept"],
            C=t["C"],
            cv_log_loss=t["cv_log_loss"],
            config=ProbeConfig.from_dict(meta["config"]),
            meta=meta.get("meta", {}),
        )


def _span(layers: list[int]) -> str:
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return str(layers)


# --- held-out evaluation ---------------------------------------------------------------------------


@dataclass
class LayerMetrics:
    """Held-out metrics of one layer's probe."""

    layer: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    auroc: float
    auroc_ci: tuple[float, float]
    C: float
    cv_log_loss: float


@dataclass
class ProbeEvaluation:
    """Probes fitted on a stratified training split and their test metrics per layer."""

    probes: ProbeSet
    metrics: list[LayerMetrics]
    train_index: np.ndarray
    test_index: np.ndarray
    best_layer: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_layer": self.best_layer,
            "best_layer_rule": "lowest cross-validated log-loss on the train split",
            "n_train": int(len(self.train_index)),
            "n_test": int(len(self.test_index)),
            "layers": [vars(m) for m in self.metrics],
        }

    def metric(self, name: str) -> np.ndarray:
        return np.array([getattr(m, name) for m in self.metrics], dtype=np.float64)


def evaluate_probes(
    acts: Tensor,
    labels: Sequence[str] | Sequence[int] | np.ndarray | Tensor,
    layers: Sequence[int] | None = None,
    config: ProbeConfig | None = None,
    progress: bool = True,
) -> ProbeEvaluation:
    """Fit probes on a stratified train split and report test accuracy / AUROC per layer with 95% CIs.

    ``acts``: ``Tensor[prompt layer d_model]`` of benign and harmful prompts. The best layer is picked
    by cross-validated log-loss on the training split, so the test numbers stay unbiased.
    """
    config = config or ProbeConfig()
    acts = _check_acts(acts)
    y = binary_labels(labels)
    if len(y) != acts.shape[0]:
        raise DataError(f"{acts.shape[0]} prompts in acts but {len(y)} labels")
    check_classes(y, 2)
    train, test = split_indices(y, config.test_size, config.seed)
    check_classes(y[train], config.cv)
    probes = ProbeSet.fit(acts[train], y[train], layers=layers, config=config, progress=progress)
    probs = probes.proba(acts[test]).numpy()  # test layer
    yt = y[test].astype(bool)
    metrics = []
    for j, layer in enumerate(probes.layers):
        pred = probs[:, j] > config.threshold
        correct = int((pred == yt).sum())
        auc, lo, hi = auroc_ci(probs[:, j], yt)
        metrics.append(
            LayerMetrics(
                layer=layer,
                accuracy=correct / len(yt),
                accuracy_ci=wilson(correct, len(yt)),
                auroc=auc,
                auroc_ci=(lo, hi),
                C=float(probes.C[j]),
                cv_log_loss=float(probes.cv_log_loss[j]),
            )
        )
    return ProbeEvaluation(
        probes=probes, metrics=metrics, train_index=train, test_index=test, best_layer=probes.best_layer
    )
