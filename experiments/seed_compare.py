"""Two methods over several training seeds, at one point of each run (e.g. the same step): the mean over seeds
of each method's ASR and over-refusal, and the difference with a 95% bootstrap CI over prompts (paired: the
same draws for every run) and seeds (resampled within each method), as the trade-off study does
(:func:`mosr.tradeoff.frontier.seed_difference`); plus each seed's own paired difference.

    python experiments/seed_compare.py --harmful jbb-harmful,advbench --overrefusal xstest-safe,jbb-benign \\
        --a mosr runs/qwen-sweep/mosr-b05-s120/eval-step-80 runs/qwen-seeds/mosr-b05-s120-seed2/eval-step-80 \\
        --b rr runs/qwen-sweep/rr-s120/eval-step-80 runs/qwen-seeds/rr-s120-seed2/eval-step-80 \\
        --out experiments/results/qwen-coder/seeds-step80

Each folder is a finished ``mosr eval`` run, judged again with the current judge; all runs are cut down to the
prompts they share. With ``--base FOLDER`` the base model's rates are listed beside them. The i-th folders of
``--a`` and ``--b`` are taken as the same seed for the per-seed rows. Writes ``seeds.json`` and ``seeds.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from mosr.errors import MosrError
from mosr.io import script_provenance, write_json, write_text
from mosr.tradeoff.frontier import Groups, Point, bootstrap_draws, restrict_to_shared, seed_difference, seed_spread

BOOTSTRAP = 2000


def fail(msg: str) -> NoReturn:
    raise SystemExit(f"seed_compare: {msg}")


def load(folder: Path, method: str, seed: int, sets: list[str]) -> Point:
    from mosr.tradeoff.report import load_finished

    try:
        return load_finished(folder, f"{method}-{seed}", method, sets, seed=seed)
    except MosrError as err:
        fail(str(err))


def compare(
    a: list[Path], b: list[Path], g: Groups, names: tuple[str, str], base: Path | None = None, seed: int = 0
) -> dict[str, Any]:
    sets = [*g.harmful, *g.overrefusal]
    pa = [load(f, names[0], i, sets) for i, f in enumerate(a)]
    pb = [load(f, names[1], i, sets) for i, f in enumerate(b)]
    pbase = [load(base, "base", 0, sets)] if base else []
    try:
        points, n = restrict_to_shared([*pa, *pb, *pbase], sets)
        draws = bootstrap_draws(points, sets, BOOTSTRAP, seed)
    except MosrError as err:
        fail(str(err))
    pa, pb, pbase = points[: len(a)], points[len(a) : len(a) + len(b)], points[len(a) + len(b) :]
    per_seed = [
        {"seed": i, **seed_difference([x], [y], g, draws, seed)}
        | {"a": [x.asr(g.harmful), x.rr(g.overrefusal)], "b": [y.asr(g.harmful), y.rr(g.overrefusal)]}
        for i, (x, y) in enumerate(zip(pa, pb))
    ]
    return {
        "a": {"method": names[0], "folders": [str(f) for f in a], **seed_spread(pa, g)},
        "b": {"method": names[1], "folders": [str(f) for f in b], **seed_spread(pb, g)},
        "base": {"folder": str(base), "asr": pbase[0].asr(g.harmful), "rr": pbase[0].rr(g.overrefusal)}
        if base
        else None,
        "difference": seed_difference(pa, pb, g, draws, seed),
        "per_seed": per_seed,
        "harmful": g.harmful,
        "overrefusal": g.overrefusal,
        "n": n,
        "bootstrap": BOOTSTRAP,
    }


def markdown(res: dict[str, Any], title: str) -> str:
    a, b, d = res["a"], res["b"], res["difference"]
    lines = [
        f"# {title}",
        "",
        f"ASR = mean over {', '.join(res['harmful'])}; RR = mean refusal (refusal or degenerate) over "
        f"{', '.join(res['overrefusal'])}; %. Prompts per set: "
        + ", ".join(f"{s} {k}" for s, k in res["n"].items())
        + f". CIs: 95% bootstrap over prompts (paired) and seeds, {res['bootstrap']} replicates.",
        "",
        "| method | seeds | ASR mean ± sd | RR mean ± sd | NLL |",
        "|---|---|---|---|---|",
    ]
    for m in (a, b):
        lines.append(
            f"| {m['method']} | {len(m['seeds'])} | {m['asr_mean']:.1f} ± {m['asr_sd']:.1f} | "
            f"{m['rr_mean']:.1f} ± {m['rr_sd']:.1f} | {m['nll_mean']} |"
        )
    if res["base"]:
        lines.append(f"| base model | – | {res['base']['asr']:.1f} | {res['base']['rr']:.1f} | |")
    lines += [
        "",
        f"**{a['method']} − {b['method']}**, over seeds: RR {d['rr_difference']:+.1f} "
        f"[{d['rr_ci'][0]:+.1f}, {d['rr_ci'][1]:+.1f}], ASR {d['asr_difference']:+.1f} "
        f"[{d['asr_ci'][0]:+.1f}, {d['asr_ci'][1]:+.1f}].",
        "",
        f"| seed | {a['method']} ASR / RR | {b['method']} ASR / RR | RR difference [CI] | ASR difference [CI] |",
        "|---|---|---|---|---|",
    ]
    for r in res["per_seed"]:
        lines.append(
            f"| {r['seed']} | {r['a'][0]:.1f} / {r['a'][1]:.1f} | {r['b'][0]:.1f} / {r['b'][1]:.1f} | "
            f"{r['rr_difference']:+.1f} [{r['rr_ci'][0]:+.1f}, {r['rr_ci'][1]:+.1f}] | "
            f"{r['asr_difference']:+.1f} [{r['asr_ci'][0]:+.1f}, {r['asr_ci'][1]:+.1f}] |"
        )
    lines += ["", "Folders: " + "; ".join(f"{m['method']}: " + ", ".join(m["folders"]) for m in (a, b)) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--harmful", required=True, help="comma-separated harmful sets (ASR)")
    p.add_argument("--overrefusal", required=True, help="comma-separated over-refusal sets (RR)")
    p.add_argument("--a", nargs="+", required=True, metavar="NAME_THEN_FOLDERS", help="method name, eval folders")
    p.add_argument("--b", nargs="+", required=True, metavar="NAME_THEN_FOLDERS", help="method name, eval folders")
    p.add_argument("--base", default=None, help="the base model's eval folder (listed, not compared)")
    p.add_argument("--title", default=None)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    provenance = script_provenance()
    for side in (args.a, args.b):
        if len(side) < 2:
            fail("--a and --b each take a method name and at least one eval folder")
    g = Groups([s for s in args.harmful.split(",") if s], [s for s in args.overrefusal.split(",") if s])
    res = compare(
        [Path(f) for f in args.a[1:]],
        [Path(f) for f in args.b[1:]],
        g,
        (args.a[0], args.b[0]),
        Path(args.base) if args.base else None,
    )
    res["provenance"] = provenance
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "seeds.json", res)
    write_text(out / "seeds.md", markdown(res, args.title or f"{args.a[0]} against {args.b[0]} over seeds"))
    print(f"wrote {out}/seeds.json, seeds.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
