"""Figures of the interventions: the direction candidates' scores (``mosr direction``, from
:func:`mosr.interventions.select.score_candidates` and :func:`~mosr.interventions.select.choose`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from mosr.plots.core import STYLE, save_figure


def plot_scores(
    rows: list[dict[str, Any]],
    baseline: dict[str, float],
    chosen: dict[str, Any] | None,
    stem: str | os.PathLike[str],
    kl_threshold: float | None = None,
    title: str = "direction candidates",
) -> list[Path]:
    """Ablation score, addition score and KL per layer, one line per position, baselines dashed, pruned layers
    shaded, the chosen candidate circled; the PNG and PDF of ``stem``."""
    panels = [
        ("ablation_score", "ablated: refusal log-odds\n(target prompts)"),
        ("kl", "ablated: KL(base ‖ ablated)\n(harmless prompts)"),
    ]
    if any(r.get("addition_score") is not None for r in rows):
        panels.insert(1, ("addition_score", "added: refusal log-odds\n(harmless prompts)"))
    positions = sorted({r["position"] for r in rows})
    pruned_layers = sorted({r["layer"] for r in rows if r["pruned"]})
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.7), squeeze=False)
        for ax, (key, label) in zip(axes[0], panels):
            for p in positions:
                pts = [(r["layer"], r[key]) for r in rows if r["position"] == p and r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=2, lw=1.0, label=f"position {p}")
            if pruned_layers:
                ax.axvspan(pruned_layers[0] - 0.5, pruned_layers[-1] + 0.5, color="0.9", lw=0, label="pruned layers")
            if key in baseline:
                ax.axhline(baseline[key], color="0.3", ls="--", lw=0.8, label="no intervention")
            if key == "kl" and kl_threshold is not None:
                ax.axhline(kl_threshold, color="#d7301f", ls=":", lw=0.8, label=f"KL threshold {kl_threshold}")
            if chosen is not None and chosen.get(key) is not None:
                ax.plot([chosen["layer"]], [chosen[key]], "o", mfc="none", mec="k", ms=7, label="chosen")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("layer (stream after block)")
            ax.set_title(label)
            ax.grid(alpha=0.25, lw=0.5)
        handles, labels = {}, []
        for ax in axes[0]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in handles:
                    handles[lab] = h
                    labels.append(lab)
        fig.legend(
            [handles[lab] for lab in labels],
            labels,
            loc="upper center",
            ncol=min(len(labels), 5),
            frameon=False,
            fontsize=7,
            bbox_to_anchor=(0.5, 0.0),
        )
        fig.suptitle(title)
        fig.tight_layout()
        return save_figure(fig, stem)
