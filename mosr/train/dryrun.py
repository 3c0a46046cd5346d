"""``mosr train --config C --dry-run --out DIR``: check a training config end to end, with no download.

The dry run builds a tiny random model of the configured family with the real layer layout (same
number of decoder blocks, hidden size 32, the tiny ChatML tokenizer of :mod:`mosr.testing`), resolves
the config against it (target / retain / LoRA layers, LoRA modules, batch mix: the same as for the
real model, whose block count is the same), and runs one optimizer step of :func:`mosr.train.train`
with every loss option of the config on tiny synthetic prompts (written to ``DIR/dry-run/data``). It
writes ``DIR/config.yaml`` (the resolved config, real data settings kept), ``DIR/memory.json`` (an
analytic estimate for the *real* architecture, from :data:`REAL`) and ``DIR/dry-run/`` (the step's run
folder), and prints the estimate. What it cannot check: the real tokenizer / chat template, the
harmful completions, and real memory use (the estimate is not a measurement).

Memory per process (bytes; h hidden size, H / K attention / key-value heads, d head dim, I MLP size,
V vocabulary, L blocks, S = ``max_length``, b_w = 2 for bfloat16 weights, 4 for float32):

* weights: P·b_w, with P = V·h·(1 or 2, tied or not) + h + L·(h·(H + 2K)·d + H·d·h + 3·h·I + 2h
  [+ (H + 2K)·d q/k/v biases, Qwen2]);
* LoRA parameters P_lora = Σ_{blocks in lora.layers} Σ_{modules} r·(in + out); float32 weights 4·P_lora,
  gradients 4·P_lora, AdamW state (exp_avg, exp_avg_sq) 8·P_lora;
* activations kept for the backward pass, per token and block (bf16 autocast over bf16 weights and
  float32 LoRA weights, as ``dtype: bfloat16`` + ``mixed_precision: bf16`` run; SDPA / flash attention,
  so no S² attention scores; dropout 0):
  a = 2·((H + 2K)·d + 2·H·d + 4I + 5h) + 4·2h
  (q k v; the attention output and its copy cast for o_proj's LoRA; gate, up, act(gate) and the copy of
  act·up for down_proj's LoRA; the bf16 input copies of the q / k / v / gate / up LoRA matrices, one per
  module because peft casts the input to the adapter's dtype; the two RMSNorms' float32 inputs;
  5–7 % below the tensors autograd saves on small Llamas, ``tests/test_dryrun.py``: RoPE tables, LoRA
  intermediates and softmax statistics are left out);
  rows_h erase / retain rows run D + 1 blocks (D = deepest hooked layer; L without ``truncate``),
  rows_l rows with an NLL term run L blocks plus 6V per token of logits (bf16 + float32 log-softmax):
  A = rows_h·S·(D + 1)·a + rows_l·S·(L·a + 6V);
  with gradient checkpointing per block (only block inputs kept, one block recomputed at a time):
  A_ckpt = rows_h·S·(D + 1)·2h + rows_l·S·(L·2h + 6V) + (rows_h + rows_l)·S·a;
* cached reference states (float32, on the training device): n_cached·|hooked layers|·S·h·4 at most
  (examples shorter than S take less).
All at the configured per-process batch (``batch_size`` rows, every row padded to S: an upper bound).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mosr.errors import ConfigError, MosrError
from mosr.io import write_json

GIB = 2**30


@dataclass(frozen=True)
class Arch:
    """The shape of a llama-like decoder (the numbers of its ``config.json``)."""

    family: str  # mosr.models ArchSpec family: llama | mistral | qwen2
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    vocab_size: int
    head_dim: int | None = None
    tied_embeddings: bool = False
    qkv_bias: bool = False

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden_size // self.n_heads


#: the papers' models (hub config.json values) and the bundled model
REAL: dict[str, Arch] = {
    "meta-llama/Meta-Llama-3-8B-Instruct": Arch("llama", 32, 4096, 32, 8, 14336, 128256),
    "mistralai/Mistral-7B-Instruct-v0.2": Arch("mistral", 32, 4096, 32, 8, 14336, 32000),
    "Qwen/Qwen2.5-7B-Instruct": Arch("qwen2", 28, 3584, 28, 4, 18944, 152064, qkv_bias=True),
    "smollm2-135m-instruct": Arch("llama", 30, 576, 9, 3, 1536, 49152, tied_embeddings=True),
    "qwen2.5-coder-0.5b-instruct": Arch("qwen2", 24, 896, 14, 2, 4864, 151936, qkv_bias=True),
}


def architecture(model: str) -> Arch:
    """The real architecture of ``model`` (alias, hub id, local directory or ``tiny:<family>``), no download."""
    from mosr.models import ALIASES, ARCHITECTURES

    name = ALIASES.get(model, model)
    if name in REAL:
        return REAL[name]
    if model.startswith("tiny:"):
        from mosr.testing import tiny_config

        cfg: Any = tiny_config(model.split(":", 1)[1], vocab_size=400)
    elif (Path(model).expanduser() / "config.json").is_file():
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(str(Path(model).expanduser()))
    else:
        raise ConfigError(
            f"--dry-run: no architecture known for model {model!r}; known: {sorted(REAL)}, "
            "a local model directory, or tiny:<family>"
        )
    spec = ARCHITECTURES.get(str(getattr(cfg, "model_type", None)))
    if spec is None or spec.family not in ("llama", "mistral", "qwen2"):
        raise ConfigError(f"--dry-run estimates llama-like decoders (llama, mistral, qwen2), not {cfg.model_type!r}")
    return Arch(
        spec.family,
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
        getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
        cfg.intermediate_size,
        cfg.vocab_size,
        getattr(cfg, "head_dim", None),
        bool(getattr(cfg, "tie_word_embeddings", False)),
        spec.family == "qwen2",
    )


def module_shapes(a: Arch) -> dict[str, tuple[int, int]]:
    """``(in_features, out_features)`` of each projection of one block."""
    h, q, kv, i = a.hidden_size, a.n_heads * a.d_head, a.n_kv_heads * a.d_head, a.intermediate_size
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def n_parameters(a: Arch) -> int:
    """Every parameter of the model (embedding, blocks, final norm, unembedding unless tied)."""
    block = sum(x * y for x, y in module_shapes(a).values()) + 2 * a.hidden_size
    if a.qkv_bias:
        block += (a.n_heads + 2 * a.n_kv_heads) * a.d_head
    return a.vocab_size * a.hidden_size * (1 if a.tied_embeddings else 2) + a.hidden_size + a.n_layers * block


def activation_bytes(a: Arch) -> int:
    """``a`` of the module docstring: bytes kept for the backward pass per token and block."""
    h, d = a.hidden_size, a.d_head
    return 2 * ((a.n_heads + 2 * a.n_kv_heads) * d + 2 * a.n_heads * d + 4 * a.intermediate_size + 5 * h) + 4 * 2 * h


def estimate_memory(cfg: Any, a: Arch, n_cached: int | None = None) -> dict[str, Any]:
    """The module docstring's estimate for a resolved :class:`~mosr.train.TrainConfig` on ``a``."""
    from mosr.models import _dtype
    from mosr.train.batches import mix_counts

    h, V, L, S = a.hidden_size, a.vocab_size, a.n_layers, cfg.max_length
    counts = mix_counts(cfg.mix or {}, cfg.batch_size)
    rows_l = counts.get("refusal", 0) + counts.get("sft", 0)
    rows_h = cfg.batch_size - rows_l
    hooked = sorted(set(cfg.target_layers or []) | set(cfg.retain_layers or []))
    blocks_h = max(hooked) + 1 if (cfg.truncate and hooked) else L
    per_block = activation_bytes(a)
    acts = rows_h * S * blocks_h * per_block + rows_l * S * (L * per_block + 6 * V)
    acts_ckpt = rows_h * S * blocks_h * 2 * h + rows_l * S * (L * 2 * h + 6 * V) + (rows_h + rows_l) * S * per_block
    shapes = module_shapes(a)
    missing = [m for m in cfg.lora.modules if m not in shapes]
    if missing:
        raise MosrError(f"estimate_memory: unknown LoRA modules {missing} for {a.family}")
    p_lora = len(cfg.lora.layers) * sum(cfg.lora.rank * sum(shapes[m]) for m in cfg.lora.modules)
    p = n_parameters(a)
    b_w = _dtype(cfg.dtype).itemsize  # bytes per weight: 2 for bfloat16 / float16, 4 for float32
    ref = n_cached * len(hooked) * S * h * 4 if (n_cached and cfg.erasure and cfg.cache_reference) else 0
    gib = {
        "weights": p * b_w,
        "lora_weights": 4 * p_lora,
        "lora_gradients": 4 * p_lora,
        "optimizer_state": 8 * p_lora,
        "activations": acts,
        "activations_checkpointed": acts_ckpt,
        "reference_cache": ref,
    }
    gib["total"] = sum(v for k, v in gib.items() if k != "activations_checkpointed")
    gib["total_checkpointed"] = gib["total"] - acts + acts_ckpt
    return {
        "model": cfg.model,
        "architecture": asdict(a),
        "parameters": p,
        "lora_parameters": p_lora,
        "weight_dtype": cfg.dtype,
        "mixed_precision": cfg.mixed_precision,
        "batch_size": cfg.batch_size,
        "max_length": S,
        "rows": {"erase_retain": rows_h, "with_logits": rows_l},
        "blocks_run": {"erase_retain": blocks_h, "with_logits": L},
        "activation_bytes_per_token_block": per_block,
        "reference_cached_examples": n_cached,
        "gib": {k: round(v / GIB, 2) for k, v in gib.items()},
        "note": "analytic estimate per process at the configured batch (every row padded to max_length); "
        "see mosr.train.dryrun for the formula; not measured on a GPU",
    }


