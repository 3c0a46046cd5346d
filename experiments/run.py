"""The mitigation study runner: train each listed method config, evaluate every adapter (and the
undefended base model), write a comparison table and the safety / over-refusal trade-off plot.

    python experiments/run.py --out runs/experiments                      # all 7 configs
    python experiments/run.py --methods rr mosr --steps 10 --eval-n 20    # a quicker subset

Run folder::

    train-<method>/        mosr train run folders (adapter/, log.jsonl, config.yaml, ...)
    eval-<method>/         mosr.evaluation.run run folders (responses.jsonl, metrics.json, table.md)
    eval-base/             the undefended model
    comparison.md / .json  one table over all evaluated runs (mosr.evaluation.run.compare)
    training.md / .json    final losses and wall time per method
    tradeoff.png / .pdf    mean benign/pseudo-harmful refusal rate vs mean harmful ASR
    losses.png / .pdf      training loss curves

Already-finished stages are reused (a trained adapter is not retrained, evaluation resumes), so
re-running the same command after an interruption continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
METHODS = ("sft", "psft", "trigger_sft", "rr", "mosr", "mosr_no_weight", "mosr_no_aug")


def train_method(method: str, out: Path, steps: int | None, overrides: list[str]) -> dict[str, Any]:
    """Train ``experiments/<method>.yaml`` into ``out`` unless its adapter exists; returns a summary row."""
    from mosr.config import apply_overrides
    from mosr.io import read_json
    from mosr.train import TrainConfig, train

    cfg = TrainConfig.load(HERE / f"{method}.yaml")
    cfg = TrainConfig.from_dict(apply_overrides(cfg.to_dict(), overrides))
    if steps is not None:
        cfg.steps = steps
    t0 = time.perf_counter()
    if not (out / "adapter" / "adapter_config.json").is_file():
        from mosr.cli.train import draw_weights
        from mosr.train.checkpoint import latest_checkpoint

        train(cfg, out, resume=latest_checkpoint(out) is not None, on_data=lambda _data, run: draw_weights(run))
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    data = read_json(out / "data.json")
    return {"method": method, "steps": len(rows), "batch": data["batch"], "examples": data["examples"],
            "train_s": round(sum(r["seconds"] for r in rows), 1), "s_per_step": round(
                sorted(r["seconds"] for r in rows)[len(rows) // 2], 2) if rows else None,
            "first": rows[0] if rows else {}, "last": rows[-1] if rows else {}, "invocation_s": round(
                time.perf_counter() - t0, 1)}


def evaluate_adapter(model: str, adapter: Path | None, out: Path, sets: list[str], n: int,
                     max_new_tokens: int) -> Any:
    from mosr.evaluation.run import EvalConfig, evaluate

    cfg = EvalConfig(model=model, adapter=str(adapter) if adapter else None, sets=sets, n=n,
                     max_new_tokens=max_new_tokens, seed=0)
    return evaluate(model, cfg, out=out).run


def plot_losses(logs: dict[str, list[dict[str, Any]]], stem: Path) -> None:
    import matplotlib.pyplot as plt

    from mosr.plots import STYLE, save_figure

    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.8))
        for name, rows in logs.items():
            steps = [r["step"] for r in rows]
            if "erase" in rows[0]:
                axes[0].plot(steps, [r["erase"] for r in rows], label=f"{name} erase")
                axes[0].plot(steps, [r["retain"] for r in rows], ls="--", label=f"{name} retain")
            else:
                axes[1].plot(steps, [r["loss"] for r in rows], label=name)
        axes[0].set(title="erasure methods: L_erase (—), L_retain (--)", xlabel="step")
        axes[1].set(title="SFT baselines: total NLL", xlabel="step")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, frameon=False)
        fig.tight_layout()
        save_figure(fig, stem)


def training_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | steps | batch (kinds) | s/step (median) | first loss | last loss | last erase | "
             "last retain | last aug / NLL |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        last, first = r["last"], r["first"]
        kinds = ", ".join(f"{k} {v}" for k, v in r["batch"].items())
        tail = last.get("aug") if "aug" in last else last.get("nll_refusal")
        lines.append(f"| {r['method']} | {r['steps']} | {kinds} | {r['s_per_step']} | {first.get('loss', 0):.3f} | "
                     f"{last.get('loss', 0):.3f} | {_fmt(last.get('erase'))} | {_fmt(last.get('retain'))} | "
                     f"{_fmt(tail)} |")
    return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--out", default="runs/experiments")
    p.add_argument("--steps", type=int, default=None, help="override every config's steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--sets", nargs="+", default=["xstest-safe", "jbb-harmful"], help="evaluation sets")
    p.add_argument("--eval-n", type=int, default=40, help="seeded sample per evaluation set")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--no-base", action="store_true", help="do not evaluate the undefended base model")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from mosr.io import write_json, write_text

    summaries = []
    for m in args.methods:
        print(f"== train {m}", flush=True)
        summaries.append(train_method(m, out / f"train-{m}", args.steps, args.set))
    write_json(out / "training.json", summaries)
    write_text(out / "training.md", training_table(summaries))
    logs = {m: [json.loads(x) for x in (out / f"train-{m}" / "log.jsonl").read_text().splitlines() if x.strip()]
            for m in args.methods}
    plot_losses(logs, out / "losses")
    print(training_table(summaries))
    if args.no_eval:
        return 0
    from mosr.evaluation.run import compare
    from mosr.plots import plot_tradeoff

    paths = []
    if not args.no_base:
        print("== eval base", flush=True)
        evaluate_adapter(args.model, None, out / "eval-base", args.sets, args.eval_n, args.max_new_tokens)
        paths.append(out / "eval-base")
    for m in args.methods:
        print(f"== eval {m}", flush=True)
        evaluate_adapter(args.model, out / f"train-{m}" / "adapter", out / f"eval-{m}", args.sets, args.eval_n,
                         args.max_new_tokens)
        paths.append(out / f"eval-{m}")
    runs = compare(paths, out / "comparison")
    plot_tradeoff(runs, out / "tradeoff", title="Short-schedule demo (SmolLM2-135M, CPU)")
    print((out / "comparison.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
