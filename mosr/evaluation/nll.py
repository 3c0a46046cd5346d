"""Capability NLL: the teacher-forced negative log-likelihood of reference answers (``mosr eval`` NLL sets,
:data:`mosr.evaluation.config.DEFAULT_NLL_SETS`), through the example encoder shared with training
(:mod:`mosr.encoding`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mosr.batching import pad_id, plan_chunks
from mosr.errors import MosrError
from mosr.models import LM, accepts_logits_to_keep


def capability_nll(
    lm: LM,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 16,
    max_batch_tokens: int | None = 4096,
    system: str | None = None,
    max_length: int = 1024,
    on_batch: Any = None,
) -> list[tuple[float | None, int]]:
    """Teacher-forced NLL of reference answers: per prompt ``(mean token NLL, answer tokens)``.

    Each pair is tokenized as an ``sft`` :class:`~mosr.encoding.TrainExample` (chat template, the
    answer tokens plus the end-of-turn EOS labelled, :func:`mosr.encoding.encode`), batched longest
    first (at most ``batch_size`` rows and ``max_batch_tokens`` padded tokens), left padded, run
    without gradients, and reduced with :func:`mosr.losses.token_nll` (float32, nats). Only the
    logits of the answer positions are computed where the model supports ``logits_to_keep``.
    A pair left without an answer token by ``max_length`` gives ``(None, 0)``.
    ``on_batch(index, values)`` is called after every batch (positions into ``prompts``).
    """
    import torch

    from mosr.encoding import TrainExample, collate, encode
    from mosr.losses import IGNORE_INDEX, token_nll

    if len(prompts) != len(completions):
        raise MosrError(f"capability_nll: {len(prompts)} prompts but {len(completions)} completions")
    if not prompts:
        return []
    examples = [TrainExample("sft", p, c, id=str(i)) for i, (p, c) in enumerate(zip(prompts, completions))]
    enc = encode(lm, examples, max_length=max_length, system=system, drop_empty=False)
    chunks = plan_chunks([len(e) for e in enc], batch_size, max_batch_tokens)  # longest first
    fill = pad_id(lm)
    keep_ok = accepts_logits_to_keep(lm.model)
    out: list[tuple[float | None, int]] = [(None, 0)] * len(enc)
    was_training = lm.model.training
    lm.model.eval()
    try:
        for chunk in chunks:
            batch = collate([enc[i] for i in chunk], fill, padding_side="left")
            labels = batch["labels"]
            # left padding: every labelled token sits in the last `keep - 1` positions
            keep = max(len(enc[i]) - enc[i].prompt_len for i in chunk) + 1
            keep = min(keep, labels.shape[1])
            inputs = {k: batch[k].to(lm.device) for k in ("input_ids", "attention_mask", "position_ids")}
            with torch.inference_mode():
                extra = {"logits_to_keep": keep} if keep_ok else {}
                logits = lm.model(**inputs, use_cache=False, **extra).logits[:, -keep:]
                per = token_nll(logits, labels[:, -keep:]).cpu()
            counts = (labels[:, 1:] != IGNORE_INDEX).sum(-1)
            values = [(float(per[j]) if int(counts[j]) else None, int(counts[j])) for j in range(len(chunk))]
            for i, v in zip(chunk, values):
                out[i] = v
            if on_batch is not None:
                on_batch(chunk, values)
    finally:
        lm.model.train(was_training)
    return out
