"""Where over-refused prompts sit: benign prompts the model refuses against those it answers, per layer.

MOSR's claim in representation terms is that a pseudo-harmful prompt the model refuses sits nearer the
malicious side of its safety representation than one it answers. Given, for the same pseudo-harmful
prompts, a probe's P(harmful) at every layer (a probe fit on harmful vs harmless prompts only, never on
refusal labels), the model's refusal verdicts and a LogitLens score, :func:`refused_vs_answered` reports
per layer:

* the share of each group the probe reads as malicious (P ≥ threshold), Wilson 95% intervals, the
  difference refused − answered with Newcombe's hybrid-score 95% interval and Fisher's exact p;
* the AUROC of P(harmful) for telling refused from answered prompts, with DeLong's 95% interval;
* the LogitLens refusal − compliance mass per layer for refused, answered and (given) harmful prompts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import fisher_exact

from mosr.errors import MosrError
from mosr.stats import auroc_ci, wilson


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """Newcombe's hybrid-score 95% interval of ``k1/n1 − k2/n2`` (method 10), from the two Wilson intervals."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1)
    l2, u2 = wilson(k2, n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def refused_vs_answered(
    probs: np.ndarray,
    refused: np.ndarray,
    layers: list[int],
    threshold: float = 0.5,
    lens: np.ndarray | None = None,
    lens_harmful: np.ndarray | None = None,
    lens_layers: list[int] | None = None,
) -> dict[str, Any]:
    """Per-layer comparison of refused and answered pseudo-harmful prompts.

    Args:
        probs: ``prompt layer`` P(harmful) of the probe of each layer in ``layers``.
        refused: ``prompt`` bool, the model's verdict on each prompt (judged from its generation).
        lens: optional ``prompt lens_layer`` LogitLens refusal − compliance score of the same prompts;
            ``lens_harmful``: the same for harmful prompts (``harmful_prompt lens_layer``).
    """
    probs, refused = np.asarray(probs, dtype=float), np.asarray(refused, dtype=bool)
    if probs.ndim != 2 or probs.shape[0] != refused.shape[0] or probs.shape[1] != len(layers):
        raise MosrError(
            f"refused_vs_answered: probs {probs.shape} must be prompt x layer for {len(refused)} "
            f"prompts and {len(layers)} layers"
        )
    n_ref, n_ans = int(refused.sum()), int((~refused).sum())
    out: dict[str, Any] = {
        "n_refused": n_ref,
        "n_answered": n_ans,
        "threshold": threshold,
        "layers": layers,
        "per_layer": [],
    }
    if n_ref == 0 or n_ans == 0:
        out["note"] = "one group is empty: nothing to compare"
        return out
    for j, layer in enumerate(layers):
        mal = probs[:, j] >= threshold
        k_ref, k_ans = int(mal[refused].sum()), int(mal[~refused].sum())
        a, lo, hi = auroc_ci(probs[:, j], refused)
        out["per_layer"].append(
            {
                "layer": layer,
                "malicious_refused": k_ref / n_ref,
                "malicious_refused_ci": list(wilson(k_ref, n_ref)),
                "malicious_answered": k_ans / n_ans,
                "malicious_answered_ci": list(wilson(k_ans, n_ans)),
                "difference": k_ref / n_ref - k_ans / n_ans,
                "difference_ci": list(newcombe(k_ref, n_ref, k_ans, n_ans)),
                "fisher_p": float(fisher_exact([[k_ref, n_ref - k_ref], [k_ans, n_ans - k_ans]])[1]),
                "mean_p_refused": float(probs[refused, j].mean()),
                "mean_p_answered": float(probs[~refused, j].mean()),
                "auroc": a,
                "auroc_ci": [lo, hi],
            }
        )
    if lens is not None:
        lens = np.asarray(lens, dtype=float)
        out["lens"] = {
            "layers": lens_layers if lens_layers is not None else list(range(lens.shape[1])),
            "refused": lens[refused].mean(0).tolist(),
            "answered": lens[~refused].mean(0).tolist(),
        }
        if lens_harmful is not None:
            out["lens"]["harmful"] = np.asarray(lens_harmful, dtype=float).mean(0).tolist()
        out["lens"]["auroc_per_layer"] = [auroc_ci(lens[:, j], refused)[0] for j in range(lens.shape[1])]
    return out


def best_early_layer(split: dict[str, Any], n_layers: int, depth: float = 0.75) -> dict[str, Any] | None:
    """The per-layer row with the highest AUROC among layers no deeper than ``depth`` of the model."""
    rows = [r for r in split.get("per_layer", []) if r["layer"] < depth * n_layers]
    return max(rows, key=lambda r: r["auroc"]) if rows else None


def table(split: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per layer (shares read malicious, difference, Fisher p, AUROC)."""
    if not split.get("per_layer"):
        return [f"Refused vs answered: {split.get('note', 'no data')}"]
    lines = [
        f"Refused ({split['n_refused']}) vs answered ({split['n_answered']}) pseudo-harmful prompts: share read "
        f"malicious by each layer's probe (P ≥ {split['threshold']}), and the AUROC of P(harmful) for refusal",
        "",
        "| layer | refused: malicious | answered: malicious | difference [95% CI] | Fisher p | AUROC [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for r in split["per_layer"]:
        lines.append(
            f"| {r['layer']} | {100 * r['malicious_refused']:.1f} | {100 * r['malicious_answered']:.1f} | "
            f"{100 * r['difference']:+.1f} [{100 * r['difference_ci'][0]:+.1f}, {100 * r['difference_ci'][1]:+.1f}] | "
            f"{r['fisher_p']:.2g} | {r['auroc']:.3f} [{r['auroc_ci'][0]:.3f}, {r['auroc_ci'][1]:.3f}] |"
        )
    return lines
