"""Does an erasure adapter erase harmful text beyond its training prompts? The erase loss of a trained adapter
(``ReLU(cos)`` of centred adapted against frozen states on the response tokens, :func:`mosr.losses.erase_loss`,
the run's target layers and centre) on three groups of harmful prompt + response pairs:

* ``train, refused``: the run's harmful training prompts the base model refuses (first-token refusal
  log-odds > 0), with the completions the run erased;
* ``train, answered``: the training prompts the base model answers, with those completions;
* ``held-out, answered``: harmful evaluation prompts the base model answered, with its own answers (from a
  ``mosr eval`` folder of the base model): what the adapter has to erase at test time.

1 = untouched states, 0 = erased. A low training value with a high held-out one means the erasure was
fitted to the training prompts::

    python experiments/erase_transfer.py --run runs/qwen-schedule/rr-h256-cb/train \\
        --base-eval runs/qwen-coder/eval-base --n 40 --out experiments/results/qwen-coder/erase-transfer/rr-h256-cb

``--adapter`` picks another adapter of the run (default ``<run>/adapter``). Writes ``transfer.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import yaml

BOOTSTRAP = 2000


def fail(msg: str) -> NoReturn:
    raise SystemExit(f"erase_transfer: {msg}")


def summary(x: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    if not len(x):
        return {"n": 0, "mean": None, "ci": [None, None]}
    boot = x[rng.integers(0, len(x), size=(BOOTSTRAP, len(x)))].mean(axis=1)
    ci = [round(float(np.percentile(boot, q)), 3) for q in (2.5, 97.5)]
    return {"n": int(len(x)), "mean": round(float(x.mean()), 3), "ci": ci}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a mosr train run folder (config.yaml, reference/center.safetensors)")
    p.add_argument("--adapter", default=None, help="default: <run>/adapter")
    p.add_argument("--base-eval", required=True, help="a mosr eval folder of the base model (its answers)")
    p.add_argument("--sets", default="jbb-harmful,advbench", help="harmful sets of --base-eval to read")
    p.add_argument("--n", type=int, default=40, help="pairs per source (training prompts; held-out answers)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from safetensors.torch import load_file

    import mosr
    from mosr.adapters import check_adapter
    from mosr.chat import format_chat
    from mosr.errors import MosrError
    from mosr.evaluation.judge import refusal_scores
    from mosr.io import read_rows, script_provenance, write_json, write_text
    from mosr.train.config import TrainConfig
    from mosr.train.data import eval_sets, harmful_prompts
    from mosr.train.sources import harmful_completions

    provenance = script_provenance()
    run, base_eval = Path(args.run), Path(args.base_eval)
    for f in (run / "config.yaml", run / "reference" / "center.safetensors", base_eval / "responses.jsonl"):
        if not f.is_file():
            fail(f"missing {f}")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    layers = [int(x) for x in cfg["target_layers"]]
    center = {int(k): v for k, v in load_file(str(run / "reference" / "center.safetensors")).items()}
    try:
        adapter = check_adapter(args.adapter or run / "adapter")
        lm = mosr.load(cfg["model"], dtype=cfg.get("dtype", "float32"))
    except MosrError as e:
        fail(str(e))
    sets = set(args.sets.split(","))
    held = [
        r for r in read_rows(base_eval / "responses.jsonl") if r.get("set") in sets and r.get("verdict") == "compliance"
    ]
    try:  # the run's harmful training prompts, drawn as build_data draws them
        tc = TrainConfig.from_dict(cfg)
        pool = harmful_prompts(tc.data, eval_sets(tc.data)).sample(tc.data.n_harmful, tc.seed)
        cache = tc.data.completions_cache or run / "completions.jsonl"  # where training put them
        pool = harmful_completions(None, pool, cache, completions_file=tc.data.completions, allow_generate=False)
    except MosrError as e:
        fail(str(e))
    train = [(r.prompt, r.completion or "") for r in pool][: args.n]
    if not train or not held:
        fail(f"no pairs: {len(train)} training prompts with completions, {len(held)} answered held-out prompts")
    held = held[: args.n]
    tok = lm.tokenizer
    score = refusal_scores(lm, [p for p, _ in train], progress=False).numpy()
    fmt = format_chat(tok, [p for p, _ in train])
    held_pairs = list(zip(format_chat(tok, [r["prompt"] for r in held]), (r["response"] for r in held)))
    tv, hv = erase_values(lm, adapter, list(zip(fmt, (c for _, c in train))), held_pairs, layers, center)
    rng = np.random.default_rng(0)
    groups = {
        "train, refused by the base model": summary(tv[score > 0], rng),
        "train, answered by the base model": summary(tv[score <= 0], rng),
        "held-out, answered by the base model": summary(hv, rng),
    }
    res = {
        "run": str(run),
        "adapter": str(adapter),
        "base_eval": str(base_eval),
        "layers": layers,
        "groups": groups,
        "provenance": provenance,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "transfer.json", res)
    lines = [
        f"# Erase loss of `{adapter}` (1 = untouched, 0 = erased; layers {layers})",
        "",
        "| pairs | n | erase loss [95% CI] |",
        "|---|---|---|",
    ]
    for k, v in groups.items():
        ci = "–" if v["mean"] is None else f"{v['mean']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"
        lines.append(f"| {k} | {v['n']} | {ci} |")
    write_text(out / "transfer.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def erase_values(
    lm: Any, adapter: Path, train: list[tuple[str, str]], held: list[tuple[str, str]], layers: list[int], center: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Per (formatted prompt, response) pair: the erase loss of the adapted model against the frozen one on the
    response tokens; training pairs and held-out pairs. The adapter is merged into ``lm``'s weights after the
    frozen pass (``lm`` is adapted afterwards)."""
    from mosr.adapters import apply_adapter
    from mosr.capture import capture
    from mosr.losses import erase_loss
    from mosr.models import from_model

    kw: dict[str, Any] = {"layers": layers, "position": "all", "chat": False, "progress": False, "batch_size": 8}
    texts = [p + r for p, r in [*train, *held]]
    ref = capture(lm, texts, **kw)
    adapted = from_model(apply_adapter(lm.model, adapter), lm.tokenizer, name=f"{lm.name} + adapter")
    new = capture(adapted, texts, **kw)

    vals = []
    for (p, _), h, hn in zip([*train, *held], ref, new):
        s = len(lm.tokenizer(p, add_special_tokens=False)["input_ids"])
        mask = torch.zeros(1, h.shape[1])
        mask[0, s:] = 1
        hn_d = {layer: hn[i][None].float() for i, layer in enumerate(layers)}
        h_d = {layer: h[i][None].float() for i, layer in enumerate(layers)}
        vals.append(float(erase_loss(hn_d, h_d, mask, center)[0]))
    v = np.array(vals)
    return v[: len(train)], v[len(train) :]


if __name__ == "__main__":
    raise SystemExit(main())
