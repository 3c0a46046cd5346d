"""Batched greedy generation: chat-formatted, length-sorted, left-padded, KV-cached.

``generate(lm, prompts, max_new_tokens=64) -> list[str]`` returns one response per prompt, in the
caller's order, with special tokens stripped and everything after the first end-of-sequence token
dropped. Prompts are tokenized once and sorted by length (longest first, see
:func:`mosr.batching.plan_batches`) so batches carry little padding; padding sits on the left with an
explicit attention mask, so every row's first new token directly follows its last prompt token.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mosr.batching import MAX_BATCH_TOKENS, Batch, plan_batches
from mosr.data import PromptSet
from mosr.errors import MosrError
from mosr.models import LM, accepts_logits_to_keep
from mosr.types import Float

#: called after each batch with (input-order indices of the batch rows, their responses)
BatchCallback = Callable[[list[int], list[str]], None]


@dataclass
class Generation:
    """Responses plus token counts (for throughput accounting) and, when asked, first-step refusal scores."""

    responses: list[str]
    new_tokens: list[int]  # generated tokens per prompt (EOS included when emitted)
    prompt_tokens: list[int]
    refusal_scores: list[float] | None = None


@dataclass
class GeneratedBatch:
    """One finished batch, handed to ``on_batch`` callbacks (rows in batch order)."""

    index: list[int]  # input-order position of each row
    responses: list[str]
    new_tokens: list[int]
    refusal_scores: list[float] | None = None


def stop_token_ids(lm: LM) -> list[int]:
    """Token ids that end a response: the tokenizer's EOS plus the generation config's EOS ids."""
    ids: list[int] = []
    gen = getattr(lm.model, "generation_config", None)
    candidates: list[object] = [lm.tokenizer.eos_token_id, getattr(gen, "eos_token_id", None)]
    for c in candidates:
        for t in c if isinstance(c, (list, tuple)) else [c]:
            if isinstance(t, int) and t not in ids:
                ids.append(t)
    if not ids:
        raise MosrError(f"{lm.name}: tokenizer has no eos_token_id, cannot tell where a response ends")
    return ids


def cut_at_stop(ids: Sequence[int], stops: Sequence[int]) -> tuple[list[int], int]:
    """Tokens before the first stop token, and the number of generated tokens (stop included)."""
    out: list[int] = []
    for t in ids:
        if t in stops:
            return out, len(out) + 1
        out.append(int(t))
    return out, len(out)


def refusal_log_odds(logits: Tensor, token_ids: Sequence[int]) -> Tensor:
    """``log p(R) − log(1 − p(R))`` with ``p(R)`` the softmax mass of ``token_ids``.

    ``logits``: batch vocab. Returns: batch (float32).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    lse = torch.logsumexp(logp[:, torch.as_tensor(list(token_ids), device=logp.device)], dim=-1).clamp(max=-1e-7)
    return lse - torch.log(-torch.expm1(lse))


@torch.inference_mode()
def generate_batch(
    lm: LM, batch: Batch, max_new_tokens: int, first_logits: bool = False
) -> tuple[list[list[int]], Tensor | None]:
    """Greedy continuation of one left-padded batch (:func:`greedy`, the tokenizer's stop tokens).

    Returns new token ids per row (batch order) and, with ``first_logits``, the raw logits of the
    first response position (``batch vocab``), which the refusal score needs (no extra forward pass).
    """
    if batch.padding_side != "left":
        raise MosrError("generation needs left padding (new tokens are appended on the right)")
    rows, first = greedy(lm, batch.to(lm.device), max_new_tokens, stop_token_ids(lm))
    return rows, (first if first_logits else None)


