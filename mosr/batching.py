"""Prompts to padded batches: chat formatting, one tokenization, length sorting, padding, the pad id.

Every forward pass over prompts (capture, generation, refusal scores) goes through
:func:`plan_batches`: prompts are chat-formatted (:func:`mosr.chat.format_chat`), tokenized once,
sorted longest first and cut into batches of at most ``batch_size`` rows and, optionally, at most
``max_batch_tokens`` padded prompt tokens (rows × longest prompt), so a few very long prompts (Koala
has prompts of 3,500 tokens) do not pad a whole batch to their length. ``position_ids`` come from
the attention mask, so left and right padding give the same numbers.

The pad token is :func:`pad_id`: the tokenizer's pad token, else its EOS token, else 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from mosr.chat import format_chat
from mosr.data import PromptSet, as_prompt_list
from mosr.errors import MosrError
from mosr.models import LM

#: default padded-prompt token budget per batch of generation / scoring (rows × longest prompt)
MAX_BATCH_TOKENS = 4096


@dataclass
class Batch:
    """One padded batch. ``index`` maps rows back to the caller's prompt order."""

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    position_ids: Int[Tensor, "batch seq"]
    index: list[int]
    padding_side: str

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        return self.attention_mask.sum(1)

    @property
    def last(self) -> Int[Tensor, " batch"]:
        """Index of the last real token of each row."""
        if self.padding_side == "left":
            return torch.full_like(self.lengths, self.input_ids.shape[1] - 1)
        return self.lengths - 1

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.index,
            self.padding_side,
        )

    def model_inputs(self) -> dict[str, Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}


def pad_id(lm: LM) -> int:
    """The id that fills padded positions: the tokenizer's pad token, else its EOS token, else 0."""
    for candidate in (lm.tokenizer.pad_token_id, lm.tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0


def tokenize(lm: LM, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    """Token ids per text, unpadded."""
    return [list(ids) for ids in lm.tokenizer(list(texts), add_special_tokens=add_special_tokens).input_ids]


def pad(ids: Sequence[Sequence[int]], pad_id: int, padding_side: str, index: list[int]) -> Batch:
    """Pad token lists into a :class:`Batch` with mask-derived position ids."""
    if padding_side not in ("left", "right"):
        raise MosrError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        sl = slice(width - len(x), width) if padding_side == "left" else slice(0, len(x))
        input_ids[i, sl] = torch.tensor(x, dtype=torch.long)
        mask[i, sl] = 1
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    return Batch(input_ids, mask, position_ids, index, padding_side)


def plan_batches(
    lm: LM,
    prompts: str | Sequence[str] | PromptSet,
    batch_size: int = 16,
    max_batch_tokens: int | None = MAX_BATCH_TOKENS,
    chat: bool = True,
    system: str | None = None,
    sort: bool = True,
    padding_side: str = "left",
) -> list[Batch]:
    """Padded batches of at most ``batch_size`` rows and ``max_batch_tokens`` padded prompt tokens.

    Prompts are tokenized once and sorted longest first (``sort=False`` keeps the input order). A
    batch closes when ``rows × longest prompt`` would exceed the token budget; a prompt longer than
    the budget gets a batch of its own. ``max_batch_tokens=None`` disables the budget.
    """
    items = as_prompt_list(prompts)
    texts = format_chat(lm.tokenizer, items, system=system) if chat else items
    ids = tokenize(lm, texts, add_special_tokens=not chat)
    chunks = plan_chunks([len(x) for x in ids], batch_size, max_batch_tokens, sort=sort)
    fill = pad_id(lm)
    return [pad([ids[i] for i in c], fill, padding_side, c) for c in chunks]


def plan_chunks(
    lengths: Sequence[int], batch_size: int = 16, max_batch_tokens: int | None = MAX_BATCH_TOKENS, sort: bool = True
) -> list[list[int]]:
    """The batches of :func:`plan_batches` as index lists, for sequences of these ``lengths`` (any
    token lists: prompts, or encoded prompt + answer examples)."""
    if batch_size < 1:
        raise MosrError(f"batch_size must be ≥ 1, got {batch_size}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise MosrError(f"max_batch_tokens must be ≥ 1 or None, got {max_batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
    budget = max_batch_tokens if max_batch_tokens is not None else float("inf")
    chunks: list[list[int]] = []
    chunk: list[int] = []
    width = 0
    for i in order:
        new_width = max(width, lengths[i])
        if chunk and (len(chunk) + 1 > batch_size or (len(chunk) + 1) * new_width > budget):
            chunks.append(chunk)
            chunk, new_width = [], lengths[i]
        chunk.append(i)
        width = new_width
    if chunk:
        chunks.append(chunk)
    return chunks


def make_batches(
    lm: LM,
    prompts: str | Sequence[str] | PromptSet,
    batch_size: int = 16,
    padding_side: str = "left",
    chat: bool = True,
    system: str | None = None,
    sort: bool = True,
) -> list[Batch]:
    """:func:`plan_batches` without a token budget (rows only), as capture uses it."""
    return plan_batches(
        lm, prompts, batch_size, max_batch_tokens=None, chat=chat, system=system, sort=sort, padding_side=padding_side
    )
