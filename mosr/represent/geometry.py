"""Geometry of benign, harmful and pseudo-harmful representations.

* :func:`fit_pca` / :meth:`PCA.transform`: a 2-D projection fitted on benign + harmful prompts only,
  so pseudo-harmful prompts are placed in the plane that separates the two reference groups.
* :func:`centroid_geometry`: per layer, the distances between group centroids and each group's
  position on the benign→harmful centroid axis, normalised so that the benign centroid is 0 and
  the harmful centroid is 1. A pseudo-harmful group with mean position in (0, 1) lies *between*.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mosr.errors import DataError, MosrError


@dataclass
class PCA:
    """A fitted PCA: ``mean`` (d_model), ``components`` (k d_model), ``explained`` variance ratio (k)."""

    mean: Tensor
    components: Tensor
    explained: Tensor

    def transform(self, x: Tensor) -> Tensor:
        """Project ``x`` (prompt d_model) to ``prompt k``."""
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise MosrError(f"expected Tensor[prompt {self.mean.shape[0]}], got {tuple(x.shape)}")
        return (x.double() - self.mean.double()) @ self.components.double().T


def fit_pca(x: Tensor, k: int = 2) -> PCA:
    """Exact PCA of ``x`` (prompt d_model) via SVD (float64). Component signs are fixed so each
    component's largest-magnitude loading is positive (deterministic plots)."""
    if x.ndim != 2:
        raise MosrError(f"fit_pca expects Tensor[prompt d_model], got {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise DataError(f"PCA needs at least 2 prompts, got {x.shape[0]}")
    k = min(k, x.shape[0], x.shape[1])
    xd = x.double()
    mean = xd.mean(0)
    _, s, vt = torch.linalg.svd(xd - mean, full_matrices=False)
    comps = vt[:k]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True))).squeeze(1)
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs).unsqueeze(1)
    var = s**2
    return PCA(mean=mean, components=comps, explained=(var[:k] / var.sum().clamp_min(1e-30)))


def axis_position(x: Tensor, benign_centroid: Tensor, harmful_centroid: Tensor) -> Tensor:
    """Position of each row of ``x`` (prompt d_model) on the benign→harmful centroid axis:
    0 at the benign centroid, 1 at the harmful centroid. Shape: prompt."""
    axis = (harmful_centroid - benign_centroid).double()
    denom = (axis @ axis).clamp_min(1e-30)
    return ((x.double() - benign_centroid.double()) @ axis) / denom


def centroid_geometry(
    groups: Mapping[str, Tensor], benign: str = "benign", harmful: str = "harmful", layers: list[int] | None = None
) -> dict[str, Any]:
    """Centroid distances and benign→harmful axis positions per layer.

    Args:
        groups: group name -> ``Tensor[prompt layer d_model]``; must contain ``benign`` and ``harmful``.
        layers: model layer id of each slice of the layer axis (default ``0..layer-1``).

    Returns a JSON-ready dict: ``layers``; ``distance[a|b]`` (Euclidean centroid distance per layer)
    and ``distance_normalised[a|b]`` (divided by the benign–harmful distance); ``axis_mean[g]`` /
    ``axis_median[g]`` (position of group g on the benign→harmful axis per layer); ``between[g]``
    (axis_mean strictly between 0 and 1 per layer).
    """
    for need in (benign, harmful):
        if need not in groups or groups[need].shape[0] == 0:
            raise DataError(f"centroid_geometry needs a non-empty {need!r} group; got groups {sorted(groups)}")
    shapes = {name: tuple(x.shape[1:]) for name, x in groups.items()}
    if len(set(shapes.values())) != 1 or any(x.ndim != 3 for x in groups.values()):
        raise MosrError(f"every group must be Tensor[prompt layer d_model] with the same layer/d_model: {shapes}")
    n_layers = groups[benign].shape[1]
    layer_ids = list(range(n_layers)) if layers is None else list(layers)
    centroids = {name: x.double().mean(0) for name, x in groups.items() if x.shape[0]}  # layer d_model
    base = (centroids[harmful] - centroids[benign]).norm(dim=-1).clamp_min(1e-30)  # layer
    names = list(centroids)
    distance, normalised = {}, {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            d = (centroids[a] - centroids[b]).norm(dim=-1)
            distance[f"{a}|{b}"] = d.tolist()
            normalised[f"{a}|{b}"] = (d / base).tolist()
    axis_mean, axis_median, between = {}, {}, {}
    for name, x in groups.items():
        if not x.shape[0]:
            continue
        pos = torch.stack(
            [axis_position(x[:, j], centroids[benign][j], centroids[harmful][j]) for j in range(n_layers)], 1
        )  # prompt layer
        axis_mean[name] = pos.mean(0).tolist()
        axis_median[name] = pos.median(0).values.tolist()
        between[name] = [bool(0.0 < v < 1.0) for v in axis_mean[name]]
    return {
        "layers": layer_ids,
        "distance": distance,
        "distance_normalised": normalised,
        "axis_mean": axis_mean,
        "axis_median": axis_median,
        "between": between,
        "n": {name: int(x.shape[0]) for name, x in groups.items()},
    }


def pca_projection(
    groups: Mapping[str, Tensor], fit_on: tuple[str, ...] = ("benign", "harmful"), k: int = 2
) -> tuple[PCA, dict[str, Tensor]]:
    """Fit a PCA on the ``fit_on`` groups (each ``Tensor[prompt d_model]`` at one layer) and project
    every group. Returns the PCA and ``{group: Tensor[prompt k]}``."""
    missing = [g for g in fit_on if g not in groups]
    if missing:
        raise DataError(f"pca_projection: groups {missing} are missing (have {sorted(groups)})")
    pca = fit_pca(torch.cat([groups[g] for g in fit_on]), k=k)
    return pca, {name: pca.transform(x) for name, x in groups.items()}
