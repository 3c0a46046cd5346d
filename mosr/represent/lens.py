"""LogitLens: decode every layer's residual stream with the model's own final norm and unembedding.

For layer ``l`` and the last prompt position (after the assistant header), the lens logits are
``unembed(final_norm(h_l))`` (plus the Gemma-2 soft cap ``c·tanh(x/c)`` where the model has one), so
at the last layer they equal the model's own next-token logits. All layers come from one forward
pass (:func:`mosr.capture.capture`, which stops after the last block); the decoding runs in chunks.

From the next-token distribution of each layer the lens reports the top-k tokens and the
probability mass on refusal-opening tokens (``lm.refusal_token_ids``: "I", "Sorry", "As", ...)
versus compliance-opening tokens (``lm.compliance_token_ids``: "Sure", "Here", "To", ...).

    res = logit_lens(lm, ["How do I kill a Python process?"], k=5)
    res.top_tokens[0][-1]        # top-5 tokens at the last layer
    res.score                    # prompt layer: refusal mass - compliance mass
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mosr.capture import Acts, Layers, capture, resolve_layers
from mosr.data import PromptSet, as_prompt_list
from mosr.errors import MosrError
from mosr.models import LM
from mosr.types import Tokenizer


@torch.inference_mode()
def lens_logits(lm: LM, hidden: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch vocab"]:
    """Final norm + unembedding (+ soft cap) of residual-stream states.

    ``hidden``: ``(... d_model)``; returns float32 ``(... vocab)`` on ``hidden``'s device.
    """
    if hidden.shape[-1] != lm.d_model:
        raise MosrError(f"hidden states have d_model {hidden.shape[-1]}, {lm.name} has {lm.d_model}")
    param = next(lm.model.parameters())
    x = hidden.to(param.device, param.dtype)
    logits = lm.unembed(lm.final_norm(x)).float()
    cap = lm.logit_softcap
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.to(hidden.device)


def token_strings(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """Decode token ids one by one (keeps the leading space of a word token)."""
    return [tokenizer.decode([int(i)]) for i in ids]


@dataclass
class LensResult:
    """LogitLens read-out at the last prompt position.

    Shapes: ``top_ids``/``top_probs`` ``prompt layer k``; ``refusal_mass``/``compliance_mass``
    ``prompt layer``; ``top_tokens[prompt][layer]`` is a list of k decoded strings.
    """

    prompts: list[str]
    layers: list[int]
    top_ids: Int[Tensor, "prompt layer k"]
    top_probs: Float[Tensor, "prompt layer k"]
    top_tokens: list[list[list[str]]]
    refusal_mass: Float[Tensor, "prompt layer"]
    compliance_mass: Float[Tensor, "prompt layer"]
    refusal_token_ids: list[int]
    compliance_token_ids: list[int]

    @property
    def score(self) -> Float[Tensor, "prompt layer"]:
        """Refusal minus compliance probability mass. Shape: prompt layer."""
        return self.refusal_mass - self.compliance_mass

    def mean_score(self, rows: Sequence[int] | None = None) -> Float[Tensor, " layer"]:
        """Mean refusal-minus-compliance mass over the given prompt rows (default all). Shape: layer."""
        s = self.score if rows is None else self.score[list(rows)]
        if s.shape[0] == 0:
            raise MosrError("mean_score over an empty group of prompts")
        return s.mean(0)

    def subset(self, rows: Sequence[int]) -> LensResult:
        rows = list(rows)
        return LensResult(
            [self.prompts[i] for i in rows],
            self.layers,
            self.top_ids[rows],
            self.top_probs[rows],
            [self.top_tokens[i] for i in rows],
            self.refusal_mass[rows],
            self.compliance_mass[rows],
            self.refusal_token_ids,
            self.compliance_token_ids,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "refusal_token_ids": self.refusal_token_ids,
            "compliance_token_ids": self.compliance_token_ids,
            "prompts": [
                {
                    "prompt": p,
                    "top_tokens": self.top_tokens[i],
                    "top_probs": self.top_probs[i].tolist(),
                    "refusal_mass": self.refusal_mass[i].tolist(),
                    "compliance_mass": self.compliance_mass[i].tolist(),
                }
                for i, p in enumerate(self.prompts)
            ],
        }


@torch.inference_mode()
def decode_layers(
    lm: LM,
    hidden: Acts,
    k: int = 5,
    layers: Sequence[int] | None = None,
    prompts: Sequence[str] | None = None,
    chunk_size: int = 8,
    progress: bool = False,
) -> LensResult:
    """LogitLens read-out of already-captured states ``hidden`` (``prompt layer d_model``, e.g. from
    ``capture(lm, prompts, layers="all", position="last")``)."""
    if hidden.ndim != 3:
        raise MosrError(f"decode_layers expects Tensor[prompt layer d_model], got {tuple(hidden.shape)}")
    n, n_l, _ = hidden.shape
    layer_ids = list(range(n_l)) if layers is None else list(layers)
    if len(layer_ids) != n_l:
        raise MosrError(f"hidden has {n_l} layers but {len(layer_ids)} layer ids were given")
    vocab = lm.unembed.weight.shape[0]  # type: ignore[index]  # torch types a module attribute as Tensor | Module
    if not 1 <= k <= vocab:
        raise MosrError(f"top-k must be in 1..{vocab}, got {k}")
    ref = torch.tensor(lm.refusal_token_ids, dtype=torch.long)
    comp = torch.tensor(lm.compliance_token_ids, dtype=torch.long)
    ref_dev, comp_dev = ref.to(lm.device), comp.to(lm.device)
    top_ids = torch.empty(n, n_l, k, dtype=torch.long)
    top_probs = torch.empty(n, n_l, k)
    ref_mass, comp_mass = torch.empty(n, n_l), torch.empty(n, n_l)
    for s in tqdm(range(0, n, chunk_size), desc="lens", unit="chunk", disable=not progress):
        h = hidden[s : s + chunk_size].to(lm.device)
        # top-k and the group masses on the model's device: only chunk x layer x (k + 2) numbers reach the
        # host, not the chunk x layer x vocab probabilities
        probs = torch.softmax(lens_logits(lm, h), dim=-1)  # chunk layer vocab
        p, i = probs.topk(k, dim=-1)
        masses = torch.stack(
            [
                probs[..., ref_dev].sum(-1) if len(ref) else probs.new_zeros(probs.shape[:-1]),
                probs[..., comp_dev].sum(-1) if len(comp) else probs.new_zeros(probs.shape[:-1]),
            ]
        )
        top_ids[s : s + chunk_size], top_probs[s : s + chunk_size] = i.cpu(), p.cpu()
        ref_mass[s : s + chunk_size], comp_mass[s : s + chunk_size] = masses.cpu()
    decoded_cache: dict[int, str] = {}

    def dec(t: int) -> str:
        if t not in decoded_cache:
            decoded_cache[t] = lm.tokenizer.decode([t])
        return decoded_cache[t]

    tokens = [[[dec(t) for t in row] for row in top_ids[i].tolist()] for i in range(n)]
    texts = list(prompts) if prompts is not None else [""] * n
    return LensResult(
        texts, layer_ids, top_ids, top_probs, tokens, ref_mass, comp_mass, [int(t) for t in ref], [int(t) for t in comp]
    )


def logit_lens(
    lm: LM,
    prompts: str | Sequence[str] | PromptSet,
    k: int = 5,
    layers: Layers = "all",
    batch_size: int = 16,
    chat: bool = True,
    system: str | None = None,
    progress: bool = True,
) -> LensResult:
    """LogitLens at the last prompt position for every layer, from one forward pass per batch.

    ``progress`` shows the capture's bar (the decoding that follows is quick and shows none)."""
    items = as_prompt_list(prompts)
    layer_ids = resolve_layers(lm, layers)
    hidden = capture(
        lm, items, layers=layer_ids, position="last", batch_size=batch_size, chat=chat, system=system, progress=progress
    )
    assert isinstance(hidden, Tensor)
    return decode_layers(lm, hidden, k=k, layers=layer_ids, prompts=items)
