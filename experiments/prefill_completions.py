"""Harmful completions in the trained model's own words: prefill its answer with the first words of another
model's harmful completion, let it continue greedily, keep what the judge calls compliant.

Why: erasure methods (rr, mosr, xboundary) reroute the states of harmful *completions*. An aligned model
cannot write them, so they come from an uncensored model (``data.generator``), whose text is another
model's distribution. On Qwen2.5-Coder-0.5B-Instruct an rr adapter erases the states of SmolLM2's
completions (centred cosine 0.24-0.27) but not those of Qwen's own compliant answers to held-out harmful
prompts (0.88): the erasure is fitted to SmolLM2's style (docs/results.md#qwen-prefill). Prefilling the
model's answer with a few words of the uncensored completion gives harmful text in the model's own
distribution, as a prefilling attack does; rows where it still refuses (or degenerates) are left out, so
training falls back to the uncensored completion there (``data.completions`` > ``data.completions_cache``).

    python experiments/prefill_completions.py --model qwen2.5-coder-0.5b-instruct \\
        --from runs/cache/completions-smollm2-135m-instruct.jsonl --words 6 \\
        --out runs/cache/completions-qwen2.5-coder-0.5b-instruct-prefill6.jsonl

Then train with ``--set data.completions=<out>``. Re-running skips ids already in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import mosr
from mosr.chat import format_chat
from mosr.errors import MosrError
from mosr.evaluation.judge import Verdict, judge
from mosr.generate import generate


def prefix_words(text: str, words: int) -> str:
    """The first ``words`` whitespace-separated words of ``text``, with their original spacing."""
    parts = text.split()
    if len(parts) <= words:
        return text.strip()
    cut, pos = 0, 0
    for w in parts[:words]:
        pos = text.index(w, pos) + len(w)
        cut = pos
    return text[:cut].lstrip()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the model that continues (the model being trained)")
    ap.add_argument("--from", dest="source", required=True, help="JSONL of {id, prompt, completion} rows")
    ap.add_argument("--words", type=int, default=6, help="words of the source completion to prefill")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        rows = [json.loads(x) for x in Path(args.source).read_text(encoding="utf-8").splitlines() if x.strip()]
        if any(not {"id", "prompt", "completion"} <= set(r) for r in rows):
            raise MosrError(f"{args.source}: every row needs id, prompt and completion")
        out = Path(args.out)
        done = {json.loads(x)["id"] for x in out.read_text().splitlines() if x.strip()} if out.exists() else set()
        todo = [r for r in rows if r["id"] not in done and r["id"] not in _skipped(out)]
        if not todo:
            print(f"{out}: complete ({len(done)} rows)")
            return
        torch.manual_seed(0)
        lm = mosr.load(args.model)
        prefixes = [prefix_words(r["completion"], args.words) for r in todo]
        texts = [c + p for c, p in zip(format_chat(lm.tokenizer, [r["prompt"] for r in todo]), prefixes)]
        cont = generate(lm, texts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, chat=False)
    except MosrError as e:
        sys.exit(f"error: {e}")
    kept, counts = [], {v.value: 0 for v in Verdict}
    for r, p, c in zip(todo, prefixes, cont):
        completion = f"{p} {c}" if c and c[0] not in ",.;:!?'" else p + c
        verdict = judge(completion, r["prompt"])
        counts[verdict.value] += 1
        row = {
            "id": r["id"],
            "prompt": r["prompt"],
            "completion": completion,
            "verdict": verdict.value,
            "generator": f"{args.model} prefilled with {args.words} words of {r.get('generator', 'the source')}",
        }
        kept.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f:
        for row in kept:
            if row["verdict"] == Verdict.COMPLIANCE.value:
                f.write(json.dumps(row) + "\n")
    with _skipped_path(out).open("a", encoding="utf-8") as f:
        for row in kept:
            if row["verdict"] != Verdict.COMPLIANCE.value:
                f.write(json.dumps(row) + "\n")
    print(
        f"{out}: {counts['compliance']} compliant kept, {counts['refusal']} refusals and "
        f"{counts['degenerate']} degenerate left out (in {_skipped_path(out).name}) of {len(todo)}"
    )


def _skipped_path(out: Path) -> Path:
    return out.with_name(out.stem + ".skipped.jsonl")


def _skipped(out: Path) -> set[str]:
    p = _skipped_path(out)
    return {json.loads(x)["id"] for x in p.read_text().splitlines() if x.strip()} if p.exists() else set()


if __name__ == "__main__":
    main()