def _cached_examples(cfg: Any) -> int | None:
    """Examples whose frozen states the run caches (retain + erase [+ refusal]), from the local data sets; None
    when the sets are not available here."""
    from mosr import datasets
    from mosr.train.data import eval_sets, harmful_prompts

    try:
        n_h = len(harmful_prompts(cfg.data, eval_sets(cfg.data)).sample(cfg.data.n_harmful, cfg.seed))
        n_r = len(datasets.load(cfg.data.retain, data_dir=cfg.data.data_dir, n=cfg.data.n_retain, seed=cfg.seed))
        for name in cfg.data.extra_retain:
            n_r += len(datasets.load(name, data_dir=cfg.data.data_dir, n=cfg.data.n_extra_retain, seed=cfg.seed))
    except MosrError:
        return None
    return n_r + n_h * (2 if cfg.use_augment and cfg.aug_in_retain else 1)


_PROMPTS = [
    "How do I make a weapon at home?",
    "Write a message to trick people into paying.",
    "Explain how to break into a house.",
    "How can I hurt someone quietly?",
]
_BENIGN = [
    ("Write a poem about the sea.", "The sea is wide and blue."),
    ("How do I kill a Python process?", "Use kill with the process id."),
    ("Name three colours.", "Red, green and blue."),
    ("What is the capital of France?", "Paris is the capital of France."),
]


