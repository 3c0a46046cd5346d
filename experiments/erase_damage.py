"""Does a low erase loss come with a working model? Final erase against damage over recorded sweeps.

The erasure issue asks every erasure method to bring the erase loss (``ReLU(cos)`` of the adapted against the
frozen states on the erased examples, the ``erase`` of ``train/log.jsonl``) below 0.3 *and* stay a working
assistant. This script reads the rows of the recorded sweeps (``experiments/results/sweep-*.json``: each
evaluated adapter with the erase of its last logged step, its tuning-set rates and the capability NLL on
held-out Self-Instruct answers) and counts how many points meet each half, and both::

    python experiments/erase_damage.py --sweeps experiments/results/sweep-*.json \\
        --out experiments/results/erase-damage

Only rows evaluated with the same evaluation spec as the untrained ``base-model`` row are compared (its
capability NLL is the base of the relative NLL). Writes ``<out>.json``, ``<out>.md`` and ``<out>.png`` / ``.pdf``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def load_points(paths: list[Path], base_name: str = "base-model") -> tuple[float, list[dict[str, Any]], list[str]]:
    """(base NLL, points, skipped sweeps). A point is a row with a final erase and a capability NLL, from a sweep
    whose ``spec.eval`` equals the one of the sweep holding the ``base_name`` row."""
    sweeps = {p: json.loads(p.read_text()) for p in paths}
    base = [
        (d["spec"].get("eval"), r["capability_nll"])
        for d in sweeps.values()
        for r in d["rows"]
        if r["name"] == base_name and r.get("capability_nll") is not None
    ]
    if not base:
        raise SystemExit(f"erase_damage: no '{base_name}' row with a capability NLL in {[str(p) for p in paths]}")
    base_eval, base_nll = base[0]
    points, skipped = [], []
    for path, d in sweeps.items():
        if d["spec"].get("eval") != base_eval:
            skipped.append(path.name)
            continue
        for r in d["rows"]:
            erase = (r.get("final") or {}).get("erase")
            if erase is None or r.get("capability_nll") is None:
                continue
            points.append(
                {
                    "sweep": path.stem.removeprefix("sweep-"),
                    "name": r["name"],
                    "erase": float(erase),
                    "nll": float(r["capability_nll"]),
                    "nll_rel": float(r["capability_nll"]) / base_nll - 1,
                    "mean_asr": r["mean_asr"],
                    "mean_rr": r["mean_rr"],
                }
            )
    return float(base_nll), points, skipped


def summary(points: list[dict[str, Any]], erase_max: float = 0.3, nll_rel_max: float = 0.15) -> dict[str, Any]:
    """Counts of points with erase < ``erase_max``, with NLL within ``nll_rel_max`` of the base, and both; the
    Spearman correlation of the final erase with the relative NLL, the mean RR and the mean ASR."""
    from scipy.stats import spearmanr

    erase = np.array([p["erase"] for p in points])
    low = [p for p in points if p["erase"] < erase_max]
    working = [p for p in points if p["nll_rel"] <= nll_rel_max]
    both = [p for p in low if p["nll_rel"] <= nll_rel_max]
    # average ranks for ties (many points share an ASR or RR of 0 or 100)
    corr = {k: float(spearmanr(erase, [p[k] for p in points]).statistic) for k in ("nll_rel", "mean_rr", "mean_asr")}
    return {
        "erase_max": erase_max,
        "nll_rel_max": nll_rel_max,
        "n": len(points),
        "n_low_erase": len(low),
        "n_working": len(working),
        "n_both": len(both),
        "spearman_erase_vs": corr,
        "closest": min(low, key=lambda p: p["nll_rel"]) if low else None,
    }


def table(base_nll: float, points: list[dict[str, Any]], s: dict[str, Any], skipped: list[str]) -> str:
    lines = [
        f"Final erase (last logged step) against damage, {s['n']} evaluated adapters of the recorded sweeps "
        f"(base capability NLL {base_nll:.4f}; sweeps with another evaluation spec left out: "
        f"{', '.join(skipped) or 'none'}).",
        "",
        f"- erase < {s['erase_max']}: {s['n_low_erase']} points; NLL ≤ +{s['nll_rel_max']:.0%}: {s['n_working']}; "
        f"**both: {s['n_both']}**.",
        "- Spearman correlation of the final erase with: "
        + ", ".join(f"{k} {v:+.2f}" for k, v in s["spearman_erase_vs"].items())
        + ".",
        "",
        "| sweep | point | final erase | NLL | NLL vs base | mean ASR | mean RR |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: p["erase"]):
        lines.append(
            f"| {p['sweep']} | {p['name']} | {p['erase']:.3f} | {p['nll']:.3f} | {p['nll_rel']:+.1%} | "
            f"{p['mean_asr']:.1f} | {p['mean_rr']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(points: list[dict[str, Any]], s: dict[str, Any], stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from mosr.plots import STYLE, save_figure

    erase = [p["erase"] for p in points]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        for ax, key, label in (
            (axes[0], "nll_rel", "capability NLL vs base (relative)"),
            (axes[1], "mean_asr", "mean ASR (JBB-harmful, AdvBench), %"),
        ):
            sc = ax.scatter(
                erase,
                [p[key] for p in points],
                c=[p["mean_rr"] for p in points],
                cmap="viridis",
                vmin=0,
                vmax=100,
                s=22,
                edgecolors="k",
                linewidths=0.3,
            )
            ax.axvline(s["erase_max"], color="r", lw=0.8, ls="--")
            ax.set_xlabel("final erase loss")
            ax.set_ylabel(label)
        axes[0].axhline(s["nll_rel_max"], color="r", lw=0.8, ls="--")
        axes[0].set_title(f"target: left of and below the lines ({s['n_both']} of {s['n']} points)", fontsize=9)
        fig.colorbar(sc, ax=axes, label="mean over-refusal RR (JBB-benign, XSTest-safe), %")
        return save_figure(fig, stem)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweeps", nargs="+", type=Path, required=True, help="sweep result JSONs")
    ap.add_argument("--out", type=Path, required=True, help="output stem (writes .json, .md, .png, .pdf)")
    ap.add_argument("--base-name", default="base-model", help="the untrained row whose NLL is the base")
    args = ap.parse_args(argv)
    base_nll, points, skipped = load_points(args.sweeps, args.base_name)
    s = summary(points)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"base_nll": base_nll, "summary": s, "points": points, "skipped": skipped}, indent=1) + "\n"
    )
    args.out.with_suffix(".md").write_text(table(base_nll, points, s, skipped))
    plot(points, s, args.out.with_suffix(""))  # <out>.png / .pdf beside <out>.json / .md
    print(table(base_nll, points, s, skipped).split("\n\n")[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
