"""Per-step wall time and peak memory of the training loop on the bundled model (one process per variant).

    python benchmarks/train_step.py --out runs/bench-train-step
    python benchmarks/train_step.py --model tiny:llama --steps 1 --warmup 0   # smoke run (tests)
    python benchmarks/train_step.py --device cuda --dtype bfloat16              # on a GPU (benchmarks/gpu_check.sh)

Each variant runs in its own child process (so peak RSS is its own) on the same 8 token sequences, wired
as :func:`mosr.train.train` wires them: the frozen reference states (and the centre of the centred erase
cosine) are computed once, before LoRA is attached, with :func:`mosr.train.reference.compute_reference`:

* ``rr``              4 erase + 4 retain examples, cached reference, forward truncated after the deepest
                      hooked layer (what training does now)
* ``rr_nocache``      the same batch, reference forward (adapters off, no grad) inside every step
                      (``cache_reference: false``: only the centre is precomputed)
* ``rr_full``         the same batch as ``rr``, full-depth trained forward (final norm + unembedding included)
* ``mosr_no_aug``     the same batch as ``rr`` with overlap-aware weights (weighted erasure)
* ``rr_mix``          3 erase + 5 retain, where 2 retain rows are the augmented-refusal sequences
* ``mosr``            3 erase + 3 retain + 2 augmented refusals (weights on, cached reference; the 2 refusal
                      rows run the full model for their NLL and also enter the retain loss): same sequences
                      as ``rr_mix``

One step = ``make_inputs`` (collate + cached-state lookup) + reference forward (``rr_nocache`` only) +
trained forward + loss + backward + clip + AdamW step. Reported per variant: median over ``--steps`` timed
steps after ``--warmup`` steps, the child's peak RSS, and the one-off reference pre-pass (seconds, MB;
over these 8 examples only, outside the step).
Goals: rr / rr_nocache ≤ 0.65 (caching the reference), mosr / rr_mix ≤ 1.05 (MOSR's extras on the same
sequences); reported: mosr / rr, rr / rr_full (truncation), mosr_no_aug / rr (weighting only).
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

VARIANTS = ("rr", "rr_nocache", "rr_full", "mosr_no_aug", "rr_mix", "mosr")
#: ratio name -> (numerator, denominator, goal or None for report-only)
RATIOS: dict[str, tuple[str, str, float | None]] = {
    "rr / rr_nocache": ("rr", "rr_nocache", 0.65),
    "mosr / rr_mix": ("mosr", "rr_mix", 1.05),
    "mosr / rr": ("mosr", "rr", None),
    "rr / rr_full": ("rr", "rr_full", None),
    "mosr_no_aug / rr": ("mosr_no_aug", "rr", None),
}
FALLBACK = (
    "Sure, here is a detailed plan. Step 1: gather the materials you need and find a quiet place. "
    "Step 2: follow the instructions carefully and make sure nobody notices what you are doing."
)
#: retain answer for records without one (the bundled demo prompts)
BENIGN_FALLBACK = "Here is a short answer: start with the basics, then practise a little every day."
DEFAULT_COMPLETIONS = "runs/cache/completions-smollm2-135m-instruct.jsonl"


def build(
    variant: str,
    model: str,
    seq: int,
    completions: str,
    data_dir: str | None,
    demo: bool,  # noqa: ANN201
    device: str = "cpu",
    dtype: str = "float32",
):
    """The pieces of one step of ``variant`` (mirrors :func:`mosr.train.train`)."""
    import torch

    from mosr import datasets
    from mosr.encoding import TrainExample, encode
    from mosr.models import load as load_lm
    from mosr.train import TrainConfig
    from mosr.train.augment import AugmentConfig, augment
    from mosr.train.data import TrainingData
    from mosr.train.lora import TrainForward, attach_lora
    from mosr.train.reference import compute_reference, megabytes
    from mosr.train.sources import read_completions
    from mosr.train.weighting import WeightConfig, WeightResult

    torch.manual_seed(0)
    lm = load_lm(model, dtype=dtype, device=device)
    method = {"rr_full": "rr", "rr_mix": "rr", "rr_nocache": "rr"}.get(variant, variant)
    cfg = TrainConfig(
        method=method,
        model=model,
        truncate=variant != "rr_full",
        max_length=seq,
        cache_reference=variant != "rr_nocache",
        mix={"erase": 3, "retain": 3, "refusal": 2} if variant == "mosr" else None,
    ).resolved(lm)
    cache = Path(completions)
    found = read_completions(cache) if cache.is_file() else {}
    harmful_set, retain_set = ("demo-harmful", "demo-benign") if demo else ("rd-harmful-train", "self-instruct-retain")

    def harmful_records(n: int, seed: int) -> list:  # noqa: ANN202
        return [
            replace(r, completion=found.get(r.id, FALLBACK))
            for r in datasets.load(harmful_set, data_dir=data_dir, n=n, seed=seed)
        ]

    mixed = variant in ("mosr", "rr_mix")
    harmful = harmful_records(3 if mixed else 4, 0)
    retain = datasets.load(retain_set, data_dir=data_dir, n=3 if mixed else 4, seed=0)
    erase = [
        TrainExample("erase", r.prompt, r.completion or FALLBACK, id=r.id, weight=w)
        for r, w in zip(harmful, (0.4, 1.3, 1.0, 1.3))
    ]
    keep = [
        TrainExample("retain", r.prompt, r.completion or r.extra.get("answer") or BENIGN_FALLBACK, id=r.id)
        for r in retain
    ]
    examples = {"erase": erase, "retain": keep}
    if mixed:
        aug = augment(lm.tokenizer, harmful_records(2, 1), AugmentConfig(k_min=16, k_max=16))
        if variant == "mosr":
            examples["refusal"] = aug
        else:  # the same token sequences as plain retain rows
            examples["retain"] = keep + [
                TrainExample("retain", a.prompt, a.response_prefix + a.response, id=a.id) for a in aug
            ]
    pools = {k: encode(lm.tokenizer, v, seq) for k, v in examples.items()}
    # examples left without a response token at --seq are dropped by encode (tiny tokenizers: long prompts)
    dropped = {k: len(examples[k]) - len(pools[k]) for k in examples if len(examples[k]) > len(pools[k])}
    weights = None
    if cfg.use_weights:  # step time does not depend on the weight values; fixed ones avoid a capture pass
        ids = [e.id for e in erase]
        weights = WeightResult(
            ids=ids,
            similarity=torch.zeros(len(ids)),
            weights=torch.tensor([e.weight for e in erase]),
            config=WeightConfig(),
        )
    data = TrainingData(pools=pools, examples=examples, weights=weights)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    assert cfg.target_layers is not None and cfg.retain_layers is not None
    layers = sorted(set(cfg.target_layers) | set(cfg.retain_layers))
    # as train(): before LoRA is attached (the plain model is the frozen reference)
    t0 = time.perf_counter()
    ref_pools = data.pools if cfg.cache_reference else {"retain": data.pools["retain"]}
    reference = compute_reference(lm, ref_pools, layers, pad_id, device=lm.device, progress=False)
    ref_s = time.perf_counter() - t0
    center = {layer: reference.center[layer] for layer in cfg.target_layers}
    ref_mb = megabytes(reference)
    if not cfg.cache_reference:
        reference = None
    peft_model = attach_lora(lm, cfg)
    fwd = TrainForward(peft_model, lm, layers, truncate=cfg.truncate)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    info = {
        "harmful_completions": "cached model completions" if found else "fixed text",
        "data": "bundled demo sets" if demo else "shared data",
        "reference_s": round(ref_s, 3),
        "reference_mb": ref_mb,
        "cached_reference": reference is not None,
        "dropped": dropped,
    }
    return cfg, fwd, data, reference, center, layers, pad_id, params, opt, info


def child(
    variant: str,
    model: str,
    seq: int,
    warmup: int,
    steps: int,
    completions: str = DEFAULT_COMPLETIONS,
    data_dir: str | None = None,
    demo: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
) -> dict:
    import torch

    from mosr.train.batches import make_inputs
    from mosr.train.objective import compute_loss

    cfg, fwd, data, reference, center, layers, pad_id, params, opt, info = build(
        variant, model, seq, completions, data_dir, demo, device, dtype
    )
    states = ("hidden", "logits") if cfg.aug_in_retain else ("hidden",)
    picks = {k: list(range(len(v))) for k, v in data.pools.items()}
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    # bfloat16 weights run under bf16 autocast, as training with mixed_precision: bf16 does
    autocast = dtype in ("bfloat16", "bf16")
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        inp = make_inputs(data, picks, pad_id, dev, reference)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            out = fwd(hidden=inp.hidden, logits=inp.logits, states=states, refs=inp.refs)
            loss, _ = compute_loss(cfg, out, inp, layers, data.weights, 1, center)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        if cuda:  # the step's kernels are queued asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    gpu = {"peak_gpu_mib": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)} if cuda else {}
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tokens = int(sum(int(b["attention_mask"].sum()) for b in (inp.hidden, inp.logits) if b is not None))
    return {
        "variant": variant,
        "median_s": statistics.median(times),
        "times_s": [round(t, 4) for t in times],
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "tokens": tokens,
        "kinds": {k: len(v) for k, v in inp.ids.items()},
        "refs_in_step": sorted(inp.refs),
        "truncate": cfg.truncate,
        "threads": torch.get_num_threads(),
        "device": device,
        "dtype": dtype,
        **gpu,
        **info,
    }


def ratios(results: dict[str, dict]) -> dict[str, dict]:
    """Every ratio of :data:`RATIOS`: value (None when a variant was not run), goal, met."""
    out = {}
    for name, (num, den, goal) in RATIOS.items():
        value = (results[num]["median_s"] / results[den]["median_s"]) if num in results and den in results else None
        out[name] = {
            "value": value,
            "goal": goal,
            "met": None if value is None or goal is None else bool(value <= goal),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seq", type=int, default=128, help="max tokens per example")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument(
        "--completions",
        default=DEFAULT_COMPLETIONS,
        help="cached harmful completions (JSONL); missing: a fixed completion text",
    )
    p.add_argument("--data-dir", default=None, help="benchmark data folder (default: $MOSR_DATA_DIR, ../shared/data)")
    p.add_argument(
        "--demo-data", action="store_true", help="use the bundled demo prompts (no data folder needed; for smoke runs)"
    )
    p.add_argument("--out", default="runs/bench-train-step")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 (bf16 autocast) | float16 (default: float32)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be ≥ 1")
    if args.child:
        print(
            json.dumps(
                child(
                    args.child,
                    args.model,
                    args.seq,
                    args.warmup,
                    args.steps,
                    args.completions,
                    args.data_dir,
                    args.demo_data,
                    args.device,
                    args.dtype,
                )
            )
        )
        return 0
    results = {}
    for v in args.variants:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            v,
            "--model",
            args.model,
            "--seq",
            str(args.seq),
            "--warmup",
            str(args.warmup),
            "--steps",
            str(args.steps),
            "--completions",
            args.completions,
            "--device",
            args.device,
            "--dtype",
            args.dtype,
        ]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        cmd += ["--demo-data"] if args.demo_data else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"variant {v} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return proc.returncode
        results[v] = r = json.loads(proc.stdout.strip().splitlines()[-1])
        gpu = f"  peak GPU {r['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in r else ""
        print(
            f"{v:12s} median {r['median_s']:.3f} s/step  peak RSS {r['peak_rss_mib']:.0f} MiB{gpu}  "
            f"tokens {r['tokens']}  kinds {r['kinds']}  reference pre-pass {r['reference_s']:.2f} s "
            f"({r['reference_mb']} MB)" + (f"  dropped at --seq {args.seq}: {r['dropped']}" if r["dropped"] else ""),
            flush=True,
        )
    rat = ratios(results)
    for k, r in rat.items():
        num, den, _ = RATIOS[k]
        if r["value"] is None:
            continue
        goal = f"goal <= {r['goal']}: {'met' if r['met'] else 'NOT met'}" if r["goal"] is not None else "report"
        print(f"{k:18s} {r['value']:.3f}  ({goal})")
    from mosr.io import write_json

    path = write_json(
        Path(args.out) / "train_step.json",
        {
            "model": args.model,
            "device": args.device,
            "dtype": args.dtype,
            "seq": args.seq,
            "warmup": args.warmup,
            "steps": args.steps,
            "machine": platform.processor() or platform.machine(),
            "results": results,
            "ratios": rat,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
