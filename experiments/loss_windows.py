"""The erase and retain losses of training runs, averaged over windows of steps, side by side.

With a harmful training set larger than the examples a run draws (533 prompts, 2 erase examples a step over
120 steps), most erase examples of a step are prompts the adapter has not been trained on: the erase loss of
the batch then measures how far the erasure reaches beyond its training prompts while the run trains, next to
the retain loss (how much of the benign states it disturbs). 1 = untouched, 0 = erased::

    python experiments/loss_windows.py runs/qwen-h533/rr-h533-s120 runs/qwen-sweep/rr-s120 \\
        --out experiments/results/qwen-coder/qwen-h533/loss-windows

Each argument is a sweep setting folder (``<folder>/train/log.jsonl``) or a ``mosr train`` run folder.
Writes ``loss_windows.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mosr.io import read_rows, script_provenance, write_json, write_text

KEYS = ("erase", "retain", "c_e", "c_r", "grad_norm")


def windows(rows: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """Mean of :data:`KEYS` over consecutive windows of ``size`` logged steps (steps first..last)."""
    out = []
    for start in range(0, len(rows), size):
        w = rows[start : start + size]
        row: dict[str, Any] = {"steps": f"{w[0]['step']}-{w[-1]['step']}"}
        for k in KEYS:
            vals = [r[k] for r in w if isinstance(r.get(k), (int, float))]
            row[k] = round(sum(vals) / len(vals), 4) if vals else None
        out.append(row)
    return out


def log_file(folder: Path) -> Path:
    for cand in (folder / "train" / "log.jsonl", folder / "log.jsonl"):
        if cand.is_file():
            return cand
    raise SystemExit(f"loss_windows: no train/log.jsonl or log.jsonl in {folder}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--window", type=int, default=10, help="logged steps per window")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    if args.window < 1:
        raise SystemExit("loss_windows: --window must be ≥ 1")
    runs = {}
    for folder in args.runs:
        rows = [r for r in read_rows(log_file(folder)) if "step" in r]
        if not rows:
            raise SystemExit(f"loss_windows: {log_file(folder)} holds no steps")
        runs[folder.name] = windows(rows, args.window)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "loss_windows.json", {"provenance": script_provenance(), "window": args.window, "runs": runs})
    names = list(runs)
    head = "| steps | " + " | ".join(f"{n} erase | retain" for n in names) + " |"
    lines = ["# Erase / retain loss per window of steps (mean over the window's logged steps)", "", head]
    lines.append("|---" * (1 + 2 * len(names)) + "|")
    for i in range(max(len(w) for w in runs.values())):
        cells = []
        for n in names:
            w = runs[n][i] if i < len(runs[n]) else None
            cells += ["", ""] if w is None else [f"{w['erase']:.3f}", f"{w['retain']:.3f}"]
        steps = next(runs[n][i]["steps"] for n in names if i < len(runs[n]))
        lines.append(f"| {steps} | " + " | ".join(cells) + " |")
    write_text(args.out / "loss_windows.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
