"""Figures of the representation study: probe accuracy, the share read as malicious, probe
probabilities, PCA, the centroid axis, LogitLens heatmap and token table, refused vs answered."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

from mosr.plots.core import STYLE, group_colors, save_figure


def plot_probe_accuracy(
    layers: list[int],
    accuracy: list[float],
    accuracy_ci: list[tuple[float, float]],
    auroc: list[float],
    auroc_ci: list[tuple[float, float]],
    best_layer: int | None,
    stem: str | os.PathLike[str],
    title: str = "Benign vs harmful probe (held-out)",
    n_test: int | None = None,
) -> list[Path]:
    """Held-out probe accuracy and AUROC per layer with 95% CI bands; the chosen layer marked."""
    import numpy as np

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 2.8))
        for vals, ci, name, color in (
            (accuracy, accuracy_ci, "accuracy (Wilson 95% CI)", "#2b8cbe"),
            (auroc, auroc_ci, "AUROC (DeLong 95% CI)", "#d7301f"),
        ):
            lo, hi = np.array(ci, dtype=float).T
            ax.plot(layers, vals, marker="o", ms=2.5, lw=1.3, color=color, label=name)
            ax.fill_between(layers, lo, hi, color=color, alpha=0.2, lw=0)
        if best_layer is not None:
            ax.axvline(best_layer, color="0.4", ls="--", lw=0.8)
            ax.annotate(
                f"chosen layer {best_layer}",
                (best_layer, 0.02),
                xycoords=("data", "axes fraction"),
                xytext=(3, 0),
                textcoords="offset points",
                fontsize=7,
                color="0.3",
            )
        low = min(0.5, float(np.nanmin(np.array(accuracy_ci, dtype=float))))
        ax.set_ylim(max(0.0, low - 0.03), 1.01)
        ax.set_xlabel("layer")
        ax.set_ylabel("held-out score")
        ax.set_title(title + (f", n={n_test}" if n_test else ""))
        ax.legend(loc="center right", frameon=False)
        ax.grid(alpha=0.25, lw=0.5)
        return save_figure(fig, stem)


def plot_fraction_malicious(
    layers: list[int],
    fractions: dict[str, list[float]],
    stem: str | os.PathLike[str],
    cis: dict[str, list[tuple[float, float]]] | None = None,
    best_layer: int | None = None,
    threshold: float = 0.5,
    n: dict[str, int] | None = None,
) -> list[Path]:
    """Share of each group classified malicious by the per-layer probes (95% CI bands if given)."""
    import numpy as np

    colors = group_colors(list(fractions))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 2.8))
        for name, vals in fractions.items():
            label = f"{name} (n={n[name]})" if n and name in n else name
            ax.plot(layers, vals, marker="o", ms=2.5, lw=1.3, color=colors[name], label=label)
            if cis and name in cis:
                lo, hi = np.array(cis[name], dtype=float).T
                ax.fill_between(layers, lo, hi, color=colors[name], alpha=0.18, lw=0)
        if best_layer is not None:
            ax.axvline(best_layer, color="0.4", ls="--", lw=0.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"classified malicious (p > {threshold:g})")
        ax.set_title("Prompts the benign/harmful probe calls malicious")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False, fontsize=7)
        ax.grid(alpha=0.25, lw=0.5)
        return save_figure(fig, stem)


def plot_probe_distributions(
    probs: dict[str, list[float]], layer: int, stem: str | os.PathLike[str], threshold: float = 0.5
) -> list[Path]:
    """Distribution of probe P(harmful) per group at one layer (violin + jittered points)."""
    import numpy as np

    names = list(probs)
    colors = group_colors(names)
    rng = np.random.default_rng(0)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 2.6))
        data = [np.asarray(probs[k], dtype=float) for k in names]
        parts = ax.violinplot(data, positions=range(len(names)), widths=0.8, showextrema=False, bw_method=0.25)
        for body, name in zip(parts["bodies"], names):  # type: ignore[call-overload]  # a list, in matplotlib's stub a Collection
            body.set_facecolor(colors[name])
            body.set_alpha(0.35)
        for i, (name, vals) in enumerate(zip(names, data)):
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(vals)), vals, s=3, color=colors[name], alpha=0.6, lw=0)
            ax.plot([i - 0.25, i + 0.25], [np.median(vals)] * 2, color="k", lw=1)
        ax.axhline(threshold, color="0.4", ls="--", lw=0.8)
        ax.set_xticks(range(len(names)), [f"{k}\n(n={len(v)})" for k, v in zip(names, data)], fontsize=7)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("probe P(harmful)")
        ax.set_title(f"Probe probabilities at layer {layer}")
        return save_figure(fig, stem)


def plot_pca_scatter(
    coords: dict[str, object], explained: list[float], layer: int, stem: str | os.PathLike[str]
) -> list[Path]:
    """2-D PCA (fitted on benign + harmful) of one layer's representations, one colour per group."""
    import numpy as np

    colors = group_colors(list(coords))
    markers = iter("o^sDvP*X" * 2)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 3.4))
        for name, xy in coords.items():
            xy = np.asarray(xy, dtype=float)
            ax.scatter(
                xy[:, 0],
                xy[:, 1],
                s=7,
                alpha=0.6,
                color=colors[name],
                marker=next(markers),
                lw=0,
                label=f"{name} (n={len(xy)})",
            )
        ax.set_xlabel(f"PC1 ({explained[0]:.0%} var.)")
        ax.set_ylabel(f"PC2 ({explained[1]:.0%} var.)" if len(explained) > 1 else "PC2")
        ax.set_title(f"Layer {layer}: PCA fitted on benign + harmful")
        ax.legend(loc="best", frameon=False, fontsize=7, markerscale=1.8)
        return save_figure(fig, stem)


