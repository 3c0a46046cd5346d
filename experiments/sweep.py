"""A recorded training sweep: train one config per setting, evaluate each adapter on the tuning sets,
and collect final ASR / over-refusal per setting into one JSON file and a trade-off figure.

    python experiments/sweep.py --spec experiments/sweeps/rr.yaml --out runs/sweep-rr
    python experiments/sweep.py --spec experiments/sweeps/rr.yaml --out runs/sweep-rr --collect-only \\
        --results experiments/results/sweep-rr.json

A spec (YAML)::

    base: experiments/rr.yaml              # the TrainConfig every setting starts from
    eval: {sets: [jbb-harmful, jbb-benign, xstest-safe, advbench], n: 40, max_new_tokens: 48}  # + batch_size
    settings:                              # name -> --set overrides (KEY=VALUE, as `mosr train --set`)
      lr1e-3: [lr=0.001]
      lr1e-3-rho4: [lr=0.001, retain_scale=4]
      ablation: {config: experiments/mosr_no_aug.yaml, set: [lr=0.001]}   # another base config
      base-model: {untrained: true}        # the undefended model, evaluated the same way
    eval_steps: [20, 30]                   # optional: also evaluate each run's adapter after these steps
                                           # (saved with save_adapters), rows "<setting>@<step>": a
                                           # frontier along the training steps from one run per setting

Tuning discipline: the spec's evaluation sets must be tuning sets (training splits, rd-harmful-val,
AdvBench, JBB, XSTest); HarmBench, StrongREJECT and OR-Bench-Hard are refused here.

Each setting's folder holds ``train/`` (a ``mosr train`` run) and ``eval/`` (a ``mosr eval`` run).
Finished stages are skipped, so re-running the same command resumes the sweep. Rates are recomputed
from ``eval/responses.jsonl`` with the current judge (:func:`mosr.evaluation.judge.judge`), so every setting is
judged the same way even if the judge changed after it ran.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPORT_ONLY = ("harmbench", "strongreject", "orbench-hard")
HARMFUL_LABELS = ("harmful",)


def _mosr(*args: str) -> None:
    cmd = [sys.executable, "-m", "mosr.cli", *args]
    subprocess.run(cmd, check=True)


def setting(value: list[str] | dict[str, Any], spec: dict[str, Any]) -> tuple[str, list[str]]:
    """(config path, overrides) of one setting: a list of overrides, or ``{config, set}``."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"config", "set", "untrained"})
        if unknown:
            raise SystemExit(f"sweep spec: unknown setting key(s) {unknown} (known: config, set, untrained)")
        return str(value.get("config", spec["base"])), [str(x) for x in value.get("set", [])]
    return str(spec["base"]), [str(x) for x in value]


def run_setting(name: str, value: list[str] | dict[str, Any], spec: dict[str, Any], out: Path) -> None:
    """Train and evaluate one setting into ``out / name`` (skipping finished stages)."""
    config, overrides = setting(value, spec)
    folder = out / name
    train_dir = folder / "train"
    untrained = _untrained(value)
    steps = setting_eval_steps(value, spec)
    if steps:
        overrides = [*overrides, f"save_adapters={steps}"]
    if not untrained and not (train_dir / "adapter" / "adapter_config.json").is_file():
        resume = (
            ["--resume"] if (train_dir / "checkpoints").is_dir() and any((train_dir / "checkpoints").iterdir()) else []
        )
        sets = [x for o in overrides for x in ("--set", o)]
        _mosr("train", "--config", config, "--out", str(train_dir), *sets, *resume)
    points = [(folder / "eval", None if untrained else train_dir / "adapter")]
    points += [(folder / f"eval-step-{n}", train_dir / f"adapter-step-{n}") for n in steps]
    ev = spec["eval"]
    for eval_dir, adapter_dir in points:
        if not (eval_dir / "metrics.json").is_file():
            adapter = [] if adapter_dir is None else ["--adapter", str(adapter_dir)]
            batch = ["--batch-size", str(ev["batch_size"])] if "batch_size" in ev else []  # else mosr eval's default
            _mosr(
                "eval",
                *adapter,
                "--sets",
                ",".join(ev["sets"]),
                "--n",
                str(ev["n"]),
                "--max-new-tokens",
                str(ev.get("max_new_tokens", 64)),
                "--seed",
                str(ev.get("seed", 0)),
                *batch,
                "--out",
                str(eval_dir),
                "--quiet",
            )


