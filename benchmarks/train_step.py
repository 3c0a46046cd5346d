"""Per-step wall time and peak memory of the training loop on the bundled model (one process).

    python benchmarks/train_step.py --out runs/bench-train-step

Each variant runs in its own child process (so peak RSS is its own) on the same 8 token sequences:

* ``rr``              4 erase + 4 retain examples, forward truncated after the deepest target layer
* ``rr_full``         the same batch, full-depth forward (final norm + unembedding included)
* ``mosr_no_aug``     the same batch with overlap-aware weights (weighted erasure)
* ``rr_mix``          3 erase + 5 retain, where 2 retain rows are the augmented-refusal sequences
* ``mosr``            3 erase + 3 retain + 2 augmented refusals (weights on; the 2 refusal rows run the full
                      model for their NLL and also enter the retain loss): same sequences as ``rr_mix``

One step = reference forward (adapters off, no grad) + trained forward + loss + backward + clip + AdamW
step. Reported: median over ``--steps`` timed steps after ``--warmup`` steps, and the child's peak RSS.
Goals (issue 5): mosr / rr_mix ≤ 1.05, rr / rr_full ≤ 0.7.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

VARIANTS = ("rr", "rr_full", "mosr_no_aug", "rr_mix", "mosr")
FALLBACK = ("Sure, here is a detailed plan. Step 1: gather the materials you need and find a quiet place. "
            "Step 2: follow the instructions carefully and make sure nobody notices what you are doing.")


def build(variant: str, model: str, seq: int):  # noqa: ANN201 - returns the pieces of one step
    import torch

    from mosr import datasets
    from mosr.augment import AugmentConfig, augment
    from mosr.train import TrainConfig, TrainForward, TrainingData, attach_lora, load_model, make_inputs
    from mosr.traindata import TrainExample, encode, read_completions
    from mosr.weighting import WeightConfig, WeightResult

    torch.manual_seed(0)
    lm = load_model(model, "float32", "cpu")
    method = {"rr_full": "rr", "rr_mix": "rr"}.get(variant, variant)
    cfg = TrainConfig(method=method, model=model, truncate=variant != "rr_full", max_length=seq,
                      mix={"erase": 3, "retain": 3, "refusal": 2} if variant == "mosr" else None).resolved(lm)
    cache = Path("runs/cache/completions-smollm2-135m-instruct.jsonl")
    found = read_completions(cache) if cache.is_file() else {}

    def harmful_records(n: int, seed: int) -> list:  # noqa: ANN202
        return [replace(r, completion=found.get(r.id, FALLBACK)) for r in datasets.load("rd-harmful-train", n=n,
                                                                                          seed=seed)]

    harmful = harmful_records(3 if variant in ("mosr", "rr_mix") else 4, 0)
    retain = datasets.load("self-instruct-retain", n=4 if variant not in ("mosr", "rr_mix") else 3, seed=0)
    erase = [TrainExample("erase", r.prompt, r.completion or FALLBACK, id=r.id, weight=w)
             for r, w in zip(harmful, (0.4, 1.3, 1.0, 1.3))]
    keep = [TrainExample("retain", r.prompt, r.completion or "", id=r.id) for r in retain]
    examples = {"erase": erase, "retain": keep}
    if variant in ("mosr", "rr_mix"):
        aug = augment(lm.tokenizer, harmful_records(2, 1), AugmentConfig(k_min=16, k_max=16))
        if variant == "mosr":
            examples["refusal"] = aug
        else:  # the same token sequences as plain retain rows
            examples["retain"] = keep + [TrainExample("retain", a.prompt, a.response_prefix + a.response, id=a.id)
                                         for a in aug]
    pools = {k: encode(lm.tokenizer, v, seq) for k, v in examples.items()}
    weights = None
    if cfg.use_weights:  # step time does not depend on the weight values; fixed ones avoid a capture pass
        ids = [e.id for e in erase]
        weights = WeightResult(ids=ids, similarity=torch.zeros(len(ids)),
                               weights=torch.tensor([e.weight for e in erase]), config=WeightConfig())
    data = TrainingData(pools=pools, examples=examples, weights=weights)
    picks = {k: list(range(len(v))) for k, v in pools.items()}
    inp = make_inputs(data, picks, lm.tokenizer.pad_token_id or 0, torch.device("cpu"))
    peft_model = attach_lora(lm, cfg)
    layers = sorted(set(cfg.target_layers) | set(cfg.retain_layers))
    fwd = TrainForward(peft_model, lm, layers, truncate=cfg.truncate)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    tokens = int(sum(int(b["attention_mask"].sum()) for b in (inp.hidden, inp.logits) if b is not None))
    return cfg, fwd, inp, layers, data, params, opt, tokens, ("cached model completions" if found else "fixed text")


def child(variant: str, model: str, seq: int, warmup: int, steps: int) -> dict:
    import torch

    from mosr.train import compute_loss

    cfg, fwd, inp, layers, data, params, opt, tokens, source = build(variant, model, seq)
    states = ("hidden", "logits") if cfg.aug_in_retain else ("hidden",)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        out = fwd(hidden=inp.hidden, logits=inp.logits, states=states)
        loss, _ = compute_loss(cfg, out, inp, layers, data.weights, step=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "median_s": statistics.median(times), "times_s": [round(t, 3) for t in times],
            "peak_rss_mib": round(peak_kib / 1024, 1), "tokens": tokens, "harmful_completions": source, "kinds": {k: len(v) for k, v in inp.ids.items()},
            "truncate": cfg.truncate, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seq", type=int, default=128, help="max tokens per example")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default="runs/bench-train-step")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.model, args.seq, args.warmup, args.steps)))
        return 0
    results = {}
    for v in args.variants:
        cmd = [sys.executable, __file__, "--child", v, "--model", args.model, "--seq", str(args.seq),
               "--warmup", str(args.warmup), "--steps", str(args.steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        results[v] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[v]
        print(f"{v:12s} median {r['median_s']:.3f} s/step  peak RSS {r['peak_rss_mib']:.0f} MiB  "
              f"tokens {r['tokens']}  kinds {r['kinds']}", flush=True)
    ratios = {}
    if "mosr" in results and "rr_mix" in results:
        ratios["mosr / rr_mix (goal <= 1.05)"] = results["mosr"]["median_s"] / results["rr_mix"]["median_s"]
    if "mosr_no_aug" in results and "rr" in results:
        ratios["mosr_no_aug / rr (weighting only)"] = results["mosr_no_aug"]["median_s"] / results["rr"]["median_s"]
    if "rr" in results and "rr_full" in results:
        ratios["rr truncated / rr_full (goal <= 0.7)"] = results["rr"]["median_s"] / results["rr_full"]["median_s"]
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    out = Path(args.out)
    from mosr.io import write_json

    write_json(out / "train_step.json", {"model": args.model, "seq": args.seq, "warmup": args.warmup,
                                         "steps": args.steps, "machine": platform.processor() or platform.machine(),
                                         "results": results, "ratios": ratios})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
