"""``mosr probe`` (the representation study from a config) and ``mosr lens`` (LogitLens read-out)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mosr.cli._common import add_data_args, add_model_args, add_set_arg, build_config, load_model, parse_layers
from mosr.io import write_provenance
from mosr.stats import fmt_auroc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe",
        help="representation study: per-layer probes, geometry, LogitLens, figures",
        description="Run the representation study of a config (see probes/*.yaml) and write "
        "results.json, prompts.jsonl, probes/, figures/ and the resolved config to --out.",
    )
    p.add_argument("--config", default=None, help="study config (YAML/JSON), e.g. probes/smollm2.yaml")
    p.add_argument("--out", required=True, help="run folder (responses.jsonl there is reused on a re-run)")
    add_set_arg(p, "--set probe.cv=5 --set benign.demo-benign=40")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--layer", type=int, default=None, help="override the boundary / PCA layer (default: best probe)")
    p.add_argument("--no-risk", action="store_true", help="skip generating responses (over-refusal risk)")
    p.add_argument("--no-figures", action="store_true", help="skip figures")
    p.add_argument(
        "--replot",
        action="store_true",
        help="only redraw the figures of the finished run in --out (no model, no recomputation)",
    )
    p.set_defaults(func=run_probe)

    lens = sub.add_parser(
        "lens",
        help="LogitLens: top tokens and refusal/compliance mass per layer",
        description="Decode every layer's last-prompt-token state with the final norm and "
        "unembedding; print the top tokens per layer.",
    )
    add_model_args(lens)
    add_data_args(lens)
    src = lens.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    src.add_argument("--data", help="data set name or .jsonl file")
    lens.add_argument("--n", type=int, default=None, help="seeded sample of n prompts from --data")
    lens.add_argument("--layers", default="all", help="'all', '5', '0,10,20' or '10-20'")
    lens.add_argument("--top-k", type=int, default=5)
    lens.add_argument("--batch-size", type=int, default=16)
    lens.add_argument("--show", type=int, default=3, help="prompts whose per-layer tokens are printed")
    lens.add_argument("--out", default=None, help="folder for lens.json and figures")
    lens.set_defaults(func=run_lens)


def run_probe(args: argparse.Namespace) -> int:
    from mosr.errors import ConfigError
    from mosr.represent.report import plot_representation_study
    from mosr.represent.study import RepresentationConfig, run_representation_study

    if args.replot:
        for path in plot_representation_study(args.out):
            print(path)
        return 0
    if args.config is None:
        raise ConfigError("--config is required (except with --replot)")
    flags = {
        "model": args.model,
        "adapter": args.adapter,
        "dtype": args.dtype,
        "device": args.device,
        "data_dir": args.data_dir,
        "layer": args.layer,
        "risk": False if args.no_risk else None,
        "figures": False if args.no_figures else None,
    }
    config = build_config(RepresentationConfig, args.config, args.set, flags)
    res = run_representation_study(config, args.out)
    write_provenance(args.out, args.argv)
    s = res["summary"]
    print(f"{args.out}: {res['model']}, {res['n_layers']} layers; prompts per set: {res['n_per_set']}")
    print(
        f"  chosen layer {s['chosen_layer']}: held-out accuracy {s['accuracy']:.3f} "
        f"[{s['accuracy_ci'][0]:.3f}, {s['accuracy_ci'][1]:.3f}], AUROC {fmt_auroc(s['auroc'], *s['auroc_ci'])}"
    )
    for name, v in s["fraction_malicious_at_layer"].items():
        lo, hi = s["fraction_malicious_ci_at_layer"][name]
        print(f"  classified malicious at layer {s['chosen_layer']}: {name:18s} {v:.3f} [{lo:.3f}, {hi:.3f}]")
    if "risk" in s:
        r = s["risk"]
        b = r["boundary_score"]
        print(
            f"  over-refusal risk: {r['n_refused']}/{r['n']} pseudo-harmful prompts refused; AUROC of the "
            f"boundary score {fmt_auroc(b['auroc'], *b['ci'])}"
        )
    print(f"  timings (s): {res['timings_seconds']}")
    return 0


def run_lens(args: argparse.Namespace) -> int:
    from mosr import datasets, plots
    from mosr.io import write_json
    from mosr.represent.lens import logit_lens

    layers = parse_layers(args.layers)  # a malformed spec fails before the data and the model load
    prompts = args.prompt if args.prompt else datasets.load(args.data, data_dir=args.data_dir, n=args.n).prompts
    lm = load_model(args)
    res = logit_lens(lm, prompts, k=args.top_k, layers=layers, batch_size=args.batch_size)
    for i in range(min(args.show, len(prompts))):
        if i:
            print()  # a blank line between prompts, none before the first
        print(f"[{i}] {prompts[i]!r}")
        print(f"  {'layer':>5}  {'refusal-compliance':>18}  top-{args.top_k} tokens")
        for j, layer in enumerate(res.layers):
            toks = " ".join(repr(t) for t in res.top_tokens[i][j])
            print(f"  {layer:5d}  {float(res.score[i, j]):18.4f}  {toks}")
    mean = res.mean_score()
    print(
        f"\nmean refusal-compliance mass over {len(prompts)} prompt(s), first/middle/last layer: "
        f"{float(mean[0]):.4f} / {float(mean[len(mean) // 2]):.4f} / {float(mean[-1]):.4f}"
    )
    if args.out:
        out = Path(args.out)
        write_json(out / "lens.json", {"model": lm.name, "top_k": args.top_k} | res.to_dict())
        plots.plot_lens_heatmap(
            res.layers, {"prompts": mean.tolist()}, out / "lens_heatmap", n={"prompts": len(prompts)}
        )
        shown = min(3, len(prompts))
        plots.plot_lens_table(
            [
                {
                    "title": f"prompt {i}",
                    "prompt": prompts[i],
                    "tokens": res.top_tokens[i],
                    "score": res.score[i].tolist(),
                }
                for i in range(shown)
            ],
            res.layers,
            out / "lens_table",
        )
        print(f"wrote {out / 'lens.json'} and figures")
    return 0