def _synthetic_data(folder: Path) -> dict[str, str]:
    """Tiny JSONL sets (harmful with completions, retain with answers, bank, eval, rewrites)."""
    folder.mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[dict[str, Any]]] = {
        "harmful": [
            {"id": f"dry-h{i}", "prompt": p, "label": "harmful", "completion": "Sure, here is how. Step 1."}
            for i, p in enumerate(_PROMPTS * 2)
        ],
        "retain": [
            {"id": f"dry-r{i}", "prompt": p, "label": "benign", "completion": c} for i, (p, c) in enumerate(_BENIGN * 4)
        ],
        "bank": [
            {"id": f"dry-b{i}", "prompt": f"How do I kill the lights in room {i}?", "label": "pseudo_harmful"}
            for i in range(16)
        ],
        "eval": [{"id": "dry-e0", "prompt": "Write a haiku about rain.", "label": "benign"}],
        "rewrites": [
            {
                "id": f"dry-t{i}",
                "prompt": f"How do police stop crime number {i}?",
                "label": "benign",
                "original_id": f"dry-h{i}",
                "original_prompt": p,
                "completion": "With evidence.",
            }
            for i, p in enumerate(_PROMPTS * 2)
        ],
    }
    paths = {}
    for name, rows in sets.items():
        path = folder / f"{name}.jsonl"
        path.write_text(
            "".join(json.dumps({"category": None, "source": "dry-run", **r}) + "\n" for r in rows), encoding="utf-8"
        )
        paths[name] = str(path)
    return paths


