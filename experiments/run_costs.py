"""Wall-clock cost of finished runs: `mosr train` folders (from the start of the command to the finished
adapter, reference pre-pass and data included: ``provenance.json``'s ``started`` and ``time``; a resumed run
counts from its last start) and `mosr eval` folders (``run.json``'s ``total_wall_s``, every invocation summed),
found under the given roots; one table, and the total.

    python experiments/run_costs.py runs/qwen-sweep runs/qwen-fr-filtered \\
        --out experiments/results/qwen-coder/costs
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from mosr.io import script_provenance, write_json, write_text


def train_cost(folder: Path) -> dict[str, Any] | None:
    """Minutes of a finished ``mosr train`` folder, or None if it is not one."""
    prov, summary = folder / "provenance.json", folder / "summary.json"
    if not (prov.is_file() and summary.is_file() and (folder / "log.jsonl").is_file()):
        return None
    p, s = json.loads(prov.read_text()), json.loads(summary.read_text())
    if "started" not in p or "time" not in p:
        return None
    seconds = (datetime.fromisoformat(p["time"]) - datetime.fromisoformat(p["started"])).total_seconds()
    steps = [json.loads(line).get("seconds", 0.0) for line in (folder / "log.jsonl").read_text().splitlines() if line]
    return {
        "kind": "train",
        "minutes": round(seconds / 60, 2),
        "step_minutes": round(sum(steps) / 60, 2),
        "steps": s.get("steps"),
        "method": s.get("method"),
        "reference_cache": s.get("reference_cache"),
    }


def eval_cost(folder: Path) -> dict[str, Any] | None:
    """Minutes of a finished ``mosr eval`` folder, or None if it is not one."""
    run = folder / "run.json"
    if not (run.is_file() and (folder / "metrics.json").is_file()):
        return None
    r = json.loads(run.read_text())
    prompts = sum(i.get("prompts", 0) for i in r.get("invocations", []))
    return {"kind": "eval", "minutes": round(r.get("total_wall_s", 0.0) / 60, 2), "prompts": prompts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", help="folders searched for train / eval run folders")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    provenance = script_provenance()
    rows = []
    for root in map(Path, args.roots):
        if not root.is_dir():
            raise SystemExit(f"run_costs: no folder {root}")
        for folder in sorted({root, *(d for d in root.rglob("*") if d.is_dir())}):
            cost = train_cost(folder) or eval_cost(folder)
            if cost is not None:
                rows.append({"run": str(folder), **cost})
    if not rows:
        raise SystemExit(f"run_costs: no finished train or eval run folder under {', '.join(args.roots)}")
    total = {k: round(sum(r["minutes"] for r in rows if r["kind"] == k), 1) for k in ("train", "eval")}
    lines = [
        "# Wall-clock cost (2 CPU cores, one job at a time)",
        "",
        "| run | kind | minutes | detail |",
        "|---|---|---|---|",
    ]
    for r in rows:
        detail = (
            f"{r['steps']} steps of {r['method']}; the steps alone {r['step_minutes']} min"
            if r["kind"] == "train"
            else f"{r['prompts']} prompts"
        )
        lines.append(f"| {r['run']} | {r['kind']} | {r['minutes']:.1f} | {detail} |")
    lines += ["", f"Total: training {total['train']} min, evaluation {total['eval']} min."]
    out = Path(args.out)
    write_json(out / "costs.json", {"rows": rows, "total_minutes": total, **provenance})
    write_text(out / "costs.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
