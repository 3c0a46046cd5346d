"""LoRA on the model being trained, and :class:`TrainForward`, the one module call per micro-batch that
runs both the frozen reference (adapters disabled) and the trained model and returns the hidden states
the losses compare.

Shapes: ``batch seq`` token tensors in, ``batch layer seq d_model`` hidden states out (``layer`` runs over
the hooked layers in ascending order), ``batch kept vocab`` logits: the last ``kept`` positions, from the one
before the micro-batch's first labelled token on (:func:`logits_span`), because the NLL needs no others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mosr.adapters import quiet_peft
from mosr.capture import StopForward, hooked
from mosr.errors import ConfigError
from mosr.losses import IGNORE_INDEX
from mosr.models import LM, accepts_logits_to_keep
from mosr.train.config import TrainConfig
from mosr.types import Float, Int

if TYPE_CHECKING:
    from peft import PeftModel


def attach_lora(lm: LM, cfg: TrainConfig) -> PeftModel:
    """Wrap ``lm.model`` in a peft LoRA model (in place: ``lm.model`` stays the base model object)."""
    from peft import LoraConfig, get_peft_model

    assert cfg.lora.layers is not None and cfg.lora.modules is not None
    present = {name.rsplit(".", 1)[-1] for name, _ in lm.model.named_modules()}
    missing = [m for m in cfg.lora.modules if m not in present]
    if missing:
        raise ConfigError(
            f"lora.modules {missing} not found in {lm.name} (module names include "
            f"{sorted(p for p in present if 'proj' in p or p.startswith('c_'))[:12]})"
        )
    lora = LoraConfig(
        r=cfg.lora.rank,
        lora_alpha=cfg.lora.alpha,  # type: ignore[arg-type]  # peft takes a float alpha; its annotation says int
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.modules),
        layers_to_transform=list(cfg.lora.layers),
        layers_pattern=lm.arch.blocks.rsplit(".", 1)[-1],
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=lm.arch.family == "gpt2",
    )  # GPT-2 uses Conv1D (weights transposed)
    with quiet_peft():
        peft_model = get_peft_model(lm.model, lora)
    _set_modes(peft_model)
    return peft_model


def _set_modes(model: nn.Module) -> None:
    """Eval mode everywhere (deterministic reference states) except the LoRA dropout modules."""
    model.eval()
    for name, module in model.named_modules():
        if "lora_dropout" in name:
            module.train()


def logits_span(labels: Int[Tensor, "batch seq"]) -> int:
    """How many trailing positions' logits a next-token NLL on ``labels`` needs: from the position before the
    first column with a labelled token to the end (``seq``, i.e. all, when nothing or column 0 is labelled).

    It is transformers' ``logits_to_keep``: the unembedding (``d_model × vocab``, on SmolLM2 8 blocks' worth of
    multiply-adds per token) then skips the prompt and harmful-prefix tokens, which carry no label."""
    cols = (labels != IGNORE_INDEX).any(0).nonzero()
    first = int(cols[0]) if cols.numel() else 0
    return labels.shape[1] - max(first - 1, 0)


class TrainForward(nn.Module):
    """One module call per micro-batch (what ``accelerator.prepare`` wraps for DDP / FSDP).

    ``forward(hidden=..., logits=...)`` runs, for each non-empty group, the frozen reference (adapters
    disabled, no grad, truncated) and the trained model, recording block outputs of ``layers``. The
    ``hidden`` group stops after the deepest layer when ``truncate``; the ``logits`` group runs the full
    model. The reference forward is always truncated. Returns a dict of ``<group>_h`` / ``<group>_ref``
    (``batch layer seq d_model``) and ``logits_logits`` (``batch kept vocab``: the last ``kept`` =
    :func:`logits_span` positions; all of them for a group without ``labels``).
    """

    def __init__(self, peft_model: PeftModel, lm: LM, layers: Sequence[int], truncate: bool = True) -> None:
        super().__init__()
        self.peft_model = peft_model
        # the LM view on the wrapped base model: block paths resolve inside the peft wrapper
        self._view = LM(model=peft_model.get_base_model(), tokenizer=lm.tokenizer, arch=lm.arch, name=lm.name)
        self.layers = list(layers)
        self.truncate = truncate
        self._keep_logits = accepts_logits_to_keep(lm.model)  # else every position's logits

    def _run(
        self, batch: dict[str, Tensor], stop: bool, adapters: bool, hook: bool, keep: int = 0
    ) -> tuple[Tensor | None, Tensor | None]:
        """One forward of ``batch`` (``input_ids`` / ``attention_mask`` / ``position_ids``, ``batch seq``)
        with or without the adapters; returns the hooked states (``batch layer seq d_model``, None without
        ``hook``) and the logits of the last ``keep`` positions (``batch keep vocab``; 0: all; None when
        ``stop`` ended the forward early)."""
        inputs: dict[str, Tensor | int] = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
        if keep:
            inputs["logits_to_keep"] = keep
        # transformers checkpoints a block only in train mode, and the model runs in eval mode (no
        # dropout): set the blocks' own flag, for the forward that builds a graph
        for block in self._view.blocks:
            block.training = adapters and bool(getattr(block, "gradient_checkpointing", False))
        if not (hook and self.layers):
            return None, self.peft_model(**inputs, use_cache=False).logits
        with hooked(self._view, self.layers, stop=stop) as store:
            try:
                if adapters:
                    out = self.peft_model(**inputs, use_cache=False)
                else:
                    with self.peft_model.disable_adapter():
                        out = self.peft_model(**inputs, use_cache=False)
            except StopForward:
                out = None
        hidden = torch.stack([store[layer] for layer in self.layers], dim=1)
        return hidden, (out.logits if out is not None else None)

    def forward(
        self,
        hidden: dict[str, Int[Tensor, "batch seq"]] | None = None,
        logits: dict[str, Int[Tensor, "batch seq"]] | None = None,
        states: Sequence[str] = ("hidden", "logits"),
        refs: dict[str, Float[Tensor, "batch layer seq d_model"]] | None = None,
    ) -> dict[str, Tensor]:
        """``hidden`` / ``logits``: the collated groups of :class:`~mosr.train.batches.StepInputs`
        (``batch seq`` tensors); ``states``: the groups whose hidden states (trained + reference) a loss
        needs; ``refs``: cached reference states per group (``batch layer seq d_model``), which skip the
        reference forward."""
        out: dict[str, Tensor] = {}
        refs = refs or {}
        for group, batch, need_logits in (("hidden", hidden, False), ("logits", logits, True)):
            if batch is None:
                continue
            hook = group in states
            if hook and group in refs:
                out[f"{group}_ref"] = refs[group]
            elif hook and self.layers:
                with torch.no_grad():
                    ref, _ = self._run(batch, stop=True, adapters=False, hook=True)
                    assert ref is not None
                    out[f"{group}_ref"] = ref
            keep = logits_span(batch["labels"]) if need_logits and self._keep_logits and "labels" in batch else 0
            h, lg = self._run(batch, stop=self.truncate and not need_logits, adapters=True, hook=hook, keep=keep)
            if h is not None:
                out[f"{group}_h"] = h
            if need_logits:
                assert lg is not None
                out[f"{group}_logits"] = lg
        return out
