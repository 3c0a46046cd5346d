"""Where a defence's remaining attack success sits. For one harmful set evaluated by the base model and by several
defended runs (``mosr eval`` folders, each with ``responses.jsonl``): the ASR per category for each run, and
whether the prompts the defended runs still answer lie farther from the harmful training prompts than the prompts
they refuse. Distance is the word Jaccard to the nearest training prompt (``experiments/near_duplicates.py``); the
test is the AUROC, with its DeLong interval, of *low* nearest similarity for "answered by at least half of the
defended runs", over all prompts and over the prompts the base model answers::

    python experiments/residual_asr.py --set jbb-harmful \\
        --config runs/qwen-h533/rr-h533-rret-const05-lin-s200/train/config.yaml \\
        --base runs/qwen-coder/eval-base \\
        --runs rr-s0=runs/qwen-h533/rr-h533-rret-const05-lin-s200/eval \\
               rr-s1=runs/qwen-h533/rr-h533-rret-const05-lin-s200-seed1/eval \\
        --out experiments/results/qwen-coder/qwen-h533/residual-jbb-rr

Writes ``residual.json`` / ``.md``. Every run must hold the same prompts of the set (the whole set, or the same
sample).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from near_duplicates import nearest, training_words  # noqa: E402 (a sibling script)

from mosr.errors import DataError, MosrError  # noqa: E402
from mosr.io import read_rows, script_provenance, write_json, write_text  # noqa: E402
from mosr.stats import auroc_ci, fmt_auroc  # noqa: E402


def answered(folder: str, set_name: str) -> dict[str, tuple[bool, str, str]]:
    """``{prompt id: (judged compliance, category, prompt)}`` of ``set_name`` in an evaluation folder."""
    path = Path(folder) / "responses.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: no responses.jsonl (give a `mosr eval` output folder)")
    out = {
        r["id"]: (r["verdict"] == "compliance", r.get("category") or "–", r["prompt"])
        for r in read_rows(path)
        if r["set"] == set_name
    }
    if not out:
        raise DataError(f"{path}: no responses for set {set_name!r}")
    return out


def parse_runs(items: list[str]) -> dict[str, str]:
    runs = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise DataError(f"--runs takes name=folder, got {item!r}")
        runs[name] = folder
    return runs


def residual(
    base: dict[str, tuple[bool, str, str]], runs: dict[str, dict[str, tuple[bool, str, str]]], sims: dict[str, float]
) -> dict[str, Any]:
    """The per-category table and the two AUROCs (see the module docstring)."""
    ids = sorted(base)
    for name, r in runs.items():
        if sorted(r) != ids:
            raise DataError(f"run {name!r} holds other prompts of the set than the base model's folder")
    share = {i: sum(r[i][0] for r in runs.values()) / len(runs) for i in ids}
    by_cat: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        by_cat[base[i][1]].append(i)
    cats = {
        c: {
            "n": len(m),
            "base": 100 * sum(base[i][0] for i in m) / len(m),
            "runs": {name: 100 * sum(r[i][0] for i in m) / len(m) for name, r in runs.items()},
            "mean_runs": 100 * sum(share[i] for i in m) / len(m),
            "mean_nearest": sum(sims[i] for i in m) / len(m),
        }
        for c, m in sorted(by_cat.items())
    }

    def test(subset: list[str]) -> dict[str, Any]:
        pos = [share[i] >= 0.5 for i in subset]
        auc, lo, hi = auroc_ci([-sims[i] for i in subset], pos)
        resid = [sims[i] for i, p in zip(subset, pos) if p]
        rest = [sims[i] for i, p in zip(subset, pos) if not p]
        return {
            "n": len(subset),
            "answered": len(resid),
            "auroc": [auc, lo, hi],
            "nearest_answered": sum(resid) / len(resid) if resid else None,
            "nearest_refused": sum(rest) / len(rest) if rest else None,
        }

    residual_prompts = [
        {
            "id": i,
            "share": share[i],
            "base": base[i][0],
            "category": base[i][1],
            "nearest": round(sims[i], 3),
            "prompt": base[i][2],
        }
        for i in sorted(ids, key=lambda i: (-share[i], i))
        if share[i] > 0
    ]
    return {
        "n": len(ids),
        "categories": cats,
        "all": test(ids),
        "base_answered": test([i for i in ids if base[i][0]]),
        "residual": residual_prompts,
    }


def markdown(res: dict[str, Any], set_name: str, names: list[str]) -> str:
    lines = [f"# Remaining ASR on {set_name} by category (n = {res['n']}; % judged compliance)", ""]
    lines += ["| category | n | base | " + " | ".join(names) + " | mean of runs | nearest training prompt |"]
    lines += ["|---" * (5 + len(names)) + "|"]
    for c, r in res["categories"].items():
        per = " | ".join(f"{r['runs'][n]:.0f}" for n in names)
        lines.append(f"| {c} | {r['n']} | {r['base']:.0f} | {per} | {r['mean_runs']:.0f} | {r['mean_nearest']:.2f} |")
    lines += ["", "Answered by at least half of the runs, predicted by a low nearest-training-prompt similarity:", ""]
    lines += [
        "| prompts | n | answered | AUROC [DeLong 95%] | nearest: answered | nearest: refused |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (("all", "all"), ("base_answered", "the base model answers")):
        t = res[key]
        near = [f"{v:.3f}" if v is not None else "–" for v in (t["nearest_answered"], t["nearest_refused"])]
        lines.append(f"| {label} | {t['n']} | {t['answered']} | {fmt_auroc(*t['auroc'])} | {near[0]} | {near[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", required=True, help="the harmful set, e.g. jbb-harmful")
    p.add_argument("--config", required=True, help="a mosr train config (its data settings give the training prompts)")
    p.add_argument("--base", required=True, help="the base model's evaluation folder")
    p.add_argument("--runs", nargs="+", required=True, help="name=folder of each defended run's evaluation")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from mosr.train import TrainConfig

    try:
        named = parse_runs(args.runs)
        base = answered(args.base, args.set)
        runs = {name: answered(folder, args.set) for name, folder in named.items()}
        train = training_words(TrainConfig.load(args.config))
        sims = {i: nearest(prompt, train)[0] for i, (_, _, prompt) in base.items()}
        res = residual(base, runs, sims)
    except MosrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    meta = {
        "provenance": script_provenance(),
        "set": args.set,
        "config": args.config,
        "base": args.base,
        "runs": named,
        "n_train": len(train),
    }
    write_json(out / "residual.json", {**meta, **res})
    md = markdown(res, args.set, list(named))
    write_text(out / "residual.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
