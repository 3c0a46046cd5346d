"""What every figure shares: the matplotlib backend, the rc style, the group colours and the writer
(PNG + PDF, written atomically)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mosr.io import atomic_path  # noqa: E402

#: paper-friendly rc parameters of every figure (Any: matplotlib's stub wants its literal key names, not str)
STYLE: Any = {
    "figure.dpi": 150,
    "savefig.dpi": 200,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
#: one colour per prompt group, used by every figure
GROUP_COLORS = {"benign": "#2b8cbe", "harmful": "#d7301f", "pseudo_harmful": "#fdae61"}

_EXTRA_COLORS = ("#8c510a", "#e08214", "#7b3294", "#1b7837", "#636363", "#c51b7d")


def save_figure(fig: plt.Figure, stem: str | os.PathLike[str], formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` atomically and close it."""
    out = []
    for ext in formats:
        path = Path(f"{stem}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight")
        out.append(path)
    plt.close(fig)
    return out


def group_colors(names: list[str]) -> dict[str, str]:
    """A colour per group: the shared :data:`GROUP_COLORS` for names that start with a label
    (``benign``, ``harmful``, ``pseudo_harmful``), distinct warm colours for the other groups."""
    out: dict[str, str] = {}
    extra = iter(_EXTRA_COLORS * 4)
    for name in names:
        key = next((k for k in sorted(GROUP_COLORS, key=len, reverse=True) if name.startswith(k)), None)
        free = key is not None and GROUP_COLORS[key] not in out.values()
        out[name] = GROUP_COLORS[key] if free else next(extra)  # type: ignore[index]
    return out
