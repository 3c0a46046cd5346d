"""``mosr capture``: hidden states of a data set into an ActivationStore."""

from __future__ import annotations

import argparse
import time

from mosr.cli._common import add_data_args, add_model_args, load_model, parse_layers, parse_position


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("capture", help="capture per-layer hidden states into an on-disk store")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--data", required=True, help="data set name (see `mosr datasets`) or a .jsonl file")
    p.add_argument("--n", type=int, default=None, help="seeded sample of n prompts")
    p.add_argument("--layers", default="all", help="'all', '5', '0,10,20' or '10-20'")
    p.add_argument("--position", default="last", help="last | mean | int offset (-1 = last)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--store-dtype", default="float16", help="float16 | bfloat16 | float32")
    p.add_argument("--out", required=True, help="store folder (resumes if it exists)")
    p.set_defaults(func=run)

    d = sub.add_parser("datasets", help="list the data sets mosr can load")
    add_data_args(d)
    d.set_defaults(func=list_sets)


def run(args: argparse.Namespace) -> int:
    from mosr import datasets
    from mosr.store import capture_to_store

    layers = parse_layers(args.layers)  # a malformed spec fails before the data and the model load
    prompts = datasets.load(args.data, data_dir=args.data_dir, n=args.n)
    lm = load_model(args)
    t0 = time.perf_counter()
    store = capture_to_store(
        lm,
        prompts,
        args.out,
        layers=layers,
        position=parse_position(args.position),
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        dtype=args.store_dtype,
    )
    acts = store.load()
    print(
        f"{store.path}: {len(store)} prompts x {len(store.layers)} layers x {lm.d_model} "
        f"({store.meta['dtype']}, {time.perf_counter() - t0:.1f}s)"
    )
    for label in sorted(set(store.labels)):
        rows = [i for i, lab in enumerate(store.labels) if lab == label]
        norms = acts[rows].float().norm(dim=-1).mean(0)
        print(
            f"  {label:15s} n={len(rows):5d}  mean |h| first/mid/last layer: "
            f"{norms[0]:.1f} / {norms[len(norms) // 2]:.1f} / {norms[-1]:.1f}"
        )
    return 0


def list_sets(args: argparse.Namespace) -> int:
    from mosr import datasets

    for name in datasets.names():
        spec = datasets.DATASETS.get(name)
        print(f"{name:22s} {spec.local if spec else '(bundled demo set)'}")
    return 0
