"""Safety / over-refusal frontiers from any evaluation folders, and over-refusal verdicts at matched ASR.

Every point is a ``mosr eval`` run folder (``config.yaml``, ``responses.jsonl``, ``metrics.json``): a sweep's
step evaluations, a training-free intervention at several strengths (``mosr eval --ablate DIR``), the base
model. Its rows are judged again with the current judge (:func:`mosr.tradeoff.report.load_eval`, as the
trade-off study does), and every point is cut down to the prompts all points share, set by set (the paired
bootstrap needs identical prompts). Each method other than the reference (and the base model) is compared
with the reference as the trade-off study does (:mod:`mosr.tradeoff.frontier`): over-refusal of both
frontiers interpolated at the reference's operating ASR (or the nearest ASR both reach), with a paired 95%
bootstrap CI over prompts and a verdict (wins / ties / loses).

A spec (YAML; paths relative to the working directory)::

    title: "rr and mosr along the steps, Qwen2.5-Coder-0.5B-Instruct"
    harmful: [jbb-harmful, advbench]       # ASR = mean over these sets (macro)
    overrefusal: [xstest-safe, jbb-benign] # RR = mean refusal (refusal or degenerate) over these
    reference: rr                          # the method every other is compared with
    operating_point: rr@120                # optional: a label of the reference; default its lowest-ASR point
    box: {asr: 10, rr: base}               # optional: the target box (ASR ≤ 10, RR ≤ the base model's RR)
    bootstrap: 1000                        # optional: bootstrap replicates (default 1000)
    seed: 0                                # optional: seed of the bootstrap draws
    envelope: true                         # optional: compare each method by its Pareto envelope
    max_nll: 2.6                           # optional: points with a higher capability NLL (degraded) are
                                           # drawn but never compared, nor closest to the box
    methods:                               # method -> its points; `knob` orders the points of a line
      base: [{label: base, eval: runs/qwen-coder/eval-base}]   # "base": the base model (a marker)
      rr: [{label: rr@40, eval: runs/qwen-sweep/rr-s120/eval-step-40, knob: 40},
           {label: rr@120, eval: runs/qwen-sweep/rr-s120/eval, knob: 120}]
      fr-ablation: [{label: "λ=0.5", eval: runs/qwen-fr/l05, knob: 0.5}]

Writes ``frontier.json`` (every point with per-set Wilson CIs, the matched-ASR comparisons, the closest
point of each method to the box, provenance), ``frontier.md`` and ``frontier.png`` / ``.pdf`` to ``--out``.

    python experiments/frontier.py --spec experiments/frontiers/qwen-sweep.yaml \\
        --out experiments/results/qwen-coder/frontier-sweep
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np
import yaml

from mosr.errors import MosrError
from mosr.io import script_provenance, write_json, write_text
from mosr.stats import wilson
from mosr.tradeoff.frontier import (
    Groups,
    Point,
    boot_rate,
    bootstrap_draws,
    box_distance,
    detectable,
    envelope,
    matched_asr,
    matched_difference,
    restrict_to_shared,
    verdict,
)

KEYS = (
    "title",
    "harmful",
    "overrefusal",
    "reference",
    "operating_point",
    "box",
    "bootstrap",
    "seed",
    "envelope",
    "max_nll",
    "methods",
)
POINT_KEYS = ("label", "eval", "knob")
BOX_KEYS = ("asr", "rr")
BASE = "base"  # the method name of the base model: drawn as a marker, not compared


def fail(msg: str) -> NoReturn:
    raise SystemExit(f"frontier: {msg}")


class Entry(NamedTuple):
    """One point of the spec (a NamedTuple: the tests load this script without registering it as a module)."""

    method: str
    label: str
    folder: Path
    knob: float | None


def _names(spec: dict[str, Any], key: str) -> list[str]:
    v = spec.get(key)
    if not isinstance(v, list) or not v or not all(isinstance(s, str) for s in v):
        fail(f"spec key {key!r} must be a non-empty list of set names, got {v!r}")
    return list(v)


def read_spec(path: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec with ``overrides`` (command-line keys) in place, checked: known keys, set lists, methods with
    their points, reference, box."""
    if not path.is_file():
        fail(f"no spec file {path}")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        fail(f"{path} is not valid YAML: {' '.join(str(e).split())}")
    if not isinstance(spec, dict):
        fail(f"{path} must hold a mapping with keys {list(KEYS)}")
    spec.update(overrides or {})
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        fail(f"unknown spec key(s) {unknown} (known: {', '.join(KEYS)})")
    _names(spec, "harmful")
    _names(spec, "overrefusal")
    methods = spec.get("methods")
    if not isinstance(methods, dict) or not methods:
        fail("spec key 'methods' must map method names to lists of points")
    ref = spec.get("reference")
    if ref not in methods or ref == BASE:
        fail(f"reference {ref!r} must be one of the methods {[m for m in methods if m != BASE]}")
    for key, default in (("bootstrap", 1000), ("seed", 0)):
        v = spec.setdefault(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < (20 if key == "bootstrap" else 0):
            fail(f"spec key {key!r} must be an integer{' ≥ 20' if key == 'bootstrap' else ' ≥ 0'}, got {v!r}")
    if spec.setdefault("max_nll", None) is not None and not _number(spec["max_nll"]):
        fail(f"spec key 'max_nll' must be a number (the NLL above which a point is degraded), got {spec['max_nll']!r}")
    if not isinstance(spec.setdefault("envelope", False), bool):
        fail(f"spec key 'envelope' must be true or false, got {spec['envelope']!r}")
    box = spec.get("box")
    if box is not None:
        if not isinstance(box, dict) or set(box) != set(BOX_KEYS):
            fail(f"spec key 'box' must be {{asr: <number>, rr: <number> or base}}, got {box!r}")
        if not _number(box["asr"]) or not (_number(box["rr"]) or box["rr"] == BASE):
            fail(f"box values must be numbers (rr may be 'base'), got {box!r}")
        if box["rr"] == BASE and BASE not in methods:
            fail("box rr: base needs a method named 'base' (the base model's evaluation)")
    return spec


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def entries(spec: dict[str, Any]) -> list[Entry]:
    """Every point of the spec, labels unique; a line's points in knob order where every one has a knob."""
    out: list[Entry] = []
    for method, pts in spec["methods"].items():
        if not isinstance(pts, list) or not pts:
            fail(f"method {method!r} must have a non-empty list of points ({{label, eval, knob}})")
        got = []
        for e in pts:
            if not isinstance(e, dict):
                fail(f"method {method!r}: a point must be a mapping {{label, eval, knob}}, got {e!r}")
            unknown = sorted(set(e) - set(POINT_KEYS))
            if unknown:
                fail(f"method {method!r}: unknown point key(s) {unknown} (known: {', '.join(POINT_KEYS)})")
            if e.get("label") is None or not isinstance(e.get("eval"), str):
                fail(f"method {method!r}: every point needs a label and an eval folder, got {e!r}")
            knob = e.get("knob")
            if knob is not None and not _number(knob):
                fail(f"method {method!r}, point {e['label']!r}: knob must be a number, got {knob!r}")
            got.append(Entry(str(method), str(e["label"]), Path(e["eval"]), None if knob is None else float(knob)))
        if method == BASE and len(got) != 1:
            fail(f"method 'base' (the base model) takes one point, got {len(got)}")
        if all(g.knob is not None for g in got):
            got.sort(key=lambda g: float(g.knob or 0))
        out += got
    dup = sorted(label for label, k in Counter(e.label for e in out).items() if k > 1)
    if dup:
        fail(f"point labels must be unique, repeated: {dup}")
    return out


def load(e: Entry, sets: list[str]) -> Point:
    """One folder as a :class:`Point` (name = label), judged again; one-line errors for what is missing."""
    from mosr.tradeoff.report import load_finished

    try:
        return load_finished(e.folder, e.label, e.method, sets)
    except MosrError as err:
        fail(f"{e.label} ({e.method}): {err}")


def point_row(e: Entry, p: Point, g: Groups, draws: dict[str, np.ndarray], n_loaded: dict[str, int]) -> dict[str, Any]:
    a, r = boot_rate(p, g.harmful, draws, False), boot_rate(p, g.overrefusal, draws, True)
    per_set = {}
    for s in [*g.harmful, *g.overrefusal]:
        n, answered = len(p.answered[s]), int(p.answered[s].sum())
        k = answered if s in g.harmful else n - answered
        lo, hi = wilson(k, n)
        per_set[s] = {
            "rate": "ASR" if s in g.harmful else "RR",
            "value": round(100 * k / n, 2),
            "ci": [round(100 * lo, 2), round(100 * hi, 2)],
            "k": k,
            "n": n,
        }
    return {
        "method": e.method,
        "label": e.label,
        "knob": e.knob,
        "eval": str(e.folder),
        "asr": round(p.asr(g.harmful), 2),
        "asr_ci": [round(float(np.percentile(a, q)), 2) for q in (2.5, 97.5)],
        "rr": round(p.rr(g.overrefusal), 2),
        "rr_ci": [round(float(np.percentile(r, q)), 2) for q in (2.5, 97.5)],
        "sets": per_set,
        "n_loaded": n_loaded,
        "nll": None if p.nll is None else round(p.nll, 4),
        "answered_on_topic": on_topic_share(e.folder, p.ids, g.overrefusal),
    }


def on_topic_share(folder: Path, ids: dict[str, list[str]], sets: list[str]) -> float | None:
    """Capability on benign prompts: the share (%) of ``sets``' prompts (restricted to ``ids``) that the
    judge calls answered AND whose answer shares a content word with the prompt
    (:func:`mosr.evaluation.metrics.on_topic`), macro-averaged over the sets."""
    from mosr.evaluation.judge import Verdict, judge
    from mosr.evaluation.metrics import on_topic, subset_name
    from mosr.io import read_rows

    wanted = {(s, i) for s in sets for i in ids[s]}
    hits: dict[str, list[int]] = {s: [] for s in sets}
    rows = [r for r in read_rows(folder / "responses.jsonl") if r.get("nll") is None]
    labels: dict[str, set[str]] = {}
    for r in rows:
        labels.setdefault(r["set"], set()).add(r["label"])
    for r in rows:  # subsets named as judge_rows names them (a set that mixes labels: one subset per label)
        key = (subset_name(r["set"], r["label"], labels[r["set"]]), r.get("id", ""))
        if key in wanted:
            text, prompt = r.get("response") or "", r.get("prompt") or ""
            hits[key[0]].append(int(judge(text, prompt=prompt) is Verdict.COMPLIANCE and on_topic(prompt, text)))
    if any(not v for v in hits.values()):
        return None
    return round(100 * float(np.mean([np.mean(v) for v in hits.values()])), 2)


def _clean(o: Any) -> Any:
    """NaN → None, for strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def degraded(p: Point, method: str, max_nll: float | None) -> bool:
    """A point whose capability NLL is above ``max_nll`` (the base model never is)."""
    return max_nll is not None and method != BASE and (p.nll is None or p.nll > max_nll)


def analyse(spec: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    """Load every point, restrict to the shared prompts, compare every method with the reference.
    ``partial``: leave out the points whose evaluation has not finished (listed under ``skipped``)."""
    g = Groups(_names(spec, "harmful"), _names(spec, "overrefusal"))
    sets = [*g.harmful, *g.overrefusal]
    es = entries(spec)
    skipped = [e.label for e in es if partial and not (e.folder / "metrics.json").is_file()]
    es = [e for e in es if e.label not in skipped]
    if spec["reference"] not in {e.method for e in es}:
        fail(f"the reference {spec['reference']!r} has no finished point")
    loaded = [load(e, sets) for e in es]
    n_loaded = [{s: len(p.answered[s]) for s in sets} for p in loaded]
    try:
        points, n = restrict_to_shared(loaded, sets)
    except MosrError as err:
        fail(str(err))
    try:
        draws = bootstrap_draws(points, sets, spec["bootstrap"], spec["seed"])
    except MosrError as err:
        fail(str(err))
    by_method: dict[str, list[Point]] = {}
    for e, p in zip(es, points):
        if not degraded(p, e.method, spec["max_nll"]):  # degraded points are drawn, never compared
            by_method.setdefault(e.method, []).append(p)
    rows = [point_row(e, p, g, draws, nl) for e, p, nl in zip(es, points, n_loaded)]
    for row, e, p in zip(rows, es, points):
        row["degraded"] = degraded(p, e.method, spec["max_nll"])
    if spec["envelope"]:  # compare each method by its envelope; the rows say which points are on it
        by_method = {m: envelope(pts, g) for m, pts in by_method.items()}
        kept = {p.name for pts in by_method.values() for p in pts}
        for row in rows:
            row["on_envelope"] = row["label"] in kept
    ref_name = spec["reference"]
    ref = by_method[ref_name]
    op_label = spec.get("operating_point")
    if op_label is None:
        op = min(ref, key=lambda p: (p.asr(g.harmful), p.rr(g.overrefusal)))
        op_why = "the reference's lowest-ASR point"
    else:
        named = [p for p in ref if p.name == str(op_label)]
        if not named:
            fail(f"operating_point {op_label!r} is not a point of the reference {ref_name!r}: {[p.name for p in ref]}")
        op, op_why = named[0], "given in the spec"
    target = op.asr(g.harmful)
    matched = {}
    for m, curve in by_method.items():
        if m in (ref_name, BASE):
            continue
        at, why = matched_asr(curve, ref, target, g)
        d = matched_difference(curve, ref, at, g, draws)
        d["at_reason"] = why
        d["verdict"] = verdict(d)
        d["detectable"] = detectable(curve, ref, at, g)
        matched[m] = d
    res: dict[str, Any] = {
        "title": spec.get("title"),
        "harmful": g.harmful,
        "overrefusal": g.overrefusal,
        "reference": ref_name,
        "operating_point": {
            "label": op.name,
            "asr": round(target, 2),
            "rr": round(op.rr(g.overrefusal), 2),
            "why": op_why,
        },
        "n": n,
        "bootstrap": spec["bootstrap"],
        "seed": spec["seed"],
        "points": rows,
        "matched": matched,
        "envelope": spec["envelope"],
        "max_nll": spec["max_nll"],
        "skipped": skipped,
    }
    box = spec.get("box")
    if box is not None:
        rr_max = by_method[BASE][0].rr(g.overrefusal) if box["rr"] == BASE else float(box["rr"])  # checked: base exists
        b = {"asr": float(box["asr"]), "rr": rr_max}
        closest = {}
        for m in by_method:
            best = min(
                (r for r in rows if r["method"] == m and not r["degraded"]),
                key=lambda r: box_distance(r["asr"], r["rr"], b),
            )
            closest[m] = {
                "label": best["label"],
                "asr": best["asr"],
                "rr": best["rr"],
                "distance": round(box_distance(best["asr"], best["rr"], b), 2),
            }
        res["box"] = {
            "asr": b["asr"],
            "rr": round(b["rr"], 2),
            "rr_from": "the base model's RR" if box["rr"] == BASE else "the spec",
            "closest": closest,
        }
    return _clean(res)


def _opt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _ci(v: float | None, ci: list[float | None]) -> str:
    if v is None:
        return "–"
    if ci[0] is None or ci[1] is None:
        return f"{v:.1f} [–]"
    return f"{v:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def markdown(res: dict[str, Any]) -> str:
    sets = [*res["harmful"], *res["overrefusal"]]
    op = res["operating_point"]
    lines = [
        f"# {res['title']}",
        "",
        "Every point judged again with the current judge (`mosr.evaluation.judge`); every point restricted to the "
        "prompts all points share. Prompts per set: "
        + ", ".join(f"{s} {k}" for s, k in res["n"].items())
        + f". ASR = mean over {', '.join(res['harmful'])}; over-refusal RR = mean refusal (refusal or degenerate) "
        f"over {', '.join(res['overrefusal'])}. Per-set CIs: Wilson 95%; ASR / RR CIs: 95% bootstrap over prompts, "
        f"{res['bootstrap']} replicates (seed {res['seed']}), the same draws for every point (paired).",
        "",
        *([f"Not finished, left out (`--partial`): {', '.join(res['skipped'])}.", ""] if res.get("skipped") else []),
        *(
            [f"Points with a capability NLL above {res['max_nll']} are degraded (‡): drawn, never compared.", ""]
            if res.get("max_nll") is not None
            else []
        ),
        *(
            [
                "Matched-ASR comparisons use each method's envelope: the points no other point of the same "
                "method beats on both ASR and RR (points off it are marked †).",
                "",
            ]
            if res.get("envelope")
            else []
        ),
        "## Points",
        "",
        "| method | point | knob | ASR [CI] | RR [CI] | " + " | ".join(sets) + " | NLL | answered on topic |",
        "|" + "---|" * (len(sets) + 7),
    ]
    for r in res["points"]:
        knob = "–" if r["knob"] is None else f"{r['knob']:g}"
        cells = [_ci(r["sets"][s]["value"], r["sets"][s]["ci"]) for s in sets]
        label = r["label"] + ("" if r.get("on_envelope", True) else " †") + (" ‡" if r.get("degraded") else "")
        lines.append(
            f"| {r['method']} | {label} | {knob} | {_ci(r['asr'], r['asr_ci'])} | {_ci(r['rr'], r['rr_ci'])} | "
            + " | ".join(cells)
            + f" | {r['nll'] if r['nll'] is not None else '–'} | {_opt(r.get('answered_on_topic'))} |"
        )
    cut = [
        f"{r['label']} ({', '.join(f'{s} {k}' for s, k in r['n_loaded'].items() if k != res['n'][s])})"
        for r in res["points"]
        if any(k != res["n"][s] for s, k in r["n_loaded"].items())
    ]
    if cut:
        lines += ["", "Points evaluated on more prompts, cut down to the shared ones: " + "; ".join(cut) + "."]
    lines += [
        "",
        f"## Over-refusal at matched ASR, against {res['reference']}",
        "",
        f"Operating point of {res['reference']}: {op['label']} (ASR {op['asr']:.1f}, RR {op['rr']:.1f}; {op['why']}). "
        "Difference = method − reference, both frontiers interpolated linearly in ASR; negative = less over-refusal "
        "at the same ASR. Replicates where the ASR falls outside either bootstrapped frontier are dropped. "
        "Detectable: the smallest RR difference (points) detected with 80% power at two-sided 5%, paired (McNemar "
        "on the two points nearest the matched ASR) and unpaired, from the sizes above.",
        "",
        "| method | at ASR | why this ASR | RR difference [95% CI] | replicates (dropped) | verdict "
        "| detectable: paired / unpaired (points compared) |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, d in res["matched"].items():
        det = d["detectable"]
        det_s = "–" if det is None else f"{det['paired']:.1f} / {det['unpaired']:.1f} ({', '.join(det['points'])})"
        at = "–" if d["at_asr"] is None else f"{d['at_asr']:.1f}"
        lines.append(
            f"| {m} | {at} | {d['at_reason']} | {_ci(d['difference'], d['ci'])} | {d['replicates']} ({d['dropped']}) "
            f"| {d['verdict']} | {det_s} |"
        )
    if not res["matched"]:
        lines.append("| – | | | | | no method besides the reference and the base model | |")
    box = res.get("box")
    if box:
        lines += [
            "",
            f"## Closest point to the box ASR ≤ {box['asr']:.1f}, RR ≤ {box['rr']:.1f} (RR from {box['rr_from']})",
            "",
            "| method | point | ASR | RR | distance (points; 0 = inside) |",
            "|---|---|---|---|---|",
        ]
        for m, c in box["closest"].items():
            lines.append(f"| {m} | {c['label']} | {c['asr']:.1f} | {c['rr']:.1f} | {c['distance']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="the YAML spec (see above)")
    p.add_argument("--out", required=True, help="folder for frontier.json, frontier.md, frontier.png")
    p.add_argument("--partial", action="store_true", help="leave out points whose evaluation has not finished")
    p.add_argument("--reference", default=None, help="override the spec's reference method")
    p.add_argument("--operating-point", default=None, help="override the spec's operating point (a reference label)")
    args = p.parse_args(argv)
    provenance = script_provenance()  # the git state at the start
    spec_path = Path(args.spec)
    overrides: dict[str, Any] = {}
    if args.reference is not None:  # another reference: the spec's operating point is not one of its points
        overrides = {"reference": args.reference, "operating_point": args.operating_point}
    elif args.operating_point is not None:
        overrides = {"operating_point": args.operating_point}
    spec = read_spec(spec_path, overrides)
    spec.setdefault("title", spec_path.stem)
    res = analyse(spec, partial=args.partial)
    out = Path(args.out)
    write_json(out / "frontier.json", {"spec": str(spec_path), **res, **provenance})
    md = markdown(res)
    write_text(out / "frontier.md", md)
    from mosr.plots.tradeoff import plot_frontier_points

    plot_frontier_points(res, out / "frontier")
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
