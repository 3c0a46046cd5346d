"""The representation study's report, from its run folder (:func:`mosr.represent.study.run_representation_study`):
the Markdown summary (:func:`summary_table`) and the figures (:func:`plot_representation_study`, redrawn from
``results.json`` and ``prompts.jsonl`` without a model)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mosr.errors import DataError
from mosr.io import read_rows
from mosr.represent.boundary import table as boundary_table
from mosr.represent.geometry import pca_projection


def plot_representation_study(out: str | os.PathLike[str]) -> list[Path]:
    """(Re)draw every figure of a finished study run from its ``results.json`` and ``prompts.jsonl``
    into ``<out>/figures``; returns the PNG paths. Cheap: no model, no recomputation."""
    from mosr import plots
    from mosr.io import read_json

    out = Path(out)
    if not (out / "results.json").is_file():
        raise DataError(f"{out} has no results.json: run `mosr probe` there first")
    res = read_json(out / "results.json")
    rows = read_rows(out / "prompts.jsonl")
    fig_dir = out / "figures"
    layer = res["summary"]["chosen_layer"]
    m = res["probes"]["layers"]
    layer_ids = [x["layer"] for x in m]
    fm = res["fraction_malicious"]
    written = plots.plot_probe_accuracy(
        layer_ids,
        [x["accuracy"] for x in m],
        [x["accuracy_ci"] for x in m],
        [x["auroc"] for x in m],
        [x["auroc_ci"] for x in m],
        layer,
        fig_dir / "probe_accuracy",
        n_test=res["probes"]["n_test"],
    )
    written += plots.plot_fraction_malicious(
        fm["layers"],
        fm["fraction"],
        fig_dir / "fraction_malicious",
        cis=fm["ci"],
        best_layer=layer,
        threshold=fm["threshold"],
        n=fm["n"],
    )

    def group_rows(name: str) -> list[dict[str, Any]]:
        if name.endswith(" (test)"):
            group = name[: -len(" (test)")]
            return [r for r in rows if r["group"] == group and r["split"] == "test"]
        return [r for r in rows if r["set"] == name]

    written += plots.plot_probe_distributions(
        {k: [r["prob"] for r in group_rows(k)] for k in fm["fraction"]},
        layer,
        fig_dir / "probe_distributions",
        threshold=fm["threshold"],
    )
    pca = res["geometry"]["pca"]
    if "coords" not in pca:  # run folders written before coordinates were stored: recompute from acts/
        pca = _pca_from_store(out, rows, pca["layer"])
    written += plots.plot_pca_scatter(pca["coords"], pca["explained"], pca["layer"], fig_dir / "pca")
    written += plots.plot_centroid_axis(
        res["geometry"]["layers"], res["geometry"]["axis_mean"], fig_dir / "centroid_axis"
    )
    lens = res["lens"]
    written += plots.plot_lens_heatmap(
        lens["layers"], lens["refusal_minus_compliance"], fig_dir / "lens_heatmap", n=lens["n"]
    )
    split = (res.get("risk") or {}).get("refused_vs_answered")
    if split and split.get("per_layer"):
        written += plots.plot_refused_vs_answered(split, fig_dir / "refused_vs_answered")
    show = lens.get("table_layers") or sorted(set(lens["layers"][::2]) | {lens["layers"][-1]})
    written += plots.plot_lens_table(lens["examples"], lens["layers"], fig_dir / "lens_table", show_layers=show)
    return sorted(p for p in written if p.suffix == ".png")


def summary_table(results: dict[str, Any], every: int = 3) -> str:
    """Markdown tables of a study's key numbers (from ``results.json``): probes per layer, share of each
    group classified malicious, axis positions, LogitLens and over-refusal risk."""

    def ci(v: float, lohi: list[float] | tuple[float, float], nd: int = 3) -> str:
        return f"{v:.{nd}f} [{lohi[0]:.{nd}f}, {lohi[1]:.{nd}f}]"

    m = results["probes"]["layers"]
    layer = results["summary"]["chosen_layer"]
    shown = sorted({x["layer"] for x in m[::every]} | {m[-1]["layer"], layer})
    fm, geo, lens = results["fraction_malicious"], results["geometry"], results["lens"]
    groups = list(fm["fraction"])
    lines = [
        f"Model `{results['model']}`, prompts per set {results['n_per_set']} "
        f"({results['dropped_duplicates']} duplicates dropped); probes trained on {results['probes']['n_train']} "
        f"benign+harmful prompts, tested on {results['probes']['n_test']}; seed {results['seed']}; "
        f"chosen layer **{layer}** (lowest CV log-loss on the train split).",
        "",
        "| layer | held-out accuracy [95% CI] | AUROC [95% CI] | C | "
        + " | ".join(f"malicious: {g} (n={fm['n'][g]})" for g in groups)
        + " |",
        "|---|---|---|---|" + "---|" * len(groups),
    ]
    for x in m:
        if x["layer"] not in shown:
            continue
        j = fm["layers"].index(x["layer"])
        mark = f"**{x['layer']}**" if x["layer"] == layer else str(x["layer"])
        lines.append(
            f"| {mark} | {ci(x['accuracy'], x['accuracy_ci'])} | {ci(x['auroc'], x['auroc_ci'])} | {x['C']:g} | "
            + " | ".join(ci(fm["fraction"][g][j], fm["ci"][g][j], 2) for g in groups)
            + " |"
        )
    names = list(geo["axis_mean"])
    lines += [
        "",
        "Position on the benign→harmful centroid axis (0 = benign centroid, 1 = harmful centroid) and "
        "LogitLens refusal − compliance opener mass, group means:",
        "",
        "| layer | "
        + " | ".join(f"axis: {g}" for g in names)
        + " | "
        + " | ".join(f"lens: {g}" for g in lens["refusal_minus_compliance"])
        + " |",
        "|---|" + "---|" * (len(names) + len(lens["refusal_minus_compliance"])),
    ]
    for lay in shown:
        j = geo["layers"].index(lay)
        mark = f"**{lay}**" if lay == layer else str(lay)
        lines.append(
            f"| {mark} | "
            + " | ".join(f"{geo['axis_mean'][g][j] + 0.0:.2f}".replace("-0.00", "0.00") for g in names)
            + " | "
            + " | ".join(f"{v[lens['layers'].index(lay)]:+.3f}" for v in lens["refusal_minus_compliance"].values())
            + " |"
        )
    risk = results.get("risk")
    if risk:
        b, ll = risk["boundary_score"], risk["lens_last_layer_score"]
        lines += [
            "",
            f"Over-refusal risk: {risk['n_refused']}/{risk['n']} pseudo-harmful prompts refused "
            f"(rate {ci(risk['refusal_rate'], risk['refusal_rate_ci'])}; "
            + ", ".join(f"{k}: {v['n_refused']}/{v['n']}" for k, v in risk["per_set"].items())
            + f"; greedy, {risk['max_new_tokens']} new tokens, judge {risk['judge']}).",
            "",
            "| predictor of refusal | AUROC [95% DeLong CI] |",
            "|---|---|",
            f"| probe boundary P(harmful), layer {risk['boundary_layer']} | {ci(b['auroc'], b['ci'])} |",
            f"| LogitLens refusal − compliance mass, last layer | {ci(ll['auroc'], ll['ci'])} |",
        ]
        if "note" in risk:
            lines.append(f"\nNote: {risk['note']}.")
        if "refused_vs_answered" in risk:
            lines += ["", *boundary_table(risk["refused_vs_answered"])]
    t = results["timings_seconds"]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:g}" for k, v in t.items())]
    return "\n".join(lines)


def _pca_from_store(out: Path, rows: list[dict[str, Any]], layer: int) -> dict[str, Any]:
    """PCA (fitted on benign + harmful) of a run's stored states at ``layer``, grouped as in
    :func:`run_representation_study`."""
    from mosr.store import ActivationStore

    x = ActivationStore(out / "acts").load(layers=[layer])[:, 0].float()
    groups: dict[str, list[int]] = {"benign": [], "harmful": []}
    for i, r in enumerate(rows):
        groups.setdefault(r["group"] if r["group"] != "pseudo_harmful" else r["set"], []).append(i)
    pca, coords = pca_projection({k: x[v] for k, v in groups.items()})
    return {"layer": layer, "explained": pca.explained.tolist(), "coords": {k: v.tolist() for k, v in coords.items()}}
