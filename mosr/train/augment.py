"""Context-Aware Augmentation (docs/method.md §5).

From a harmful triple ``(x_h, y_h, y_refuse)`` build the refusal example
``x_h → [first k tokens of y_h] + y_refuse`` with ``k ~ U{k_min, …, k_max}`` (default 0–32; k = 0 is
the plain refusal). Only the refusal tokens are trained (NLL, weighted by β in the loop); the harmful
prefix sits in context, so the model learns to refuse *in harmful context* — also after it has
started to comply — rather than on surface cues of the prompt.

The prefix cut is tokenizer-exact: it is the decoded first ``k`` token ids of ``y_h`` tokenized on
its own (``add_special_tokens=False``). When that decode is not a string prefix of ``y_h`` (the k-th
token ends inside a multi-byte character, or the tokenizer's decode changes spaces), the cut ends
at the character offset where the k-th token ends, so the prefix is always a prefix of ``y_h``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mosr.config import Config
from mosr.data import Record
from mosr.encoding import TrainExample, _tokenizer
from mosr.errors import ConfigError, DataError, MosrError
from mosr.train.refusals import refusal_for


@dataclass
class AugmentConfig(Config):
    """Context-aware augmentation options (defaults = docs/method.md §5)."""

    #: smallest harmful-prefix length in tokens (0 = plain refusal)
    k_min: int = 0
    #: largest harmful-prefix length in tokens (inclusive)
    k_max: int = 32
    #: weight β of the refusal NLL term L_aug in the training loss (read by the loop)
    beta: float = 1.0
    #: seed of the k draws and of the refusal template choice
    seed: int = 0
    #: text between a non-empty prefix and the refusal (part of the trained refusal); not added
    #: when the prefix already ends in whitespace
    separator: str = " "

    def __post_init__(self) -> None:
        if self.k_min < 0 or self.k_max < self.k_min:
            raise ConfigError(f"AugmentConfig needs 0 ≤ k_min ≤ k_max, got k_min={self.k_min}, k_max={self.k_max}")
        if self.beta < 0:
            raise ConfigError(f"AugmentConfig.beta must be ≥ 0, got {self.beta}")


def harmful_prefix(tokenizer: Any, completion: str, k: int) -> str:
    """The first ``k`` tokens of ``completion`` as text (``""`` for k = 0, all of it for k ≥ its length)."""
    if k < 0:
        raise MosrError(f"prefix length k must be ≥ 0, got {k}")
    if k == 0 or not completion:
        return ""
    enc = tokenizer(
        completion, add_special_tokens=False, return_offsets_mapping=bool(getattr(tokenizer, "is_fast", False))
    )
    ids = list(enc.input_ids)
    if k >= len(ids):
        return completion
    text = tokenizer.decode(ids[:k], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if completion.startswith(text):
        return text
    offsets = enc.get("offset_mapping")
    if offsets is not None:
        return completion[: max(end for _, end in offsets[:k])]
    # slow tokenizer: drop a partial trailing character, then back off until the decode is a prefix
    text = text.rstrip("\ufffd")
    while text and not completion.startswith(text):
        k -= 1
        text = tokenizer.decode(ids[:k], skip_special_tokens=False, clean_up_tokenization_spaces=False).rstrip("\ufffd")
    return text


def augment_example(
    tokenizer: Any, prompt: str, completion: str, refusal: str, k: int, separator: str = " ", id: str = ""
) -> TrainExample:
    """One refusal example: ``prompt → harmful_prefix(completion, k) + separator + refusal``."""
    if not refusal.strip():
        raise DataError(f"example {id!r}: empty refusal")
    prefix = harmful_prefix(tokenizer, completion, k)
    sep = separator if prefix and not prefix[-1].isspace() else ""
    return TrainExample(
        "refusal", prompt, sep + refusal, response_prefix=prefix, id=id, meta={"k": k, "prefix_chars": len(prefix)}
    )


def draw_k(record_id: str, cfg: AugmentConfig) -> int:
    """The prefix length of one record: uniform on ``k_min..k_max``, seeded by ``cfg.seed`` and the id
    (independent of record order)."""
    return random.Random(f"{cfg.seed}\x00{record_id}").randint(cfg.k_min, cfg.k_max)


def augment(
    tokenizer: Any,
    records: Iterable[Record] | Sequence[Record],
    cfg: AugmentConfig | None = None,
    id_suffix: str = ":aug",
) -> list[TrainExample]:
    """Augmented refusal examples of harmful records (``completion`` required; ``refusal`` from the
    record or :func:`mosr.train.refusals.refusal_for`)."""
    cfg = cfg or AugmentConfig()
    tok = _tokenizer(tokenizer)  # accept an LM too
    out = []
    for r in records:
        if r.completion is None:
            raise DataError(
                f"record {r.id!r} has no harmful completion: run mosr.train.sources.harmful_completions first"
            )
        refusal = r.refusal if r.refusal else refusal_for(r.id, cfg.seed)
        out.append(
            augment_example(
                tok, r.prompt, r.completion, refusal, draw_k(r.id, cfg), cfg.separator, id=f"{r.id}{id_suffix}"
            )
        )
    if not out:
        raise DataError("augment: no harmful records given")
    return out
