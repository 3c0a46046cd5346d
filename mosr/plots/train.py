"""Figures of training: the overlap-aware erasure weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from mosr.plots.core import GROUP_COLORS, STYLE, save_figure

if TYPE_CHECKING:
    from mosr.train.weighting import WeightResult


def plot_weights(result: WeightResult, stem: str | os.PathLike[str], bins: int = 30) -> list[Path]:
    """Overlap-aware weights: histogram of w_i (left) and similarity s_i vs weight w_i (right).

    ``result`` is a :class:`mosr.train.weighting.WeightResult`; writes ``<stem>.png`` / ``.pdf``.
    """
    s = result.similarity.float().numpy()
    w = result.weights.float().numpy()
    cfg = result.config
    with plt.rc_context(STYLE):
        fig, (ax_h, ax_s) = plt.subplots(1, 2, figsize=(7.0, 2.6))
        ax_h.hist(w, bins=bins, color=GROUP_COLORS["harmful"], alpha=0.85)
        ax_h.axvline(1.0, color="0.4", lw=0.8, ls="--")
        ax_h.set_xlabel("erasure weight $w_i$ (mean 1)")
        ax_h.set_ylabel("malicious samples")
        ax_h.set_title(f"weights (n={len(w)})")
        ax_s.scatter(s, w, s=8, color=GROUP_COLORS["pseudo_harmful"], edgecolor=GROUP_COLORS["harmful"], lw=0.3)
        ax_s.set_xlabel(f"overlap $s_i$ (top-{cfg.k} centred cos to bank)")
        ax_s.set_ylabel("$w_i$")
        detail = f"λ={cfg.lam}, $w_{{min}}$={cfg.w_min}" if cfg.mode == "linear" else f"τ={cfg.tau}"
        ax_s.set_title(f"{cfg.mode} map ({detail}), layers {result.layers}")
        fig.tight_layout()
    return save_figure(fig, stem)
