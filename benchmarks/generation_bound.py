"""Where generation time goes, against its compute bound, on the same prompts and batches.

For the batches :func:`mosr.batching.plan_batches` makes (length-sorted, left-padded), one process times:

* ``harness``: :func:`mosr.generate.generate_full`, as ``mosr eval`` runs it (:func:`mosr.generate.greedy`:
  finished rows leave the batch, unembedding at the last position only);
* ``hf-generate``: the same batches through ``model.generate(do_sample=False)``, which keeps finished rows
  in the batch until the longest one stops (the toolkit's generation before :func:`mosr.generate.greedy`);
* ``bare``: the least work greedy decoding of those batches needs: one prefill forward per batch with the
  unembedding at the last position only, then one single-token forward per step with the KV cache, as
  many steps as the harness took for that batch (its longest row), argmax in place of the generation loop;
* ``bound``: every token the work needs (the real prompt tokens and the new tokens, no padding, no finished
  rows) processed at the per-token cost of the batched prefill forward, the most efficient shape the machine
  runs this model at: the compute bound of the same prompts and batches;
* the parts of ``bare``: prefill, decode steps, and the unembedding (``d_model x vocab``) inside the
  decode steps, timed alone on the same shapes;
* ``rows_done``: the share of decode row-steps spent on rows that had already stopped (what shrinking
  the batch as rows finish would save), and the share of prompt tokens that are the chat template's
  shared head (system prompt + user header, the same for every prompt).

Run it alone on the machine (minutes on the 0.5B model)::

    python benchmarks/generation_bound.py --model qwen2.5-coder-0.5b-instruct --n 32 --out runs/bench/bound.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import mosr
from mosr.generate import cache_kwarg


def bare_decode(lm: mosr.LM, batch, steps: int) -> tuple[float, float]:  # noqa: ANN001
    """Seconds of (prefill, ``steps`` single-token decode steps) for one left-padded batch, greedy."""
    model, b = lm.model, batch.to(lm.device)
    mask = b.attention_mask
    key = cache_kwarg(model)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=b.input_ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
        t1 = time.perf_counter()
        cache, nxt = out[key], out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(steps - 1):
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            out = model(input_ids=nxt, attention_mask=mask, use_cache=True, logits_to_keep=1, **{key: cache})
            cache, nxt = out[key], out.logits[:, -1].argmax(-1, keepdim=True)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def hf_generate(lm: mosr.LM, batches: list, max_new_tokens: int) -> tuple[float, list[list[int]]]:  # noqa: ANN001
    """Seconds and new tokens of ``model.generate`` on the same batches (greedy, KV cache, same stop tokens)."""
    from mosr.batching import pad_id
    from mosr.generate import stop_token_ids

    stops, rows = stop_token_ids(lm), []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            b = b.to(lm.device)
            seq = lm.model.generate(
                input_ids=b.input_ids,
                attention_mask=b.attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad_id(lm),
                temperature=None,
                top_p=None,
                top_k=None,
            )
            rows += seq[:, b.input_ids.shape[1] :].tolist()
    return time.perf_counter() - t0, rows


def unembed_seconds(lm: mosr.LM, rows: int, steps: int) -> float:
    """Seconds of ``steps`` unembeddings of ``rows`` final states (the decode steps' vocabulary matmul)."""
    h = torch.randn(rows, 1, lm.d_model, device=lm.device)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(steps):
            lm.unembed(lm.final_norm(h)).argmax(-1)
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--set", default="xstest-safe")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16])
    p.add_argument("--out", default="runs/bench/generation_bound.json")
    args = p.parse_args(argv)

    from mosr.batching import plan_batches
    from mosr.chat import template_head
    from mosr.evaluation.config import load_set
    from mosr.generate import cut_at_stop, generate_full, stop_token_ids
    from mosr.io import write_json

    lm = mosr.load(args.model)
    prompts = load_set(args.set, n=args.n, seed=0).prompts
    generate_full(lm, prompts[:2], max_new_tokens=2, progress=False)  # warm-up
    head = template_head(lm.tokenizer)
    rows = []
    for bs in args.batch_sizes:
        batches = plan_batches(lm, prompts, batch_size=bs)
        # the variants run back to back on each batch, so a change in the machine's load hits them alike
        stops = stop_token_ids(lm)
        harness = hf_s = prefill = decode = unembed = 0.0
        row_steps = live_row_steps = prompt_tokens = real_tokens = same = 0
        new_tokens: dict[int, int] = {}
        for b in batches:
            t0 = time.perf_counter()
            g = generate_full(
                lm,
                [prompts[i] for i in b.index],
                max_new_tokens=args.max_new_tokens,
                batch_size=bs,
                progress=False,
                sort=False,
            )
            harness += time.perf_counter() - t0
            sec, hf_rows = hf_generate(lm, [b], args.max_new_tokens)
            hf_s += sec
            same += sum(
                lm.tokenizer.decode(cut_at_stop(r, stops)[0], skip_special_tokens=True).strip() == resp
                for r, resp in zip(hf_rows, g.responses)
            )
            counts = g.new_tokens
            new_tokens.update(zip(b.index, counts))
            steps = max(counts)
            pf, dc = bare_decode(lm, b, steps)
            prefill, decode = prefill + pf, decode + dc
            unembed += unembed_seconds(lm, len(b.index), steps - 1)
            row_steps += steps * len(b.index)
            live_row_steps += sum(counts)
            prompt_tokens += b.input_ids.numel()
            real_tokens += int(b.attention_mask.sum())
        new = sum(new_tokens.values())
        bare = prefill + decode
        bound = prefill / prompt_tokens * (real_tokens + new)
        rows.append(
            {
                "batch_size": bs,
                "new_tokens": new,
                "harness_s": harness,
                "bare_s": bare,
                "prefill_s": prefill,
                "decode_s": decode,
                "unembed_in_decode_s": unembed,
                "harness_tokens_per_s": new / harness,
                "bare_tokens_per_s": new / bare,
                "harness_over_bare": harness / bare,
                "bound_s": bound,
                "harness_over_bound": harness / bound,
                "hf_generate_s": hf_s,
                "hf_generate_tokens_per_s": new / hf_s,
                "speedup_vs_hf_generate": hf_s / harness,
                "same_responses_as_hf_generate": same / len(prompts),
                "finished_row_share": 1 - live_row_steps / row_steps,
                "padding_share": 1 - real_tokens / prompt_tokens,
                "template_head_share": head * len(prompts) / real_tokens,
            }
        )
    summary = {
        "model": args.model,
        "set": args.set,
        "n": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": torch.get_num_threads(),
        "template_head_tokens": head,
        "rows": rows,
    }
    write_json(args.out, summary)
    print(
        "| batch | new tok/s harness | hf-generate | bare | harness/bare | harness/bound | prefill s | decode s "
        "| unembed in decode | finished-row steps | padding | template head |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['batch_size']} | {r['harness_tokens_per_s']:.1f} | {r['hf_generate_tokens_per_s']:.1f} | "
            f"{r['bare_tokens_per_s']:.1f} | "
            f"{r['harness_over_bare']:.2f} | {r['harness_over_bound']:.2f} | {r['prefill_s']:.1f} | "
            f"{r['decode_s']:.1f} | "
            f"{100 * r['unembed_in_decode_s'] / r['decode_s']:.0f}% | {100 * r['finished_row_share']:.0f}% | "
            f"{100 * r['padding_share']:.0f}% | {100 * r['template_head_share']:.0f}% |"
        )
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
