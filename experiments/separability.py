"""How well the bundled model's own states separate harmful from topic-matched benign prompts: the ceiling on
a representation-level defence's selectivity.

An erasure defence acts on the states of the layers it trains. If no linear read-out of a layer's state tells a
JBB-harmful prompt from its topic-matched JBB-benign twin, an erasure that fires on 80% of the harmful prompts
(ASR 20%) also fires on a share of the benign ones. This script measures that share, per layer, at the last
prompt token (the post-instruction position), two ways:

* ``cv``: a probe fitted and scored on JBB itself (5-fold, out-of-fold scores): an optimistic ceiling, since a
  defence never sees JBB;
* ``transfer``: a probe fitted on what rr trains on, the harmful training prompts (rd-harmful-train minus the
  evaluation overlap) against their benign rewrites (``experiments/data/trigger_rewrites.jsonl``), and scored on
  JBB and on XSTest (unsafe against safe): the boundary the training data teaches; also with the other benign
  parts of rr's retain pool (OR-80K bank, Self-Instruct, all of it) as the benign class.

For each: AUROC and ``fpr@tpr80``, the share of benign prompts scored above the threshold that 80% of the harmful
prompts pass (the over-refusal of a state-level decision that blocks 80% of harmful prompts).

    python experiments/separability.py --out experiments/results/separability.json \
        --points experiments/results/sweep-{selectivity,twins,frontier}.json \
        --evals experiments/results/eval-rr-topic                               # about 4 min on 2 cores
    python experiments/separability.py --plot-only --points ...                 # redraw the figure only
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REWRITES = ROOT / "experiments" / "data" / "trigger_rewrites.jsonl"


def fpr_at_tpr(harmful: np.ndarray, benign: np.ndarray, tpr: float = 0.8) -> float:
    """Share of ``benign`` scores ≥ the threshold that a share ``tpr`` of the ``harmful`` scores reach: the
    highest threshold with at least ``ceil(tpr·n)`` harmful scores at or above it."""
    k = max(1, math.ceil(tpr * len(harmful) - 1e-9))
    t = np.sort(harmful)[::-1][k - 1]
    return float(np.mean(benign >= t))


def roc(harmful: np.ndarray, benign: np.ndarray) -> dict[str, list[float]]:
    """ROC points as the defence trade-off: ``asr`` = share of harmful prompts below the threshold (%) and
    ``rr`` = share of benign prompts at or above it (%), one point per distinct threshold."""
    ts = np.unique(np.r_[harmful, benign])[::-1]
    return {
        "asr": [round(100 * float(np.mean(harmful < t)), 1) for t in ts],
        "rr": [round(100 * float(np.mean(benign >= t)), 1) for t in ts],
    }


def measures(harmful: np.ndarray, benign: np.ndarray, tprs: tuple[float, ...] = (0.8,)) -> dict[str, float]:
    """AUROC of harmful against benign scores and ``fpr@tprNN`` for each of ``tprs`` (rounded to 3 places)."""
    from mosr.stats import auroc

    out = {"auroc": round(float(auroc(np.r_[harmful, benign], np.r_[np.ones(len(harmful)), np.zeros(len(benign))])), 3)}
    for tpr in tprs:
        out[f"fpr@tpr{round(100 * tpr)}"] = round(fpr_at_tpr(harmful, benign, tpr), 3)
    return out


#: one colour per sweep file of trained points
POINT_COLORS = ("k", "tab:gray", "tab:brown", "tab:purple", "tab:olive", "tab:cyan")


def plot(
    curves: dict[int, dict[str, dict[str, list[float]]]],
    points: list[Path],
    stem: Path,
    evals: list[Path] | None = None,
) -> None:
    """JBB-benign RR against JBB-harmful ASR: the probes' ROC curves, the sweeps' trained points (dots) and
    evaluated adapters (stars)."""
    import json

    import matplotlib.pyplot as plt

    from mosr.plots import STYLE, save_figure

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.2, 4.0))
        for j, c in curves.items():
            for kind, style in (("cv", "-"), ("transfer", ":")):
                ax.plot(c[kind]["rr"], c[kind]["asr"], style, lw=1, label=f"L{j} probe, {kind}")
        for i, path in enumerate(points):
            rows = [
                r["sets"]
                for r in json.loads(path.read_text())["rows"]
                if "jbb-benign" in r["sets"] and "jbb-harmful" in r["sets"]
            ]
            ax.scatter(
                [s["jbb-benign"]["rr"] for s in rows],
                [s["jbb-harmful"]["asr"] for s in rows],
                s=12,
                zorder=3,
                color=POINT_COLORS[i % len(POINT_COLORS)],
                label=path.stem.removeprefix("sweep-"),
            )
        for path in evals or []:
            sets = json.loads((path / "metrics.json").read_text())["sets"]
            ax.scatter(
                100 * sets["jbb-benign"]["rr"]["value"],
                100 * sets["jbb-harmful"]["asr"]["value"],
                s=60,
                marker="*",
                color="tab:red",
                zorder=4,
                label=f"{path.name} (n {sets['jbb-harmful']['n']})",
            )
        ax.add_patch(plt.Rectangle((0, 0), 30, 20, fill=False, ls="--", color="tab:red", lw=1))
        ax.set(
            xlabel="JBB-benign refusal rate (%) ↓",
            ylabel="JBB-harmful ASR (%) ↓",
            xlim=(-2, 102),
            ylim=(-2, 102),
            title="prompt-state read-outs vs. trained rr (dots, one colour per sweep); box: issue target",
        )
        ax.legend(fontsize=6, ncol=2)
        save_figure(fig, stem)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--out", default="experiments/results/separability.json")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--curves", default="10,15,17,20", help="layers whose ROC curves are saved and drawn")
    p.add_argument(
        "--points",
        nargs="*",
        default=[],
        help="sweep JSON files (experiments/sweep.py) whose settings are drawn as (JBB-benign RR, "
        "JBB-harmful ASR) points over the curves",
    )
    p.add_argument(
        "--evals",
        nargs="*",
        default=[],
        help="`mosr eval` folders (metrics.json with jbb-harmful and jbb-benign) drawn as stars",
    )
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from --out's saved curves")
    args = p.parse_args(argv)
    if args.plot_only:
        import json

        saved = json.loads(Path(args.out).read_text())
        plot(
            {int(k): v for k, v in saved["curves"].items()},
            [Path(f) for f in args.points],
            Path(args.out).with_suffix(""),
            [Path(f) for f in args.evals],
        )
        return 0

    import torch

    from mosr import datasets
    from mosr.capture import capture
    from mosr.io import write_json, write_text
    from mosr.models import load
    from mosr.represent.probe import ProbeConfig, ProbeSet
    from mosr.train.sources import harmful_training_prompts, load_eval_sets

    lm = load(args.model)
    evals = load_eval_sets(missing="skip")
    train_h = harmful_training_prompts("rd-harmful-train", evals)
    twins = datasets.load(str(REWRITES))
    jbb_h, jbb_b = datasets.load("jbb-harmful"), datasets.load("jbb-benign")
    xs = datasets.load("xstest")
    xs_h = [r.prompt for r in xs if r.label == "harmful"]
    xs_b = [r.prompt for r in xs if r.label != "harmful"]
    bank = datasets.load("orbench-80k-bank", n=256, seed=0)
    groups = {
        "train_h": [r.prompt for r in train_h],
        "twins": [r.prompt for r in twins],
        "bank": [r.prompt for r in bank],
        "self_instruct": [r.prompt for r in datasets.load("self-instruct-retain", n=256, seed=0)],
        "jbb_h": [r.prompt for r in jbb_h],
        "jbb_b": [r.prompt for r in jbb_b],
        "xs_h": xs_h,
        "xs_b": xs_b,
    }
    acts = {k: capture(lm, v, layers="all", position="last", progress=True) for k, v in groups.items()}
    n_layers = acts["jbb_h"].shape[1]
    cfg = ProbeConfig()

    def both(h: str, benign: list[str]) -> tuple[torch.Tensor, np.ndarray]:
        """(states, 1 = harmful / 0 = benign) of group ``h`` against the groups ``benign``."""
        xb = torch.cat([acts[b] for b in benign])
        return torch.cat([acts[h], xb]), np.r_[np.ones(len(acts[h])), np.zeros(len(xb))]

    def scores(x: torch.Tensor, y: np.ndarray, groups: tuple[str, ...]) -> dict[str, np.ndarray]:
        """A probe fitted on (x, y), scored once on each of ``groups``: ``prompt layer`` P(harmful)."""
        probe = ProbeSet.fit(x, y, config=cfg, progress=False)
        return {g: probe.proba(acts[g]).numpy() for g in groups}

    # transfer: fitted on the training pairs, scored on JBB / XSTest
    transfer = scores(*both("train_h", ["twins"]), ("jbb_h", "jbb_b", "xs_h", "xs_b"))
    # the same with the other benign parts of rr's retain pool as the benign class
    others = {
        name: scores(*both("train_h", benign), ("jbb_h", "jbb_b"))
        for name, benign in {
            "bank": ["bank"],
            "self-instruct": ["self_instruct"],
            "retain pool": ["twins", "bank", "self_instruct"],
        }.items()
    }
    # cv: out-of-fold scores on JBB
    x_j, y_j = both("jbb_h", ["jbb_b"])
    rng = np.random.default_rng(0)
    folds = np.empty(len(y_j), dtype=int)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y_j == cls))
        folds[idx] = np.arange(len(idx)) % args.folds
    oof = np.zeros((len(y_j), n_layers))
    for f in range(args.folds):
        tr, te = folds != f, folds == f
        probe = ProbeSet.fit(x_j[torch.from_numpy(tr)], y_j[tr], config=cfg, progress=False)
        oof[te] = probe.proba(x_j[torch.from_numpy(te)]).numpy()

    rows, curves = [], {}
    for j in [int(v) for v in args.curves.split(",") if v]:
        curves[j] = {
            "cv": roc(oof[y_j == 1, j], oof[y_j == 0, j]),
            "transfer": roc(transfer["jbb_h"][:, j], transfer["jbb_b"][:, j]),
        }
    for j in range(n_layers):
        rows.append(
            {
                "layer": j,
                "cv_jbb": measures(oof[y_j == 1, j], oof[y_j == 0, j], (0.8, 0.7)),
                "transfer_jbb": measures(transfer["jbb_h"][:, j], transfer["jbb_b"][:, j], (0.8, 0.7)),
                "transfer_other_jbb": {
                    name: measures(sc["jbb_h"][:, j], sc["jbb_b"][:, j]) for name, sc in others.items()
                },
                "transfer_xstest": measures(transfer["xs_h"][:, j], transfer["xs_b"][:, j]),
            }
        )
    out = Path(args.out)
    sizes = {k: len(v) for k, v in groups.items()}
    write_json(
        out,
        {"model": args.model, "position": "last", "folds": args.folds, "sizes": sizes, "rows": rows, "curves": curves},
    )
    plot(curves, [Path(f) for f in args.points], out.with_suffix(""), [Path(f) for f in args.evals])
    lines = [
        f"Linear separability of harmful vs. benign prompts, {args.model}, last prompt token "
        f"(`python experiments/separability.py`). Sizes: {sizes}.\n",
        "fpr@tpr80 = share of benign prompts above the threshold that 80% of harmful prompts reach "
        "(the over-refusal of a state-level decision with ASR 20%); fpr@tpr70 likewise at ASR 30%.\n",
        "| layer | JBB 5-fold AUROC | JBB 5-fold fpr@tpr80 | JBB 5-fold fpr@tpr70 | transfer JBB AUROC "
        "| transfer JBB fpr@tpr80 | transfer JBB fpr@tpr70 | transfer XSTest AUROC | transfer XSTest fpr@tpr80 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, t, x = r["cv_jbb"], r["transfer_jbb"], r["transfer_xstest"]
        lines.append(
            f"| {r['layer']} | {c['auroc']} | {c['fpr@tpr80']} | {c['fpr@tpr70']} | {t['auroc']} "
            f"| {t['fpr@tpr80']} | {t['fpr@tpr70']} | {x['auroc']} | {x['fpr@tpr80']} |"
        )
    names = list(others)
    lines += [
        "",
        "Transfer to JBB with other benign classes (harmful training prompts against each; AUROC / fpr@tpr80):\n",
        "| layer | " + " | ".join(f"{n} vs. harmful train" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for r in rows:
        o = r["transfer_other_jbb"]
        lines.append(f"| {r['layer']} | " + " | ".join(f"{o[n]['auroc']} / {o[n]['fpr@tpr80']}" for n in names) + " |")
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
