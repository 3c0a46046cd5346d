"""Generation throughput of the evaluation harness vs naive ``model.generate`` loops, and score mode.

Same prompts, same model, one process, greedy decoding with a KV cache everywhere:

* ``harness``: :func:`mosr.generate.generate_full` (tokenize once, length-sorted left-padded batches);
* ``naive-batched``: batches in input order, tokenizer padding, one ``model.generate`` per batch;
* ``naive-single``: one ``model.generate`` per prompt (no padding at all);
* ``score``: :func:`mosr.evaluation.judge.refusal_scores` (one forward pass per batch, no generation).

Run it alone on the machine (it uses the CPU for minutes)::

    python benchmarks/generation.py --n 64 --out runs/bench/generation.json
    python benchmarks/generation.py --device cuda --dtype bfloat16 --skip-single   # on a GPU (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import mosr  # first: sets OMP_WAIT_POLICY before torch loads OpenMP


def naive_batched(lm, prompts: list[str], max_new_tokens: int, batch_size: int) -> tuple[list[str], int]:  # noqa: ANN001
    from mosr.generate import cut_at_stop, stop_token_ids

    tok, stops = lm.tokenizer, stop_token_ids(lm)
    tok.padding_side = "left"
    texts = lm.format_chat(prompts)
    out, n_tokens = [], 0
    for s in range(0, len(texts), batch_size):
        enc = tok(texts[s : s + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
        with torch.inference_mode():
            seq = lm.model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=stops
            )
        for row in seq[:, enc.input_ids.shape[1] :].tolist():
            kept, count = cut_at_stop(row, stops)
            out.append(tok.decode(kept, skip_special_tokens=True).strip())
            n_tokens += count
    return out, n_tokens


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN201
    _sync()
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    _sync()
    return result, time.perf_counter() - t0


def _sync() -> None:
    """Wait for queued GPU work, so a timer measures it (no-op on CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--set", default="xstest")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--skip-single", action="store_true", help="skip the slow one-prompt-at-a-time loop")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default: float32)")
    p.add_argument("--out", default="runs/bench/generation.json")
    args = p.parse_args(argv)

    from mosr.evaluation.config import load_set
    from mosr.evaluation.judge import refusal_scores
    from mosr.generate import generate_full
    from mosr.io import write_json

    lm = mosr.load(args.model, device=args.device, dtype=args.dtype)
    prompts = load_set(args.set, n=args.n, seed=0).prompts
    generate_full(lm, prompts[:2], max_new_tokens=2, progress=False)  # warm-up
    results: dict[str, dict[str, float]] = {}

    g, sec = timed(
        generate_full, lm, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, progress=False
    )
    results["harness"] = {"seconds": sec, "new_tokens": sum(g.new_tokens)}
    nb, sec = timed(naive_batched, lm, prompts, args.max_new_tokens, args.batch_size)
    results["naive-batched"] = {
        "seconds": sec,
        "new_tokens": nb[1],
        "same_responses": sum(a == b for a, b in zip(g.responses, nb[0])) / len(prompts),
    }
    if not args.skip_single:
        ns, sec = timed(naive_batched, lm, prompts, args.max_new_tokens, 1)
        results["naive-single"] = {
            "seconds": sec,
            "new_tokens": ns[1],
            "same_responses": sum(a == b for a, b in zip(g.responses, ns[0])) / len(prompts),
        }
    _, sec = timed(refusal_scores, lm, prompts, batch_size=args.batch_size, progress=False)
    results["score"] = {"seconds": sec, "new_tokens": 0}

    for r in results.values():
        r["prompts_per_s"] = len(prompts) / r["seconds"]
        r["tokens_per_s"] = r["new_tokens"] / r["seconds"] if r["new_tokens"] else float("nan")
    summary = {
        "model": args.model,
        "set": args.set,
        "n": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "results": results,
        "harness_speedup_vs_naive_batched": results["naive-batched"]["seconds"] / results["harness"]["seconds"],
        "score_vs_generation_speed": results["harness"]["seconds"] / results["score"]["seconds"],
    }
    if "naive-single" in results:
        summary["harness_speedup_vs_naive_single"] = results["naive-single"]["seconds"] / results["harness"]["seconds"]
    write_json(args.out, summary)
    print("| method | seconds | prompts/s | new tokens/s | same responses as harness |\n|---|---|---|---|---|")
    for name, r in results.items():
        same = r.get("same_responses")
        print(
            f"| {name} | {r['seconds']:.1f} | {r['prompts_per_s']:.2f} | {r['tokens_per_s']:.1f} | "
            f"{'' if same is None else f'{100 * same:.0f}%'} |"
        )
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
