"""Capture cost vs a bare forward pass, on the bundled model.

    python benchmarks/capture.py                 # 256 XSTest prompts, all layers, last position
    python benchmarks/capture.py --stream-n 10000  # + peak RSS of a 10k-prompt streamed capture
    python benchmarks/capture.py --device cuda --dtype bfloat16   # on a GPU (benchmarks/gpu_check.sh)

Every variant runs over the *same* length-sorted batches in one process, interleaved over ``--repeats``
rounds (median reported), so machine noise hits all of them alike:

- bare: ``model(**batch)`` (logits only, no hidden states) — the baseline;
- capture: ``mosr.capture`` end to end (tokenisation + hooks + position selection);
- hooks-forward: the hooked forward alone on the pre-built batches;
- nnsight: an nnsight trace saving every layer's output;
- output_hidden_states: ``model(**batch, output_hidden_states=True)``.
Results go to stdout and ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import mosr
from mosr import datasets
from mosr.batching import make_batches
from mosr.capture import _forward_hooks, _forward_nnsight, resolve_layers
from mosr.io import write_json


def timed(fn) -> float:  # noqa: ANN001
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def _sync() -> None:
    """Wait for queued GPU work, so a timer measures it (no-op on CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def load_prompts(n: int) -> mosr.PromptSet:
    try:
        return datasets.load("xstest", n=n, seed=0)
    except mosr.MosrError:
        return datasets.load("demo", n=n, seed=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stream-n", type=int, default=0, help="also measure peak RSS of a streamed capture of N prompts")
    ap.add_argument("--out", default="runs/bench/capture.json")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    ap.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default: float32)")
    ap.add_argument("--_stream-child", dest="stream_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stream_child:
        return stream_child(args)

    lm = mosr.load(args.model, device=args.device, dtype=args.dtype)
    prompts = load_prompts(args.n)
    layers = resolve_layers(lm, "all")
    # the pre-built batches already sit on the model's device (capture moves its own, inside its time)
    batches = [b.to(lm.device) for b in make_batches(lm, prompts, batch_size=args.batch_size)]
    tokens = int(sum(int(b.attention_mask.sum()) for b in batches))

    def bare() -> None:
        for b in batches:
            lm.model(**b.model_inputs(), use_cache=False)

    def hidden() -> None:
        for b in batches:
            lm.model(**b.model_inputs(), use_cache=False, output_hidden_states=True)

    variants = {
        "bare": bare,
        "capture": lambda: mosr.capture(lm, prompts, layers="all", batch_size=args.batch_size, progress=False),
        "hooks-forward": lambda: [_forward_hooks(lm, b, layers) for b in batches],
        "nnsight": lambda: [_forward_nnsight(lm, b, layers) for b in batches],
        "output_hidden_states": hidden,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": args.model,
        "device": str(lm.device),
        "dtype": args.dtype,
        "prompts": len(prompts),
        "tokens": tokens,
        "batch_size": args.batch_size,
        "layers": len(layers),
        "position": "last",
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "median_s": med,
        "all_s": times,
        "ratio_vs_bare": {k: med[k] / med["bare"] for k in med},
    }
    print(
        f"{args.model}: {len(prompts)} prompts, {tokens} tokens, batch {args.batch_size}, all {len(layers)} layers, "
        f"median of {args.repeats}"
    )
    for k in variants:
        print(f"  {k:22s} {med[k]:7.3f} s   x{med[k] / med['bare']:.3f} of bare forward")
    if args.stream_n:
        result["stream"] = stream_parent(args)
        s = result["stream"]
        print(
            f"  streamed capture of {s['prompts']} prompts x {s['layers']} layers: {s['wall_s']:.0f} s, "
            f"peak RSS {s['peak_rss_mb']:.0f} MB (model alone {s['rss_after_load_mb']:.0f} MB; the activations "
            f"in float32 would be {s['activations_fp32_mb']:.0f} MB)"
        )
    write_json(args.out, result)
    print(f"wrote {args.out}")


def stream_parent(args: argparse.Namespace) -> dict:
    out = Path(args.out).with_suffix(".stream.json")
    cmd = [
        sys.executable,
        __file__,
        "--model",
        args.model,
        "--stream-n",
        str(args.stream_n),
        "--out",
        str(out),
        "--_stream-child",
        str(Path(args.out).parent / "stream-store"),
    ]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def stream_child(args: argparse.Namespace) -> None:
    import resource
    import shutil

    lm = mosr.load(args.model, device="cpu")
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pool = datasets.load("rd-harmless-train") + datasets.load("rd-harmless-test")
    prompts = pool[: args.stream_n]
    shutil.rmtree(args.stream_child, ignore_errors=True)
    t0 = time.perf_counter()
    store = mosr.capture_to_store(lm, prompts, args.stream_child, layers="all", shard_size=1024, batch_size=32)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json(
        args.out,
        {
            "prompts": len(store),
            "layers": len(store.layers),
            "wall_s": wall,
            "peak_rss_mb": peak,
            "rss_after_load_mb": rss_load,
            "shard_size": 1024,
            "store_dtype": store.meta["dtype"],
            "activations_fp32_mb": len(store) * len(store.layers) * lm.d_model * 4 / 2**20,
        },
    )
    shutil.rmtree(args.stream_child, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