def cache_kwarg(model: torch.nn.Module) -> str:
    """The name under which ``model.forward`` takes the KV cache and its output returns it (transformers ≥ 5.25:
    ``cache``, before: ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def greedy(
    lm: LM, batch: Batch, max_new_tokens: int, stops: Sequence[int]
) -> tuple[list[list[int]], Float[Tensor, "batch vocab"]]:
    """Greedy decoding of a left-padded batch with a KV cache, the same tokens as ``model.generate(do_sample=False)``.

    Each step runs only the rows still generating: a row that emits a stop token leaves the batch (its
    cache rows are dropped), so short answers (refusals) stop costing compute, and the unembedding is
    computed at the last position only. Position ids count real tokens, as ``generate`` does under left
    padding. Returns each row's new tokens (the stop token included, nothing after it) and the raw logits
    of the first response position.
    """
    model, key = lm.model, cache_kwarg(lm.model)
    keep_last = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    mask = batch.attention_mask
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=batch.input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **keep_last)
    logits = out.logits[:, -1]
    first = logits.float().clone()
    cache, position = out[key], positions[:, -1:]
    stop = torch.as_tensor(list(stops), device=logits.device)
    live = torch.arange(mask.shape[0], device=logits.device)
    rows: list[list[int]] = [[] for _ in range(mask.shape[0])]
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        for r, t in zip(live.tolist(), token.tolist()):
            rows[r].append(t)
        going = ~torch.isin(token, stop)
        if step == max_new_tokens - 1 or not bool(going.any()):
            break
        if not bool(going.all()):
            idx = going.nonzero().squeeze(1)
            cache.batch_select_indices(idx)
            live, mask, position, token = live[idx], mask[idx], position[idx], token[idx]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        position = position + 1
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=position,
            use_cache=True,
            **{key: cache},
            **keep_last,
        )
        cache, logits = out[key], out.logits[:, -1]
    return rows, first


def generate_full(
    lm: LM,
    prompts: str | Sequence[str] | PromptSet,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    chat: bool = True,
    system: str | None = None,
    progress: bool = True,
    on_batch: Callable[[GeneratedBatch], None] | None = None,
    sort: bool = True,
    score: bool = False,
    max_batch_tokens: int | None = MAX_BATCH_TOKENS,
) -> Generation:
    """:func:`generate` plus per-prompt token counts and (``score=True``) refusal log-odds at the first
    response position (see :func:`mosr.evaluation.judge.refusal_scores`); ``on_batch`` sees each finished batch.
    Batches follow :func:`plan_batches` (``batch_size`` rows, ``max_batch_tokens`` padded prompt tokens)."""
    if max_new_tokens < 1:
        raise MosrError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    batches = plan_batches(
        lm, prompts, batch_size=batch_size, max_batch_tokens=max_batch_tokens, chat=chat, system=system, sort=sort
    )
    n = sum(len(b.index) for b in batches)
    responses: list[str] = [""] * n
    new_tokens = [0] * n
    prompt_tokens = [0] * n
    scores: list[float] | None = [0.0] * n if score else None
    stops = stop_token_ids(lm)
    bar = tqdm(total=n, desc="generate", disable=not progress, unit="prompt")
    for batch in batches:
        rows, logits = generate_batch(lm, batch, max_new_tokens, first_logits=score)
        batch_scores = refusal_log_odds(logits, lm.refusal_token_ids).tolist() if logits is not None else None
        done = GeneratedBatch(list(batch.index), [], [], batch_scores)
        for j, (row, ids, length) in enumerate(zip(batch.index, rows, batch.lengths.tolist())):
            kept, count = cut_at_stop(ids, stops)
            responses[row] = lm.tokenizer.decode(kept, skip_special_tokens=True).strip()
            new_tokens[row] = count
            prompt_tokens[row] = int(length)
            done.responses.append(responses[row])
            done.new_tokens.append(count)
            if scores is not None and batch_scores is not None:
                scores[row] = batch_scores[j]
        if on_batch is not None:
            on_batch(done)
        bar.update(len(batch.index))
    bar.close()
    return Generation(responses, new_tokens, prompt_tokens, scores)


def generate(
    lm: LM,
    prompts: str | Sequence[str] | PromptSet,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    chat: bool = True,
    system: str | None = None,
    progress: bool = True,
    on_batch: BatchCallback | None = None,
) -> list[str]:
    """Greedy responses of ``lm`` to ``prompts`` (KV cache, left padding, length-sorted batches).

    Args:
        lm: model from :func:`mosr.load`.
        prompts: a string, a list of strings or a :class:`~mosr.data.PromptSet`.
        max_new_tokens: generation budget per prompt; a response stops earlier at EOS.
        batch_size: prompts per batch.
        chat: apply the chat template with the assistant header (default) or use the raw text.
        system: optional system prompt for the chat template.
        on_batch: optional ``fn(indices, responses)`` called after each batch (input-order indices).

    Returns:
        one response per prompt, in input order, special tokens stripped, surrounding whitespace removed.
    """
    callback = None if on_batch is None else (lambda b: on_batch(b.index, b.responses))
    return generate_full(lm, prompts, max_new_tokens, batch_size, chat, system, progress, callback).responses