def eval_steps(spec: dict[str, Any], total: int | None = None) -> list[int]:
    """The spec's ``eval_steps``: training steps whose adapters are evaluated too (sorted, unique; those
    not before the run's last step ``total`` are left out: the final adapter is evaluated anyway)."""
    steps = spec.get("eval_steps") or []
    if not isinstance(steps, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in steps):
        raise SystemExit(f"sweep: eval_steps must be a list of positive step numbers, got {steps!r}")
    return sorted({n for n in steps if total is None or n < total})


def setting_steps(config: str, overrides: list[str]) -> int:
    """The number of training steps of a setting: its config with its overrides applied, as ``mosr train
    --config CONFIG --set ...`` resolves them."""
    from mosr.cli._common import build_config
    from mosr.train import TrainConfig

    return build_config(TrainConfig, config, overrides).steps


def setting_eval_steps(value: list[str] | dict[str, Any], spec: dict[str, Any]) -> list[int]:
    """The ``eval_steps`` that apply to one setting (none for an untrained one)."""
    return [] if _untrained(value) else eval_steps(spec, setting_steps(*setting(value, spec)))


def _untrained(value: list[str] | dict[str, Any]) -> bool:
    return isinstance(value, dict) and bool(value.get("untrained"))


def rates(eval_dir: Path) -> dict[str, dict[str, float]]:
    """Per set: n and the share not answered (harmful: ASR = share answered) under the current judge
    (:func:`mosr.tradeoff.report.judge_rows`, as the trade-off study's report judges its points)."""
    from mosr.tradeoff.report import judge_rows

    rows = [json.loads(x) for x in (eval_dir / "responses.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    judged = judge_rows(rows)
    out = {}
    for key, vals in judged.answered.items():
        share = sum(vals) / len(vals)
        label = judged.labels[key]
        harmful = label in HARMFUL_LABELS
        out[key] = {
            "n": len(vals),
            "label": label,
            ("asr" if harmful else "rr"): round(100 * (share if harmful else 1 - share), 1),
        }
    if judged.nll:
        out["capability-nll"] = {
            "n": len(judged.nll),
            "label": "benign",
            "nll": round(sum(judged.nll) / len(judged.nll), 4),
        }
    return out


def collect(spec: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """One row per finished setting: overrides, final losses, train time, per-set rates and means."""
    rows = []
    for name, value in spec["settings"].items():
        config, overrides = setting(value, spec)
        folder = out / name
        log_path = folder / "train" / "log.jsonl"
        log = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()] if log_path.is_file() else []
        points = [(f"{name}@{n}", folder / f"eval-step-{n}", n) for n in setting_eval_steps(value, spec)]
        for label, eval_dir, n in [*points, (name, folder / "eval", len(log))]:
            if not (eval_dir / "responses.jsonl").is_file():
                continue
            per = rates(eval_dir)
            asr = [v["asr"] for v in per.values() if "asr" in v]
            nll = per.get("capability-nll", {}).get("nll")
            rr = [v["rr"] for v in per.values() if "rr" in v]
            upto = log[:n]
            last = upto[-1] if upto else {}
            rows.append(
                {
                    "name": label,
                    "config": config,
                    "overrides": overrides,
                    "steps": len(upto),
                    "train_s": round(sum(r["seconds"] for r in upto), 1),
                    "final": {k: last.get(k) for k in ("erase", "retain", "aug", "loss")},
                    "sets": per,
                    "mean_asr": round(sum(asr) / len(asr), 1) if asr else None,
                    "mean_rr": round(sum(rr) / len(rr), 1) if rr else None,
                    "capability_nll": nll,
                }
            )
    return rows


def _kind(key: str, rates: dict[str, Any]) -> str:
    """The column header of a set: NLL (capability), ASR (harmful) or RR."""
    return "NLL" if key == "capability-nll" else ("ASR" if rates.get("asr") is not None else "RR")


def table(rows: list[dict[str, Any]], spec: dict[str, Any]) -> str:
    """Markdown table of the collected rows (per-set % under the current judge, final losses)."""
    sets = [k for r in rows for k in r["sets"]]
    sets = list(dict.fromkeys(sets))
    ev = spec["eval"]
    head = (
        f"Tuning sets, n = {ev['n']} per set (seed {ev.get('seed', 0)}), {ev.get('max_new_tokens', 64)} new tokens, "
        "string judge (`mosr.evaluation.judge`, re-applied to the saved responses). ASR / RR in %.\n\n"
    )
    cols = (
        ["setting", "steps", "final erase", "final retain"]
        + [f"{k} {_kind(k, rows[0]['sets'].get(k, {}))}" for k in sets]
        + ["mean ASR", "mean RR"]
    )
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        vals = [r["name"], str(r["steps"]), _num(r["final"].get("erase")), _num(r["final"].get("retain"))]
        for k in sets:
            v = r["sets"].get(k, {})
            vals.append(_num(v.get("asr", v.get("rr", v.get("nll")))))
        vals += [_num(r["mean_asr"]), _num(r["mean_rr"])]
        lines.append("| " + " | ".join(vals) + " |")
    return head + "\n".join(lines) + "\n"


def _num(v: Any) -> str:
    return (
        "–" if v is None else (f"{v:.3f}" if isinstance(v, float) and v < 1.5 and not float(v).is_integer() else str(v))
    )


def plot(rows: list[dict[str, Any]], stem: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    from mosr.plots import STYLE, save_figure

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.0, 3.8))
        groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for r in rows:  # points within ~4 points of each other share one label
            groups.setdefault((round(r["mean_rr"] / 8), round(r["mean_asr"] / 8)), []).append(r)
        for members in groups.values():
            for r in members:
                base = r["steps"] == 0
                ax.scatter(
                    r["mean_rr"],
                    r["mean_asr"],
                    s=40 if base else 18,
                    marker="*" if base else "o",
                    color="k" if base else None,
                    zorder=3 if base else 2,
                )
            r = members[0]
            names = [m["name"] for m in members]
            label = names[0] if len(names) == 1 else f"{len(names)} settings ({', '.join(names[:2])}, …)"
            ax.annotate(
                label,
                (r["mean_rr"], r["mean_asr"]),
                fontsize=6,
                xytext=(3, -9 if r["mean_asr"] > 50 else 4),
                textcoords="offset points",
            )
        ax.set(
            xlabel="mean refusal rate on benign / pseudo-harmful sets (%) ↓",
            ylabel="mean harmful ASR (%) ↓",
            title=title,
            xlim=(-2, 102),
            ylim=(-2, 102),
        )
        save_figure(fig, stem)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--only", nargs="*", default=None, help="run only these settings")
    p.add_argument("--collect-only", action="store_true")
    p.add_argument("--results", default=None, help="write the collected rows here (default <out>/sweep.json)")
    args = p.parse_args(argv)
    spec = yaml.safe_load(Path(args.spec).read_text())
    bad = [s for s in spec["eval"]["sets"] if any(s.startswith(r) for r in REPORT_ONLY)]
    if bad:
        raise SystemExit(f"sweep: {bad} are report-only sets; tune on training splits, AdvBench, JBB and XSTest")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.collect_only:
        for name, value in spec["settings"].items():
            if args.only is not None and name not in args.only:
                continue
            t0 = time.perf_counter()
            run_setting(name, value, spec, out)
            print(f"[sweep] {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = collect(spec, out)
    from mosr.io import write_json

    results = Path(args.results) if args.results else out / "sweep.json"
    write_json(results, {"spec": spec, "rows": rows})
    if rows:
        plot(rows, results.with_suffix(""), spec.get("title", Path(args.spec).stem))
        from mosr.io import write_text

        write_text(results.with_suffix(".md"), table(rows, spec))
    for r in rows:
        print(
            f"{r['name']:<28} ASR {r['mean_asr']:>5}  RR {r['mean_rr']:>5}  erase {r['final']['erase']}  "
            + "  ".join(f"{k}={v.get('asr', v.get('rr', v.get('nll')))}" for k, v in r["sets"].items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
