"""Figures of the safety / over-refusal trade-off: evaluated runs in the trade-off plane (``mosr eval
--plot``) and the trade-off study's frontier, groups and LogitLens before / after (``mosr tradeoff``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from mosr.plots.core import STYLE, group_colors, save_figure


def plot_tradeoff(runs: list, stem: str | os.PathLike[str], title: str | None = None) -> list[Path]:
    """Fig. 2-style trade-off scatter: one point per run, x = mean RR over benign / pseudo-harmful
    subsets, y = mean ASR over harmful subsets (both %, lower-left is better), 95% CI bars.

    ``runs``: :class:`mosr.evaluation.tables.RunResult` objects (e.g. from :func:`mosr.evaluation.run.load_run`).
    """
    from mosr.evaluation.metrics import tradeoff_point

    points = []
    for run in runs:
        x, y = tradeoff_point(run.metrics)
        if x.parts and y.parts:
            points.append((run.name, x, y))
    if not points:
        from mosr.errors import MosrError

        raise MosrError("trade-off plot needs runs with both harmful and benign/pseudo-harmful sets")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(3.6, 3.0))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (name, x, y) in enumerate(points):
            ax.errorbar(
                100 * x.value,
                100 * y.value,
                xerr=[[100 * (x.value - x.low)], [100 * (x.high - x.value)]],
                yerr=[[100 * (y.value - y.low)], [100 * (y.high - y.value)]],
                fmt="o",
                color=colors[i % len(colors)],
                capsize=2,
                markersize=5,
                label=name,
                alpha=0.85,
            )
        ax.set_xlabel("mean refusal rate on benign + pseudo-harmful (%) ↓")
        ax.set_ylabel("mean attack success rate on harmful (%) ↓")
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.set_title(title or "Safety / over-refusal trade-off")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        return save_figure(fig, stem)


# --- the trade-off study (mosr tradeoff): rows are the ``points`` of its results.json ---------------


def plot_frontier(
    rows: list[dict[str, Any]],
    frontier: dict[str, list[str]],
    stem: str | os.PathLike[str],
    *,
    first_seed: int,
    overrefusal: Sequence[str],
    title: str,
) -> list[Path]:
    """Mean harmful ASR against mean over-refusal, one curve per method (points = training steps), CI
    bars, other seeds' final points hollow, the base model as a star.

    ``frontier``: method -> names of its frontier rows in step order (seed ``first_seed``); rows of the
    same method at other seeds are drawn hollow; ``overrefusal`` names the sets of the x axis and
    ``title`` (the study's name) heads the figure."""
    by = {r["name"]: r for r in rows}
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.4, 4.0))
        for m, names in frontier.items():
            rs = [by[n] for n in names]
            if not rs:
                continue
            x, y = [r["rr"] for r in rs], [r["asr"] for r in rs]
            xerr = np.array([[r["rr"] - r["rr_ci"][0], r["rr_ci"][1] - r["rr"]] for r in rs]).T
            yerr = np.array([[r["asr"] - r["asr_ci"][0], r["asr_ci"][1] - r["asr"]] for r in rs]).T
            line = ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", ms=4, lw=1.2, capsize=2, elinewidth=0.6, label=m)
            for r in rs:
                ax.annotate(str(r["step"]), (r["rr"], r["asr"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
            others = [r for r in rows if r["method"] == m and r["seed"] != first_seed]
            ax.scatter(
                [r["rr"] for r in others],
                [r["asr"] for r in others],
                s=22,
                facecolors="none",
                edgecolors=line.lines[0].get_color(),
                zorder=3,
            )
        base = next((r for r in rows if r["method"] == "base"), None)
        if base:
            ax.scatter([base["rr"]], [base["asr"]], marker="*", s=120, color="k", zorder=4, label="base model")
        ax.set(
            xlabel="over-refusal: mean RR on " + ", ".join(overrefusal) + " (%) ↓",
            ylabel="mean ASR (%) ↓",
            xlim=(-2, 102),
            ylim=(-2, 102),
            title=f"{title}: numbers = training step; hollow = other seeds",
        )
        ax.legend(fontsize=7, loc="upper right")
        return save_figure(fig, stem)


def plot_groups(
    groups: dict[str, list[dict[str, Any]]], rows: list[dict[str, Any]], stem: str | os.PathLike[str]
) -> list[Path]:
    """One panel per group: its members' final points in the trade-off plane, joined in the listed order
    (the changed setting's order), with CI bars and the base model (the ``method == "base"`` row of
    ``rows``). Draws nothing and returns ``[]`` when every group is empty."""
    shown = {g: rs for g, rs in groups.items() if rs}
    if not shown:
        return []
    base = next((r for r in rows if r["method"] == "base"), None)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(shown), figsize=(3.3 * len(shown), 3.4), squeeze=False)
        for ax, (g, rs) in zip(axes[0], shown.items()):
            x, y = [r["rr"] for r in rs], [r["asr"] for r in rs]
            xerr = np.array([[r["rr"] - r["rr_ci"][0], r["rr_ci"][1] - r["rr"]] for r in rs]).T
            yerr = np.array([[r["asr"] - r["asr_ci"][0], r["asr_ci"][1] - r["asr"]] for r in rs]).T
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", ms=4, lw=1.0, capsize=2, elinewidth=0.6)
            for r in rs:
                ax.annotate(r["method"], (r["rr"], r["asr"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
            if base:
                ax.scatter([base["rr"]], [base["asr"]], marker="*", s=90, color="k", zorder=4)
            ax.set(title=g, xlabel="over-refusal RR (%) ↓", xlim=(-2, 102), ylim=(-2, 102))
        axes[0][0].set_ylabel("mean ASR (%) ↓")
        return save_figure(fig, stem)


def plot_lens(
    lens: dict[str, Any], stem: str | os.PathLike[str], *, harmful: Sequence[str], overrefusal: Sequence[str]
) -> list[Path]:
    """LogitLens before / after: one panel per model (base, then each defence), the mean refusal −
    compliance opener mass at the last prompt token per layer, one line per set (``harmful`` sets solid,
    ``overrefusal`` sets dashed)."""
    sets = [*harmful, *overrefusal]
    colors = group_colors(sets)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(lens), figsize=(3.2 * len(lens), 3.0), sharey=True, squeeze=False)
        for ax, (name, got) in zip(axes[0], lens.items()):
            for s in sets:
                if s in got["sets"]:
                    ax.plot(
                        got["layers"],
                        got["sets"][s]["score"],
                        color=colors[s],
                        lw=1.1,
                        ls="-" if s in harmful else "--",
                        label=s,
                    )
            ax.axhline(0, color="0.6", lw=0.6)
            ax.set(title=name, xlabel="layer")
        axes[0][0].set_ylabel("refusal − compliance mass")
        axes[0][-1].legend(fontsize=6, loc="upper left")
        return save_figure(fig, stem)


def plot_frontier_points(res: dict[str, Any], stem: str | os.PathLike[str]) -> list[Path]:
    """ASR (x) against RR (y) of ``experiments/frontier.py``'s result: one line per method through its points
    in knob order (without knobs: markers, and a line along the method's envelope), CI bars, degraded points
    hollow, the base model (method ``base``) as a star, the target box shaded."""
    from matplotlib.patches import Rectangle

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.4, 4.0))
        box = res.get("box")
        if box:
            ax.add_patch(
                Rectangle(
                    (0, 0),
                    box["asr"],
                    box["rr"],
                    facecolor="tab:green",
                    alpha=0.15,
                    edgecolor="none",
                    label=f"box: ASR ≤ {box['asr']:g}, RR ≤ {box['rr']:.1f}",
                )
            )
        methods = list(dict.fromkeys(r["method"] for r in res["points"]))
        for m in methods:
            rs = [r for r in res["points"] if r["method"] == m]
            if m == "base":
                r = rs[0]
                ax.scatter([r["asr"]], [r["rr"]], marker="*", s=120, color="k", zorder=4, label="base model")
                continue
            xerr = np.array([[r["asr"] - r["asr_ci"][0], r["asr_ci"][1] - r["asr"]] for r in rs]).T
            yerr = np.array([[r["rr"] - r["rr_ci"][0], r["rr_ci"][1] - r["rr"]] for r in rs]).T
            lined = all(r["knob"] is not None for r in rs)  # a knob orders a line; else the envelope is drawn
            bars = ax.errorbar(
                [r["asr"] for r in rs],
                [r["rr"] for r in rs],
                xerr=xerr,
                yerr=yerr,
                marker="o",
                ms=4,
                ls="-" if lined else "none",
                lw=2.0 if m == res["reference"] else 1.2,
                capsize=2,
                elinewidth=0.6,
                label=m + (" (reference)" if m == res["reference"] else ""),
            )
            color = bars[0].get_color()
            kept = sorted(
                (r for r in rs if r.get("on_envelope", True) and not r.get("degraded")), key=lambda r: r["asr"]
            )
            if not lined and len(kept) > 1:
                ax.plot([r["asr"] for r in kept], [r["rr"] for r in kept], color=color, lw=1.2, alpha=0.8)
            hollow = [r for r in rs if r.get("degraded")]  # capability degraded: drawn, not compared
            ax.scatter(
                [r["asr"] for r in hollow],
                [r["rr"] for r in hollow],
                s=30,
                facecolors="white",
                edgecolors=color,
                zorder=3,
            )
            for r in rs:
                ax.annotate(r["label"], (r["asr"], r["rr"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set(
            xlabel="ASR: mean over " + ", ".join(res["harmful"]) + " (%) ↓",
            ylabel="over-refusal: mean RR over " + ", ".join(res["overrefusal"]) + " (%) ↓",
            xlim=(-2, 102),
            ylim=(-2, 102),
            title=res["title"],
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
        return save_figure(fig, stem)
