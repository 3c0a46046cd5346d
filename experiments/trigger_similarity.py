"""Fig. 3 of the refusal-trigger study (Xue et al., arXiv 2603.11388): are the benign queries a model refuses
closer to the refusal triggers in its hidden states than the ones it answers?

For every benign query of the given evaluation runs (rows of ``responses.jsonl`` with a verdict and a label
other than ``harmful``): the hidden state at the final prompt token (the post-instruction position,
:func:`mosr.capture.capture` ``position="last"``) at every layer from ``round(15/32·L)`` to ``L − 1`` (the paper
reads layer 15 on of 32; SmolLM2-135M's 30 give 14–29), its cosine to every trigger's state at the same layer,
averaged over those layers; the query's score at ``k`` is the mean of its ``k`` highest cosines (k = 5, 10, 15,
20). Triggers: the benign rewrites of the harmful training prompts (``experiments/data/trigger_rewrites.jsonl``).

Refused (refusal or degenerate) against answered queries, per k: each group's mean with a percentile-bootstrap
95% CI over queries, the difference (refused − answered) with a bootstrap CI, the AUROC of the score for
telling refused from answered (DeLong 95% CI, :func:`mosr.stats.auroc_ci`) and a two-sided Mann–Whitney U test.

Two similarities: ``raw`` cosines (the paper's) and ``centred`` ones (each layer's mean state over the queries
and triggers subtracted first: the raw cosines of this model's states are dominated by a few directions every
state shares, docs/method.md §3). Both are reported; the figure draws both.

The states are those of the model that gave the verdicts: the model and adapter in the runs' ``config.yaml``
(all runs must agree), unless ``--model`` / ``--adapter`` (``none`` for the base model) say otherwise.

    python experiments/trigger_similarity.py --runs runs/trigger-study/eval/sft-s0@45 \\
        --out experiments/results/trigger/similarity/sft

Writes ``<out>/similarity.json`` (settings, statistics, every query's scores, provenance),
``<out>/similarity.md`` and ``<out>/similarity.png`` / ``.pdf``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mosr.errors import MosrError
from mosr.io import read_rows, script_provenance, write_json, write_text
from mosr.stats import auroc_ci, fmt_auroc

TRIGGERS = "experiments/data/trigger_rewrites.jsonl"
KS: tuple[int, ...] = (5, 10, 15, 20)
KINDS: tuple[str, ...] = ("raw", "centred")
NOT_ANSWERED = ("refusal", "degenerate")


def later_layers(n_layers: int, start: int = 15, of: int = 32) -> list[int]:
    """Layers ``round(start/of · n_layers)`` to ``n_layers − 1`` (the paper's "layer 15 on of 32" at this depth)."""
    if n_layers < 1:
        raise MosrError(f"n_layers must be ≥ 1, got {n_layers}")
    first = min(max(round(start / of * n_layers), 0), n_layers - 1)
    return list(range(first, n_layers))


def read_queries(runs: list[Path], sets: list[str] | None = None) -> list[dict[str, Any]]:
    """The judged benign queries of ``runs`` (label not ``harmful``; only ``sets`` when given), one per prompt
    text (the first run's row wins), each with ``refused``."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for run in runs:
        path = run / "responses.jsonl"
        if not path.is_file():
            raise MosrError(f"{run} is not an evaluation run folder (no responses.jsonl)")
        for r in read_rows(path):
            if r.get("verdict") is None or r.get("label") == "harmful" or (sets and r.get("set") not in sets):
                continue
            if r["prompt"] in seen:
                continue
            seen.add(r["prompt"])
            refused = r["verdict"] in NOT_ANSWERED
            out.append({"run": str(run), "set": r["set"], "id": r["id"], "prompt": r["prompt"], "refused": refused})
    return out


def run_model(runs: list[Path], model: str | None, adapter: str | None) -> tuple[str, str | None]:
    """The model and adapter that produced the runs' verdicts (their ``config.yaml``), or the flags."""
    import yaml

    found = set()
    for run in runs:
        cfg_path = run / "config.yaml"
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        found.add((cfg.get("model"), cfg.get("adapter")))
    if model is None and len({m for m, _ in found}) != 1:
        raise MosrError(f"the runs were made with different or unknown models {sorted(map(str, found))}: give --model")
    if adapter is None and len({a for _, a in found}) != 1:
        raise MosrError(f"the runs were made with different adapters {sorted(map(str, found))}: give --adapter")
    m, a = next(iter(found))
    chosen_model = model or m
    if chosen_model is None:
        raise MosrError("no model in the runs' config.yaml: give --model")
    chosen_adapter = a if adapter is None else (None if adapter == "none" else adapter)
    return str(chosen_model), chosen_adapter


def similarity(q: Tensor, t: Tensor, centred: bool) -> Tensor:
    """``query × trigger`` cosines of ``q`` (query layer d) and ``t`` (trigger layer d), averaged over layers;
    ``centred`` subtracts each layer's mean state over queries and triggers first."""
    if centred:
        mu = torch.cat([q, t]).mean(0, keepdim=True)
        q, t = q - mu, t - mu
    qn = torch.nn.functional.normalize(q.double(), dim=-1, eps=1e-8)
    tn = torch.nn.functional.normalize(t.double(), dim=-1, eps=1e-8)
    return torch.einsum("qld,tld->qt", qn, tn) / q.shape[1]


def topk_means(sim: Tensor, ks: list[int]) -> dict[int, np.ndarray]:
    """Per query, the mean of its ``k`` highest similarities, for each ``k``."""
    if max(ks) > sim.shape[1]:
        raise MosrError(f"k = {max(ks)} exceeds the {sim.shape[1]} triggers")
    return {k: sim.topk(k, dim=1).values.mean(1).numpy() for k in ks}


def compare(scores: np.ndarray, refused: np.ndarray, draws: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Refused against answered scores: means with percentile-bootstrap 95% CIs, the difference, AUROC, Mann–Whitney."""
    from scipy.stats import mannwhitneyu

    a, b = scores[refused], scores[~refused]
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, len(a), (draws, len(a)))].mean(1)
    mb = b[rng.integers(0, len(b), (draws, len(b)))].mean(1)

    def ci(x: np.ndarray) -> list[float]:
        return [float(np.quantile(x, 0.025)), float(np.quantile(x, 0.975))]

    auc, lo, hi = auroc_ci(scores, refused)
    return {
        "refused": {"n": len(a), "mean": float(a.mean()), "ci": ci(ma)},
        "answered": {"n": len(b), "mean": float(b.mean()), "ci": ci(mb)},
        "difference": {"value": float(a.mean() - b.mean()), "ci": ci(ma - mb)},
        "auroc": {"value": auc, "ci": [lo, hi]},
        "mann_whitney_p": float(mannwhitneyu(a, b, alternative="two-sided").pvalue),
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"Benign queries of {', '.join(res['runs'])}: {res['n_refused']} refused, {res['n_answered']} answered; "
        f"{res['n_triggers']} triggers ({res['triggers']}); model {res['model']}"
        f"{', adapter ' + res['adapter'] if res['adapter'] else ''}; final prompt token, cosine averaged over "
        f"layers {res['layers'][0]}–{res['layers'][-1]}; score = mean of the top-k cosines. Means with "
        f"percentile-bootstrap 95% CIs ({res['bootstrap']} draws), AUROC with DeLong 95% CIs (refused = positive)."
    ]
    for kind in KINDS:
        lines += [
            "",
            f"**{kind} cosine**" + (" (the paper's)" if kind == "raw" else " (each layer's mean state subtracted)"),
            "",
            "| k | refused mean [95% CI] | answered mean [95% CI] | difference [95% CI] | AUROC [95% CI] "
            "| Mann–Whitney p |",
            "|---|---|---|---|---|---|",
        ]
        for k, s in res["stats"][kind].items():
            r, a, d = s["refused"], s["answered"], s["difference"]
            lines.append(
                f"| {k} | {r['mean']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}] | {a['mean']:.4f} "
                f"[{a['ci'][0]:.4f}, {a['ci'][1]:.4f}] | {d['value']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] | "
                f"{fmt_auroc(s['auroc']['value'], *s['auroc']['ci'])} | {s['mann_whitney_p']:.2g} |"
            )
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], stem: Path) -> None:
    import matplotlib.pyplot as plt

    from mosr.plots import STYLE, save_figure
    from mosr.plots.core import GROUP_COLORS

    colors = {"refused": GROUP_COLORS["harmful"], "answered": GROUP_COLORS["benign"]}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(KINDS), figsize=(7.5, 3.2))
        for ax, kind in zip(axes, KINDS):
            ks = [int(k) for k in res["stats"][kind]]
            for j, group in enumerate(("refused", "answered")):
                s = [res["stats"][kind][str(k)][group] for k in ks]
                mean = np.array([x["mean"] for x in s])
                err = np.array([[x["mean"] - x["ci"][0], x["ci"][1] - x["mean"]] for x in s]).T
                x = np.array(ks) + (j - 0.5) * 0.03 * max(ks)  # the two groups side by side
                label = f"{group} (n = {s[0]['n']})"
                ax.errorbar(x, mean, yerr=err, marker="o", ms=4, capsize=2, color=colors[group], label=label)
            ax.set(xlabel="k (top-k triggers)", xticks=ks, title=f"{kind} cosine")
        axes[0].set_ylabel("mean top-k cosine to the triggers")
        axes[0].legend(frameon=False)
        fig.suptitle(f"benign queries vs refusal triggers, layers {res['layers'][0]}–{res['layers'][-1]}", fontsize=9)
        save_figure(fig, stem)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="evaluation run folders (responses.jsonl with verdicts)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sets", default=None, help="only these sets of the runs (comma-separated; default: every set)")
    p.add_argument("--triggers", default=TRIGGERS)
    p.add_argument("--model", default=None, help="default: the runs' model")
    p.add_argument("--adapter", default=None, help="default: the runs' adapter; 'none' for the base model")
    p.add_argument("--layers", default=None, help="comma-separated layers (default: round(15/32·L) to L−1)")
    p.add_argument("--k", default=",".join(map(str, KS)), help="top-k sizes, comma-separated")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap draws")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    try:
        return run(args)
    except (MosrError, OSError) as e:
        raise SystemExit(f"trigger_similarity: {e}") from None


def _ints(text: str, what: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MosrError(f"{what} takes comma-separated integers, got {text!r}") from None
    if not out:
        raise MosrError(f"{what} is empty")
    return out


def run(args: argparse.Namespace) -> int:
    import mosr
    from mosr import datasets
    from mosr.capture import capture, resolve_layers

    ks = sorted(set(_ints(args.k, "--k")))
    if ks[0] < 1 or args.bootstrap < 1:
        raise MosrError(f"--k must be ≥ 1 and --bootstrap ≥ 1, got {ks} and {args.bootstrap}")
    runs = [Path(r) for r in args.runs]
    sets = [s.strip() for s in args.sets.split(",")] if args.sets else None
    qs = read_queries(runs, sets)
    refused = np.array([q["refused"] for q in qs], dtype=bool)
    if refused.sum() < 2 or (~refused).sum() < 2:
        raise MosrError(
            f"need at least 2 refused and 2 answered benign queries, got {int(refused.sum())} refused and "
            f"{int((~refused).sum())} answered in {', '.join(map(str, runs))}"
        )
    triggers = datasets.load(args.triggers)
    if max(ks) > len(triggers):
        raise MosrError(f"k = {max(ks)} exceeds the {len(triggers)} triggers of {args.triggers}")
    model, adapter = run_model(runs, args.model, args.adapter)
    lm = mosr.load(model, adapter=adapter, device=args.device)
    layers = resolve_layers(lm, _ints(args.layers, "--layers")) if args.layers else later_layers(lm.n_layers)
    q_states = capture(lm, [q["prompt"] for q in qs], layers=layers, batch_size=args.batch_size, progress=False)
    t_states = capture(lm, triggers.prompts, layers=layers, batch_size=args.batch_size, progress=False)
    assert isinstance(q_states, Tensor) and isinstance(t_states, Tensor)
    scores = {kind: topk_means(similarity(q_states, t_states, kind == "centred"), ks) for kind in KINDS}
    res: dict[str, Any] = {
        "runs": [str(r) for r in runs],
        "sets": sets,
        "model": model,
        "adapter": adapter,
        "layers": layers,
        "triggers": args.triggers,
        "n_triggers": len(triggers),
        "ks": ks,
        "bootstrap": args.bootstrap,
        "seed": args.seed,
        "n_refused": int(refused.sum()),
        "n_answered": int((~refused).sum()),
        "stats": {
            kind: {str(k): compare(scores[kind][k], refused, args.bootstrap, args.seed) for k in ks} for kind in KINDS
        },
        "queries": [
            {**q, **{f"{kind}_top{k}": float(scores[kind][k][i]) for kind in KINDS for k in ks}}
            for i, q in enumerate(qs)
        ],
    }
    out = Path(args.out)
    write_json(out / "similarity.json", {**res, **script_provenance()})
    text = markdown(res)
    write_text(out / "similarity.md", text)
    plot(res, out / "similarity")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