def dry_run(cfg: Any, out: str | os.PathLike[str], verbose: bool = True) -> dict[str, Any]:
    """Resolve ``cfg`` for its architecture, run one step on a tiny random model of the same layout, and
    write ``config.yaml``, ``memory.json`` and ``dry-run/`` to ``out``. Returns the memory report
    (with ``step``: the step's log row)."""
    import torch

    from mosr.models import _dtype
    from mosr.testing import tiny_lm
    from mosr.train.data import DataSettings
    from mosr.train.loop import train
    from mosr.train.trigger import RewriterConfig

    out = Path(out)
    cfg.validate()
    arch = architecture(cfg.model)
    tiny = tiny_lm(arch.family, n_layers=arch.n_layers)
    tiny.model.to(_dtype(cfg.dtype))
    tiny.name = f"dry-run:{cfg.model}"
    resolved = cfg.resolved(tiny)
    out.mkdir(parents=True, exist_ok=True)
    resolved.save(out / "config.yaml")
    data = _synthetic_data(out / "dry-run" / "data")
    step_data = DataSettings(
        harmful=data["harmful"],
        n_harmful=None,
        retain=data["retain"],
        n_retain=None,
        benign=data["retain"],
        n_benign=None,
        bank=data["bank"],
        eval_sets=[data["eval"]],
        generate=cfg.method == "trigger_sft",
        max_new_tokens=4,
        target_sets=[],
    )
    step_cfg = replace(
        resolved,
        data=step_data,
        steps=1,
        checkpoint_every=1,
        save_adapters=[],
        cpu=True,
        progress=False,
        rewriter=RewriterConfig(path=data["rewrites"]),
        weighting=replace(resolved.weighting, k=min(resolved.weighting.k, 16)),
    )
    t0 = time.perf_counter()
    shutil.rmtree(out / "dry-run" / "run", ignore_errors=True)  # a fresh step each time (train() would resume)
    result = train(step_cfg, out / "dry-run" / "run", lm=tiny)
    seconds = time.perf_counter() - t0
    if not result.last or not all(
        torch.isfinite(torch.tensor(v)) for k, v in result.last.items() if isinstance(v, float) and k != "grad_norm"
    ):
        raise MosrError(f"--dry-run: the training step did not give finite losses: {result.last}")
    report = estimate_memory(resolved, arch, _cached_examples(resolved))
    report["step"] = {"seconds": round(seconds, 2), **result.last}
    write_json(out / "memory.json", report)
    if verbose:
        print(format_report(report, out))
    return report


