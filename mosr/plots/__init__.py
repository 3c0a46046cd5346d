"""Every figure of the toolkit (matplotlib, PNG + PDF, sized for a paper column).

Functions take plain arrays / result dicts and a path stem, write ``<stem>.png`` and ``<stem>.pdf``
(:func:`save_figure`) and return the written paths. This package's public surface is the list below;
each figure lives in the module of the stage that produces its data:

==================================  ==========================================================================
module                              figures
==================================  ==========================================================================
:mod:`mosr.plots.core`              :data:`STYLE`, :data:`GROUP_COLORS`, :func:`group_colors`,
                                    :func:`save_figure` (what every figure shares, experiment scripts included)
:mod:`mosr.plots.represent`         :func:`plot_probe_accuracy`, :func:`plot_fraction_malicious`,
                                    :func:`plot_probe_distributions`, :func:`plot_pca_scatter`,
                                    :func:`plot_centroid_axis`, :func:`plot_lens_heatmap`,
                                    :func:`plot_lens_table`, :func:`plot_refused_vs_answered`
:mod:`mosr.plots.train`             :func:`plot_weights`
:mod:`mosr.plots.tradeoff`          :func:`plot_tradeoff` (``mosr eval --plot``), :func:`plot_frontier`,
                                    :func:`plot_groups`, :func:`plot_lens` (``mosr tradeoff``)
:mod:`mosr.plots.interventions`     :func:`plot_scores` (``mosr direction``)
==================================  ==========================================================================

Use them as ``from mosr import plots; plots.plot_weights(...)`` or ``from mosr.plots import plot_weights``.
Nothing here imports the stages themselves (:mod:`mosr.represent`, :mod:`mosr.train`, :mod:`mosr.tradeoff`,
:mod:`mosr.interventions`) at import time: the stages import their figures, not the reverse.
"""

from __future__ import annotations

from mosr.plots.core import GROUP_COLORS, STYLE, group_colors, save_figure
from mosr.plots.interventions import plot_scores
from mosr.plots.represent import (
    plot_centroid_axis,
    plot_fraction_malicious,
    plot_lens_heatmap,
    plot_lens_table,
    plot_pca_scatter,
    plot_probe_accuracy,
    plot_probe_distributions,
    plot_refused_vs_answered,
)
from mosr.plots.tradeoff import plot_frontier, plot_groups, plot_lens, plot_tradeoff
from mosr.plots.train import plot_weights

__all__ = [
    "GROUP_COLORS",
    "STYLE",
    "group_colors",
    "plot_centroid_axis",
    "plot_fraction_malicious",
    "plot_frontier",
    "plot_groups",
    "plot_lens",
    "plot_lens_heatmap",
    "plot_lens_table",
    "plot_pca_scatter",
    "plot_probe_accuracy",
    "plot_probe_distributions",
    "plot_refused_vs_answered",
    "plot_scores",
    "plot_tradeoff",
    "plot_weights",
    "save_figure",
]
