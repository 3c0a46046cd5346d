"""A (prompt, response) example tokenized with the chat template: :class:`TrainExample`, its tokenisation
(:func:`encode`) and its batching (:func:`collate`). Training builds its examples from these
(:mod:`mosr.train.data`: where the examples of one run come from); evaluation scores reference answers
with them (:func:`mosr.evaluation.nll.capability_nll`).

Kinds of example and what each trains:

============  ===================================  =================================================
kind          response                             masks after :func:`encode`
============  ===================================  =================================================
``erase``     harmful completion ``y_h``           ``response_mask`` = response tokens (erase loss)
``retain``    a good answer (or an aug. refusal)   ``response_mask`` = response tokens (retain loss)
``refusal``   ``response_prefix`` (harmful, not    ``labels`` = refusal tokens only (NLL);
              trained) + refusal                   ``response_mask`` = prefix + refusal tokens
``sft``       the target answer / refusal          ``labels`` = every response token (NLL)
============  ===================================  =================================================

Tokenisation: the text is ``format_chat(tokenizer, [prompt], responses=[prefix + response])`` tokenized
with ``add_special_tokens=False``; its first tokens are checked to equal the chat-formatted prompt
alone (the tokens :mod:`mosr.capture` sees). A token belongs to the trained refusal when its
character span ends after the prefix (offset mapping of fast tokenizers). Where the check fails, or
the tokenizer has no offsets, the example is built by concatenating the token ids of prompt, prefix
and response tokenized separately (exact segment boundaries; counted in the log).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mosr.batching import pad
from mosr.chat import format_chat, template_head
from mosr.data import Record
from mosr.errors import DataError, MosrError
from mosr.losses import IGNORE_INDEX
from mosr.models import LM

log = logging.getLogger(__name__)

#: the kinds of training example, in the order batches are assembled (see the module docstring)
KINDS: tuple[str, ...] = ("erase", "retain", "refusal", "sft", "boundary")
KIND_IDS: dict[str, int] = {k: i for i, k in enumerate(KINDS)}
__all__ = ["IGNORE_INDEX", "KINDS", "KIND_IDS", "EncodedExample", "TrainExample", "collate", "encode", "examples_from"]


@dataclass
class TrainExample:
    """One training example. The full assistant text is ``response_prefix + response``."""

    kind: str
    prompt: str
    response: str
    #: refusal examples: the harmful prefix that sits in context but is not trained
    response_prefix: str = ""
    id: str = ""
    #: per-sample loss weight (overlap-aware erasure weight for ``erase`` examples)
    weight: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"unknown example kind {self.kind!r}; use one of {KINDS}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise DataError(f"example {self.id!r}: empty prompt")
        if self.response_prefix and self.kind != "refusal":
            raise DataError(f"example {self.id!r}: response_prefix is only meaningful for refusal examples")
        if not self.weight >= 0:
            raise DataError(f"example {self.id!r}: weight must be ≥ 0, got {self.weight}")


@dataclass
class EncodedExample:
    """Token ids and masks of one example (unpadded lists of equal length)."""

    input_ids: list[int]
    attention_mask: list[int]
    #: 1 on response tokens (prefix included): where erase / retain losses apply
    response_mask: list[int]
    #: token id where trained with NLL, else -100 (aligned with input_ids; the loss shifts)
    labels: list[int]
    kind: str
    id: str
    weight: float
    prompt_len: int
    #: tokens of the chat template's shared head (same state for every prompt; :func:`mosr.chat.template_head`)
    head: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


def _tokenizer(lm_or_tokenizer: LM | Any) -> Any:
    return lm_or_tokenizer.tokenizer if isinstance(lm_or_tokenizer, LM) else lm_or_tokenizer


def _ids(tok: Any, texts: Sequence[str]) -> list[list[int]]:
    return [list(x) for x in tok(list(texts), add_special_tokens=False).input_ids] if texts else []


def encode(
    lm_or_tokenizer: LM | Any,
    examples: Sequence[TrainExample],
    max_length: int = 512,
    add_eos: bool = True,
    system: str | None = None,
    drop_empty: bool = True,
) -> list[EncodedExample]:
    """Tokenize examples with the chat template (see the module docstring for the masks).

    Args:
        lm_or_tokenizer: an :class:`~mosr.models.LM` or a tokenizer with a chat template.
        examples: the examples.
        max_length: sequences are cut on the right to this many tokens.
        add_eos: append the tokenizer's EOS (end of turn) to ``refusal`` / ``sft`` responses and
            train it, so the model learns to stop after the refusal / answer.
        system: optional system prompt for the chat template.
        drop_empty: drop (with a logged count) examples left without a response token after
            truncation, instead of keeping them with an empty mask.
    """
    tok = _tokenizer(lm_or_tokenizer)
    if max_length < 2:
        raise MosrError(f"max_length must be ≥ 2, got {max_length}")
    if not examples:
        return []
    prompts = [e.prompt for e in examples]
    prompt_texts = format_chat(tok, prompts, system=system)
    full_texts = format_chat(tok, prompts, system=system, responses=[e.response_prefix + e.response for e in examples])
    prompt_ids = _ids(tok, prompt_texts)
    fast = bool(getattr(tok, "is_fast", False))
    if fast:
        enc = tok(full_texts, add_special_tokens=False, return_offsets_mapping=True)
        full_ids, offsets = enc.input_ids, enc.offset_mapping
    eos = tok.eos_token_id
    head = template_head(tok, system)
    out: list[EncodedExample] = []
    fallback = dropped = truncated = 0
    for i, ex in enumerate(examples):
        p = prompt_ids[i]
        if fast and list(full_ids[i][: len(p)]) == p:
            ids = list(full_ids[i])
            boundary = len(prompt_texts[i]) + len(ex.response_prefix)
            trained = [j >= len(p) and offsets[i][j][1] > boundary for j in range(len(ids))]
        else:
            fallback += 1
            pre = _ids(tok, [ex.response_prefix])[0] if ex.response_prefix else []
            resp = _ids(tok, [ex.response])[0] if ex.response else []
            ids = p + pre + resp
            trained = [False] * (len(p) + len(pre)) + [True] * len(resp)
        response_mask = [int(j >= len(p)) for j in range(len(ids))]
        if ex.kind in ("refusal", "sft") and add_eos and eos is not None:
            ids.append(int(eos))
            trained.append(True)
            response_mask.append(1)
        if ex.kind == "sft":
            trained = [bool(m) for m in response_mask]
        elif ex.kind in ("erase", "retain"):
            trained = [False] * len(ids)
        labels = [t if tr else IGNORE_INDEX for t, tr in zip(ids, trained)]
        if len(ids) > max_length:
            truncated += 1
            ids, labels, response_mask = ids[:max_length], labels[:max_length], response_mask[:max_length]
        if drop_empty and not any(response_mask):
            dropped += 1
            continue
        out.append(
            EncodedExample(
                ids,
                [1] * len(ids),
                response_mask,
                labels,
                ex.kind,
                ex.id,
                float(ex.weight),
                min(len(p), len(ids)),
                min(head, len(ids)),
            )
        )
    if fallback and fast:
        log.info(
            "%d of %d examples tokenized segment-wise (prompt tokens changed when the response was appended)",
            fallback,
            len(examples),
        )
    if truncated:
        log.info("%d of %d examples cut to max_length=%d tokens", truncated, len(examples), max_length)
    if dropped:
        log.warning(
            "dropped %d of %d examples with no response token left (empty response or prompt longer than "
            "max_length=%d)",
            dropped,
            len(examples),
            max_length,
        )
    return out


def collate(encoded: Sequence[EncodedExample], pad_id: int, padding_side: str = "right") -> dict[str, Tensor]:
    """Pad encoded examples into batch tensors.

    Returns ``input_ids``, ``attention_mask``, ``position_ids`` (from the mask, see
    :func:`mosr.batching.pad`), ``response_mask``, ``content_mask`` (1 on the request and response tokens:
    every token after the template's shared head), ``labels`` (all ``batch seq``), ``weight``
    (float ``batch``) and ``kind`` (long ``batch``, index into :data:`KINDS`).
    """
    if not encoded:
        raise MosrError("collate: empty batch")
    batch = pad([e.input_ids for e in encoded], pad_id, padding_side, list(range(len(encoded))))
    width = batch.input_ids.shape[1]
    response_mask = torch.zeros_like(batch.attention_mask)
    content_mask = torch.zeros_like(batch.attention_mask)
    labels = torch.full_like(batch.input_ids, IGNORE_INDEX)
    for i, e in enumerate(encoded):
        sl = slice(width - len(e), width) if padding_side == "left" else slice(0, len(e))
        response_mask[i, sl] = torch.tensor(e.response_mask, dtype=torch.long)
        content_mask[i, sl] = (torch.arange(len(e)) >= e.head).long()
        labels[i, sl] = torch.tensor(e.labels, dtype=torch.long)
    return {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "position_ids": batch.position_ids,
        "response_mask": response_mask,
        "content_mask": content_mask,
        "labels": labels,
        "weight": torch.tensor([e.weight for e in encoded], dtype=torch.float32),
        "kind": torch.tensor([KIND_IDS[e.kind] for e in encoded], dtype=torch.long),
    }


# --- building examples from records -----------------------------------------------------------------


def examples_from(
    records: Iterable[Record], kind: str, field_name: str = "completion", weights: dict[str, float] | None = None
) -> list[TrainExample]:
    """One example per record with ``response = record.<field_name>`` (``completion`` / ``refusal``).

    ``weights`` (``id -> weight``, e.g. :meth:`mosr.train.weighting.WeightResult.as_dict`) sets per-sample
    weights; a record missing from it raises.
    """
    out = []
    for r in records:
        response = getattr(r, field_name, None) if field_name in ("completion", "refusal") else r.extra.get(field_name)
        if response is None:
            raise DataError(f"record {r.id!r} has no {field_name!r} for a {kind!r} example")
        if weights is not None and r.id not in weights:
            raise DataError(f"no weight for record {r.id!r}: the weights were computed on another prompt set")
        out.append(
            TrainExample(kind, r.prompt, str(response), id=r.id, weight=weights[r.id] if weights is not None else 1.0)
        )
    return out