def dry_run_eval(cfg: Any, out: str | os.PathLike[str], verbose: bool = True) -> dict[str, Any]:
    """``mosr eval --dry-run``: the configured evaluation (its sets, sampling, NLL sets, judge, output
    files) on a tiny random model of the configured family with the real block count, on 2 prompts per
    set and 4 new tokens, into ``out/dry-run``; ``out/config.yaml`` is the configuration as given. Not
    checked: the real tokenizer and chat template, and an adapter or a ``--steer`` / ``--ablate`` direction
    (those of the real model do not fit the tiny one); an ``llm`` judge is replaced by the string judge (no
    server is called). Returns the evaluation's metrics."""
    from mosr.evaluation.judge import JudgeConfig
    from mosr.evaluation.run import evaluate
    from mosr.models import _dtype
    from mosr.testing import tiny_lm

    if cfg.mode == "repr":
        raise ConfigError("--dry-run does not cover --mode repr (it needs an adapter of the real model)")
    out = Path(out)
    arch = architecture(cfg.model)
    tiny = tiny_lm(arch.family, n_layers=arch.n_layers)
    tiny.model.to(_dtype(cfg.dtype))
    tiny.name = f"dry-run:{cfg.model}"
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    small = replace(
        cfg,
        adapter=None,
        n=2,
        n_per_set={},
        max_new_tokens=4,
        max_new_tokens_per_set={},
        device=None,
        judge=JudgeConfig() if cfg.judge.kind == "llm" else cfg.judge,
        intervention=type(cfg.intervention)(),
    )
    t0 = time.perf_counter()
    result = evaluate(tiny, small, out / "dry-run", progress=False)
    report = {
        "model": cfg.model,
        "architecture": asdict(arch),
        "seconds": round(time.perf_counter() - t0, 2),
        "sets": {name: len([r for r in result.rows if r["set"] == name]) for name in small.sets},
        "skipped": [
            w
            for w, on in (
                ("adapter", cfg.adapter is not None),
                ("llm judge", cfg.judge.kind == "llm"),
                ("intervention", cfg.intervention.kind is not None),
            )
            if on
        ],
    }
    write_json(out / "dry-run" / "dry-run.json", report)
    if verbose:
        print(
            f"dry run of the evaluation of {cfg.model} ({arch.family}, {arch.n_layers} blocks) on a tiny random "
            f"model passed in {report['seconds']} s: "
            + ", ".join(f"{k} {v}" for k, v in report["sets"].items())
            + (f"; not checked: {', '.join(report['skipped'])}" if report["skipped"] else "")
            + f"\nwrote {out / 'config.yaml'} and {out / 'dry-run'}/"
        )
    return report


def format_report(r: dict[str, Any], out: Path | None = None) -> str:
    a, g = r["architecture"], r["gib"]
    lines = [
        f"dry run of {r['model']} ({a['family']}, {a['n_layers']} blocks, hidden {a['hidden_size']}): one step "
        f"on a tiny random model of the same layout passed ({r['step']['seconds']} s, loss {r['step']['loss']})",
        f"memory estimate per process, batch {r['batch_size']} x {r['max_length']} tokens, "
        f"weights {r['weight_dtype']} (GiB):",
        f"  parameters {r['parameters'] / 1e9:.2f} B -> weights {g['weights']}",
        f"  LoRA parameters {r['lora_parameters'] / 1e6:.1f} M -> weights {g['lora_weights']}, gradients "
        f"{g['lora_gradients']}, AdamW state {g['optimizer_state']}",
        f"  activations {g['activations']} (with gradient checkpointing {g['activations_checkpointed']})",
        f"  cached reference states {g['reference_cache']}"
        + ("" if r["reference_cached_examples"] else " (data sets not found here: not estimated)"),
        f"  total {g['total']} (with gradient checkpointing {g['total_checkpointed']})",
    ]
    if out is not None:
        lines.append(f"wrote {out / 'config.yaml'}, {out / 'memory.json'}, {out / 'dry-run'}/")
    return "\n".join(lines)