def plot_centroid_axis(
    layers: list[int], axis_mean: dict[str, list[float]], stem: str | os.PathLike[str]
) -> list[Path]:
    """Mean position of each group on the benign→harmful centroid axis per layer (0 = benign, 1 = harmful)."""
    colors = group_colors(list(axis_mean))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 2.8))
        ax.axhspan(0, 1, color="0.93", lw=0)
        for name, vals in axis_mean.items():
            ax.plot(layers, vals, marker="o", ms=2.5, lw=1.3, color=colors[name], label=name)
        ax.set_xlabel("layer")
        ax.set_ylabel("position on benign→harmful axis")
        ax.set_title("Where groups sit between the centroids")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False, fontsize=7)
        ax.grid(alpha=0.25, lw=0.5)
        return save_figure(fig, stem)


def plot_lens_heatmap(
    layers: list[int], scores: dict[str, list[float]], stem: str | os.PathLike[str], n: dict[str, int] | None = None
) -> list[Path]:
    """LogitLens heatmap: layers × prompt groups of mean (refusal − compliance) next-token mass."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    names = list(scores)
    mat = np.array([scores[k] for k in names], dtype=float).T  # layer group
    lim = max(float(np.abs(mat).max()), 1e-6)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.3 + 0.95 * len(names), 0.5 + 0.16 * len(layers)))
        im = ax.imshow(mat, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), origin="lower")
        ax.set_xticks(
            range(len(names)), [f"{k}\n(n={n[k]})" if n and k in n else k for k in names], fontsize=7, rotation=0
        )
        step = max(1, len(layers) // 10)
        ax.set_yticks(range(0, len(layers), step), [str(layers[i]) for i in range(0, len(layers), step)])
        ax.set_ylabel("layer")
        ax.set_title("LogitLens: refusal − compliance\nopener mass (last prompt token)", fontsize=9)
        cb = fig.colorbar(im, ax=ax, fraction=0.08, pad=0.04)
        cb.ax.tick_params(labelsize=7)
        cb.set_label("mean mass difference", fontsize=7)
        return save_figure(fig, stem)


def _wrap(text: str, width: int, lines: int) -> list[str]:
    import textwrap

    out = textwrap.wrap(text, width)
    return out if len(out) <= lines else out[: lines - 1] + [out[lines - 1][: width - 1] + "…"]


def _token_label(tok: str) -> str:
    text = tok.replace("\n", "\\n").replace("\t", "\\t")
    text = text if text.strip() and text.isprintable() else ascii(tok)
    return text if len(text) <= 10 else text[:9] + "…"


def plot_lens_table(
    examples: list[dict[str, object]],
    layers: list[int],
    stem: str | os.PathLike[str],
    show_layers: list[int] | None = None,
    k: int = 3,
) -> list[Path]:
    """Paper-Fig.-5-style table: top-k LogitLens tokens per layer (rows) for a few prompts (columns);
    cells coloured by refusal − compliance mass.

    ``examples``: dicts with ``title``, ``prompt``, ``tokens`` (per layer, a list of decoded strings)
    and ``score`` (per layer float).
    """
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    rows = show_layers if show_layers is not None else layers
    idx = [layers.index(r) for r in rows]
    scores = np.array([[float(ex["score"][i]) for ex in examples] for i in idx])  # type: ignore[index]
    lim = max(float(np.abs(scores).max()), 1e-6)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.9 + 2.1 * len(examples), 0.9 + 0.21 * len(rows)))
        ax.imshow(scores, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), origin="upper", alpha=0.55)
        for r, i in enumerate(idx):
            for c, ex in enumerate(examples):
                toks = [_token_label(t) for t in ex["tokens"][i][:k]]  # type: ignore[index]
                ax.text(c, r, "  ".join(toks), ha="center", va="center", fontsize=6.5, family="monospace")
        heads = [f"{ex['title']}\n" + "\n".join(_wrap(f"“{ex['prompt']}”", 30, 3)) for ex in examples]
        ax.set_xticks(range(len(examples)), heads, fontsize=7)
        ax.xaxis.tick_top()
        ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=7)
        ax.set_ylabel("layer")
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_xticks(np.arange(len(examples) + 1) - 0.5, minor=True)
        ax.grid(which="minor", axis="x", color="white", lw=2)
        fig.text(
            0.5,
            0.0,
            f"top-{k} LogitLens tokens at the last prompt position; red = refusal openers more "
            "likely than compliance openers, blue = the reverse",
            ha="center",
            fontsize=6.5,
            color="0.3",
        )
        return save_figure(fig, stem)


def plot_refused_vs_answered(split: dict[str, object], stem: str | os.PathLike[str]) -> list[Path]:
    """Per layer: share of refused and of answered pseudo-harmful prompts the probe reads as malicious (95% CIs),
    and the AUROC of P(harmful) for telling them apart (from :func:`mosr.represent.boundary.refused_vs_answered`)."""
    rows: list[dict] = split["per_layer"]  # type: ignore[assignment]
    layers = [r["layer"] for r in rows]
    with plt.rc_context(STYLE):
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(6.8, 2.6))
        for key, label, color in (
            ("refused", f"refused (n={split['n_refused']})", "#c0392b"),
            ("answered", f"answered (n={split['n_answered']})", "#2471a3"),
        ):
            mid = [100 * r[f"malicious_{key}"] for r in rows]
            lo = [100 * r[f"malicious_{key}_ci"][0] for r in rows]
            hi = [100 * r[f"malicious_{key}_ci"][1] for r in rows]
            ax.plot(layers, mid, color=color, label=label)
            ax.fill_between(layers, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("layer")
        ax.set_ylabel("read as malicious (%)")
        ax.legend(fontsize=7)
        bx.plot(layers, [r["auroc"] for r in rows], color="black")
        bx.fill_between(
            layers,
            [r["auroc_ci"][0] for r in rows],
            [r["auroc_ci"][1] for r in rows],
            color="grey",
            alpha=0.3,
            linewidth=0,
        )
        bx.axhline(0.5, color="grey", linestyle=":", linewidth=0.8)
        bx.set_xlabel("layer")
        bx.set_ylabel("AUROC, refused vs answered")
        fig.suptitle("Pseudo-harmful prompts the model refuses vs answers, read by benign/harmful probes", fontsize=8)
        fig.tight_layout()
        return save_figure(fig, stem)
