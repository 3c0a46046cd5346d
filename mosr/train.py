"""The custom training loop: LoRA defence training for MOSR, its ablations and the baselines.

``train(TrainConfig.load("experiments/mosr.yaml"), out="runs/mosr")`` trains a LoRA adapter and writes
the run folder::

    config.yaml          resolved config (every default filled in)
    completions.jsonl    generated harmful completions (unless a shared cache path is configured)
    weights/             overlap-aware weights (mosr, mosr_no_aug), computed once before training
    reference/           the frozen mean state per layer (centre of the centred erase cosine)
    log.jsonl            one row per optimizer step (losses, coefficients, lr, grad norm, seconds)
    checkpoints/step-N/  adapter + optimizer + scheduler + RNG states + step (atomic, resumable)
    adapter/             the final PEFT adapter: ``mosr.load(base, adapter="runs/mosr/adapter")``

Methods (DESIGN §4), one loss each::

    rr, mosr, mosr_no_weight, mosr_no_aug:
        L = c_r(s)·L_retain + c_e(s)·Σ_i w_i·L_erase(i) / Σ_i w_i + β(s)·L_aug
        cb schedule: c_r = ρ·α·s/(2S), c_e = α·(1 − s/(2S)); constant: c_r = ρ·α, c_e = α
        β(s) = β (constant) or β·s/S (ramp); w_i = 1 without weighting; no L_aug without augmentation
        L_retain: ‖h' − h‖ (absolute) or ‖h' − h‖/‖h‖ (relative, default); L_erase: ReLU(cos) of raw or
        centred states (minus the frozen mean state of the layer, default); see mosr.losses
    sft, psft, trigger_sft:
        L = α_sft·NLL(harmful → refusal) + (1 − α_sft)·NLL(benign → answer)
        psft: the refusal follows a short affirmative prefix that is not trained on;
        trigger_sft: the benign set is the harmful prompts with their harmful cues removed.

The frozen reference states are computed once per training example, the first time it is drawn, with
the adapters disabled, and cached (:mod:`mosr.reference`; ``cache_reference: false`` instead runs one
reference forward per step). Examples that need no logits (erase / retain) run through a
forward that stops after the deepest hooked layer; examples with an NLL term run the full model.
Everything runs through Hugging Face Accelerate: ``accelerate launch --num_processes N -m mosr.cli train ...``
gives DDP (or FSDP / DeepSpeed through the accelerate config) with no distributed code here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mosr.augment import AugmentConfig, augment
from mosr.capture import StopForward, hooked
from mosr.config import Config
from mosr import datasets
from mosr.data import PromptSet, Record, normalise_prompt
from mosr.errors import ConfigError, DataError, LayerError, MosrError
from mosr.io import append_jsonl, read_json, write_json, write_jsonl
from mosr.losses import (COEF_SCHEDULES, coefficients, collapse_loss, erase_loss, retain_loss, token_nll,
                         weighted_mean)
from mosr.models import LM
from mosr.models import load as load_lm
from mosr.reference import ReferenceStates, compute_reference, megabytes
from mosr.trigger import RewriterConfig, build_rewriter
from mosr.traindata import EVAL_SETS, TrainExample, collate, encode, harmful_completions, remove_overlap
from mosr.weighting import (WEIGHTS_JSON, WeightConfig, WeightResult, check_disjoint, compute_weights,
                            default_target_layers)

METHODS: tuple[str, ...] = ("sft", "psft", "trigger_sft", "rr", "mosr", "mosr_no_weight", "mosr_no_aug")
log = logging.getLogger(__name__)
DEFAULT_REWRITES = "experiments/data/trigger_rewrites.jsonl"
SFT_METHODS: tuple[str, ...] = ("sft", "psft", "trigger_sft")
KINDS: tuple[str, ...] = ("erase", "retain", "refusal", "sft")
#: method -> (overlap-aware weights, context-aware augmentation) defaults for the erasure family
_COMPONENTS: dict[str, tuple[bool, bool]] = {"rr": (False, False), "mosr": (True, True),
                                             "mosr_no_weight": (False, True), "mosr_no_aug": (True, False)}
#: default share of each example kind in a micro-batch
_MIX: dict[str, dict[str, float]] = {
    "rr": {"erase": 0.5, "retain": 0.5}, "mosr_no_aug": {"erase": 0.5, "retain": 0.5},
    "mosr": {"erase": 0.375, "retain": 0.375, "refusal": 0.25},
    "mosr_no_weight": {"erase": 0.375, "retain": 0.375, "refusal": 0.25},
    "sft": {"refusal": 0.5, "sft": 0.5}, "psft": {"refusal": 0.5, "sft": 0.5}, "trigger_sft": {"refusal": 0.5, "sft": 0.5},
}
#: LoRA target modules per family (``None`` in the config picks these: attention + MLP projections)
LORA_MODULES: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "default": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
#: affirmative openers for psft when a record carries no ``target`` ("Sure, here is ..." style)
AFFIRMATIVE_PREFIXES: tuple[str, ...] = ("Sure, here is", "Sure, here's how to do that:", "Certainly! Here is",
                                         "Of course. Here are the steps:", "Absolutely, here is what you asked for:")


@dataclass
class LoraSettings(Config):
    """LoRA adapters (peft). ``modules`` None: attention + MLP projections of the family;
    ``layers`` None: blocks 0..deepest target layer (erasure methods) or every block (SFT methods)."""

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    modules: list[str] | None = None
    layers: list[int] | None = None


@dataclass
class DataSettings(Config):
    """Where training examples come from. Set names go through :func:`mosr.datasets.load`; a path
    ending in ``.jsonl`` is read as a prompt file."""

    harmful: str = "rd-harmful-train"
    n_harmful: int | None = 64
    retain: str = "self-instruct-retain"
    n_retain: int | None = 64
    extra_retain: list[str] = field(default_factory=list)
    n_extra_retain: int | None = 32
    #: answers of the retain examples: ``reference`` (the set's own) or ``model`` (the frozen model's own
    #: greedy answers, generated once and cached beside the completions: the states it visits when answering)
    retain_answers: str = "reference"
    #: generic benign set with answers (``completion``) for sft / psft
    benign: str = "self-instruct-retain"
    n_benign: int | None = 64
    #: pseudo-malicious bank for overlap-aware weights
    bank: str = "orbench-80k-bank"
    n_bank: int | None = None
    #: sets the bank and the harmful prompts must be disjoint from
    eval_sets: list[str] = field(default_factory=lambda: list(EVAL_SETS))
    #: drop harmful training prompts that also occur in an evaluation set (else: error on overlap)
    drop_eval_overlap: bool = True
    #: JSONL with ``prompt`` + ``completion`` to use as harmful completions (skips generation)
    completions: str | None = None
    #: where generated completions are cached (default ``<out>/completions.jsonl``); share it across runs
    completions_cache: str | None = None
    #: generate missing completions (False: every harmful prompt needs a cached / supplied completion)
    generate: bool = True
    #: model that writes the completions (default: the model being trained, before training)
    generator: str | None = None
    max_new_tokens: int = 48
    #: psft: sets whose ``target`` field ("Sure, here is ...") is looked up by prompt text
    target_sets: list[str] = field(default_factory=lambda: ["advbench"])
    data_dir: str | None = None


@dataclass
class TrainConfig(Config):
    """One training run. ``method`` picks the loss; every choice of DESIGN §4 is a field."""

    method: str = "mosr"
    #: model alias / hub id / directory / .gguf, or ``tiny:<family>`` (a tiny random model for tests)
    model: str = "smollm2-135m-instruct"
    dtype: str = "float32"
    seed: int = 0
    steps: int = 40
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.0
    #: constant | linear_warmup (warmup then constant) | linear (warmup then linear decay to 0)
    schedule: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    #: α of the coefficient schedule c_r = ρ·α·s/(2S), c_e = α·(1 − s/(2S))
    alpha: float = 5.0
    #: coefficient schedule: ``cb`` (circuit breakers, above) or ``constant`` (c_r = ρ·α, c_e = α)
    coef_schedule: str = "cb"
    #: ρ: retain / erase balance (multiplies c_r)
    retain_scale: float = 1.0
    #: retain distance: ``relative`` (‖h' − h‖ / ‖h‖, scale-free) or ``absolute`` (circuit breakers' L2)
    retain_distance: str = "relative"
    #: erase cosine on ``centered`` states (minus the frozen mean state of the layer) or ``raw`` ones
    erase_similarity: str = "centered"
    #: γ: add γ·collapse_loss (‖h' − μ‖ / ‖h − μ‖ on erased tokens) to each sample's erase loss; its gradient
    #: at h' = h is not zero, so erasure starts along harmful states' own content (0: circuit breakers' term)
    erase_collapse: float = 0.0
    #: β of the augmentation NLL over training: ``constant`` (β) or ``ramp`` (β·s/S, so the refusal is
    #: learned after the retain term has anchored benign behaviour)
    aug_schedule: str = "constant"
    #: compute the frozen reference states once before training (else: one reference forward per step)
    cache_reference: bool = True
    #: α of the SFT baselines: α·NLL(refusal) + (1 − α)·NLL(benign answer)
    sft_alpha: float = 0.5
    #: target layers T (default: two layers at ≈1/3 and 2/3 depth)
    target_layers: list[int] | None = None
    #: layers of the retain L2 (default: the target layers)
    retain_layers: list[int] | None = None
    #: stop the forward after the deepest hooked layer for examples that need no logits
    truncate: bool = True
    #: overlap-aware weights on / off (None: from the method)
    use_weights: bool | None = None
    #: context-aware augmentation on / off (None: from the method)
    use_augment: bool | None = None
    #: augmented refusals also enter the retain set (retain L2 on their refusal tokens)
    aug_in_retain: bool = True
    #: retain L2 over ``all`` tokens of a retain example or its ``response`` tokens only
    retain_tokens: str = "all"
    #: share of each example kind in a micro-batch (None: the method's default)
    mix: dict[str, float] | None = None
    #: psft: affirmative prefix cut to at most this many tokens
    prefix_tokens: int = 12
    weighting: WeightConfig = field(default_factory=WeightConfig)
    #: trigger_sft: how the benign set is rewritten from the harmful prompts (default: the shipped file)
    rewriter: RewriterConfig = field(default_factory=lambda: RewriterConfig(path=DEFAULT_REWRITES))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    #: force CPU even with a GPU present
    cpu: bool = False
    #: accelerate mixed precision: no | fp16 | bf16
    mixed_precision: str = "no"
    progress: bool = True

    @property
    def erasure(self) -> bool:
        return self.method not in SFT_METHODS

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value."""
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        positive = {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "max_length": self.max_length, "checkpoint_every": self.checkpoint_every,
                    "lora.rank": self.lora.rank}
        for name, v in positive.items():
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.schedule not in ("constant", "linear_warmup", "linear"):
            raise ConfigError(f"schedule must be constant, linear_warmup or linear, got {self.schedule!r}")
        choices = {"coef_schedule": (self.coef_schedule, COEF_SCHEDULES),
                   "retain_distance": (self.retain_distance, ("relative", "absolute")),
                   "erase_similarity": (self.erase_similarity, ("centered", "raw")),
                   "aug_schedule": (self.aug_schedule, ("constant", "ramp"))}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.erase_collapse < 0:
            raise ConfigError(f"erase_collapse must be ≥ 0, got {self.erase_collapse}")
        if self.retain_scale < 0:
            raise ConfigError(f"retain_scale must be ≥ 0, got {self.retain_scale}")
        if self.data.retain_answers not in ("reference", "model"):
            raise ConfigError(f"data.retain_answers must be 'reference' or 'model', got {self.data.retain_answers!r}")
        if self.retain_tokens not in ("all", "response"):
            raise ConfigError(f"retain_tokens must be 'all' or 'response', got {self.retain_tokens!r}")
        if not 0.0 <= self.sft_alpha <= 1.0:
            raise ConfigError(f"sft_alpha must be in [0, 1], got {self.sft_alpha}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.mix is not None:
            bad = sorted(set(self.mix) - set(KINDS))
            if bad or not any(v > 0 for v in self.mix.values()) or any(v < 0 for v in self.mix.values()):
                raise ConfigError(f"mix must map kinds {KINDS} to non-negative shares (some > 0), got {self.mix}")
        if self.erasure and not self.components()[1] and (self.mix or {}).get("refusal", 0) > 0:
            raise ConfigError(f"{self.method}: mix has refusal examples but augmentation is off")

    def components(self) -> tuple[bool, bool]:
        """(use overlap-aware weights, use context-aware augmentation) after method defaults."""
        if not self.erasure:
            return False, False
        w, a = _COMPONENTS[self.method]
        return (w if self.use_weights is None else self.use_weights, a if self.use_augment is None else self.use_augment)

    def resolved(self, lm: LM) -> TrainConfig:
        """Copy with every ``None`` default filled in for ``lm`` (layers, modules, mix, components)."""
        self.validate()
        n = lm.n_layers
        target = _check_layers(self.target_layers or default_target_layers(n), n, "target_layers")
        retain = _check_layers(self.retain_layers or target, n, "retain_layers")
        use_w, use_a = self.components()
        mix = dict(self.mix) if self.mix is not None else dict(_MIX[self.method])
        if self.erasure and not use_a:
            mix.pop("refusal", None)
        if self.erasure and use_a and "refusal" not in mix:
            mix["refusal"] = 0.25
        deepest = max(target + retain) if self.erasure else n - 1
        lora_layers = _check_layers(self.lora.layers or list(range(deepest + 1)), n, "lora.layers")
        modules = self.lora.modules or LORA_MODULES.get(lm.arch.family, LORA_MODULES["default"])
        return replace(self, target_layers=target if self.erasure else [], retain_layers=retain if self.erasure else [],
                       use_weights=use_w, use_augment=use_a, mix=mix,
                       lora=replace(self.lora, layers=lora_layers, modules=list(modules)))


def _check_layers(layers: Sequence[int], n: int, name: str) -> list[int]:
    out = []
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool) or not -n <= layer < n:
            raise LayerError(f"{name}: layer {layer!r} out of range for a model with {n} layers (valid 0..{n - 1})")
        out.append(layer % n)
    if not out:
        raise LayerError(f"{name} is empty")
    return sorted(set(out))


# ---------------------------------------------------------------------------------------------------------------
# model


def attach_lora(lm: LM, cfg: TrainConfig) -> nn.Module:
    """Wrap ``lm.model`` in a peft LoRA model (in place: ``lm.model`` stays the base model object)."""
    from peft import LoraConfig, get_peft_model

    assert cfg.lora.layers is not None and cfg.lora.modules is not None
    present = {name.rsplit(".", 1)[-1] for name, _ in lm.model.named_modules()}
    missing = [m for m in cfg.lora.modules if m not in present]
    if missing:
        raise ConfigError(f"lora.modules {missing} not found in {lm.name} (module names include "
                          f"{sorted(p for p in present if 'proj' in p or p.startswith('c_'))[:12]})")
    lora = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.modules), layers_to_transform=list(cfg.lora.layers),
                      layers_pattern=lm.arch.blocks.rsplit(".", 1)[-1], bias="none", task_type="CAUSAL_LM",
                      fan_in_fan_out=lm.arch.family == "gpt2")  # GPT-2 uses Conv1D (weights transposed)
    peft_model = get_peft_model(lm.model, lora)
    _set_modes(peft_model)
    return peft_model


def _set_modes(model: nn.Module) -> None:
    """Eval mode everywhere (deterministic reference states) except the LoRA dropout modules."""
    model.eval()
    for name, module in model.named_modules():
        if "lora_dropout" in name:
            module.train()


class TrainForward(nn.Module):
    """One module call per micro-batch (what ``accelerator.prepare`` wraps for DDP / FSDP).

    ``forward(hidden=..., logits=...)`` runs, for each non-empty group, the frozen reference (adapters
    disabled, no grad, truncated) and the trained model, recording block outputs of ``layers``. The
    ``hidden`` group stops after the deepest layer when ``truncate``; the ``logits`` group runs the full
    model. The reference forward is always truncated. Returns a dict of ``<group>_h`` / ``<group>_ref``
    (``batch layer seq d_model``) and ``logits_logits`` (``batch seq vocab``).
    """

    def __init__(self, peft_model: nn.Module, lm: LM, layers: Sequence[int], truncate: bool = True) -> None:
        super().__init__()
        self.peft_model = peft_model
        # the LM view on the wrapped base model: block paths resolve inside the peft wrapper
        self._view = LM(model=peft_model.get_base_model(), tokenizer=lm.tokenizer, arch=lm.arch, name=lm.name)
        self.layers = list(layers)
        self.truncate = truncate

    def _run(self, batch: dict[str, Tensor], stop: bool, adapters: bool, hook: bool) -> tuple[Tensor | None, Tensor | None]:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
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

    def forward(self, hidden: dict[str, Tensor] | None = None, logits: dict[str, Tensor] | None = None,
                states: Sequence[str] = ("hidden", "logits"), refs: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """``states``: the groups whose hidden states (trained + reference) a loss needs; ``refs``:
        cached reference states per group (``batch layer seq d_model``), which skip the reference forward."""
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
                    out[f"{group}_ref"] = self._run(batch, stop=True, adapters=False, hook=True)[0]  # type: ignore[assignment]
            h, lg = self._run(batch, stop=self.truncate and not need_logits, adapters=True, hook=hook)
            if h is not None:
                out[f"{group}_h"] = h
            if need_logits:
                assert lg is not None
                out[f"{group}_logits"] = lg
        return out


# ---------------------------------------------------------------------------------------------------------------
# data


@dataclass
class TrainingData:
    """Encoded example pools by kind (erase examples carry their overlap-aware weight), plus the
    weights themselves (None when unweighted)."""

    pools: dict[str, list[Any]]
    examples: dict[str, list[TrainExample]]
    weights: WeightResult | None = None

    def counts(self) -> dict[str, int]:
        """Trainable examples per kind (after encoding dropped those left without response tokens)."""
        return {k: len(self.pools.get(k, [])) for k in self.examples}


def eval_sets(cfg: TrainConfig) -> list[PromptSet]:
    """The evaluation sets training data must be disjoint from (sets missing locally are skipped with a note;
    ``.jsonl`` paths must exist)."""
    out = []
    for name in cfg.data.eval_sets:
        try:
            out.append(datasets.load(name, data_dir=cfg.data.data_dir).with_name(name))
        except DataError as e:
            if name.endswith(".jsonl"):
                raise
            log.warning("evaluation set %r not available for the overlap check: %s", name, e)
    return out


def harmful_prompts(cfg: TrainConfig, evals: list[PromptSet]) -> PromptSet:
    """The harmful training prompts minus evaluation-set prompts (dropped, or an error when
    ``data.drop_eval_overlap`` is false); :func:`build_data` then samples ``data.n_harmful`` of them."""
    try:
        full = datasets.load(cfg.data.harmful, data_dir=cfg.data.data_dir)
    except DataError as e:
        raise DataError(f"the harmful training set {cfg.data.harmful!r} is empty or unreadable: {e}") from None
    return remove_overlap(full, evals, strict=not cfg.data.drop_eval_overlap)


def with_completions(cfg: TrainConfig, lm: LM, prompts: PromptSet, out: Path, progress: bool = True) -> PromptSet:
    """``prompts`` with harmful completions: record > ``data.completions`` file > cache > generation."""
    cache = Path(cfg.data.completions_cache) if cfg.data.completions_cache else out / "completions.jsonl"
    gen = load_lm(cfg.data.generator, dtype=cfg.dtype) if cfg.data.generator and cfg.data.generate else None
    return harmful_completions(lm, prompts, cache, cfg.data.max_new_tokens, generator=gen,
                               completions_file=cfg.data.completions, allow_generate=cfg.data.generate,
                               progress=progress)


def _targets(cfg: TrainConfig) -> dict[str, str]:
    """prompt -> "Sure, here is ..." target from the configured sets (psft prefixes)."""
    out: dict[str, str] = {}
    for name in cfg.data.target_sets:
        try:
            ps = datasets.load(name, data_dir=cfg.data.data_dir)
        except DataError:
            continue
        for r in ps:
            if isinstance(r.extra.get("target"), str):
                out.setdefault(normalise_prompt(r.prompt), r.extra["target"])
    return out


def affirmative_prefix(record: Record, targets: dict[str, str], tokenizer: Any, max_tokens: int, index: int) -> str:
    """A short "Sure, here is ..." prefix: the record's / a matching set's ``target`` cut to ``max_tokens``
    tokens, else one of :data:`AFFIRMATIVE_PREFIXES`."""
    target = record.extra.get("target") or targets.get(normalise_prompt(record.prompt))
    if not target:
        return AFFIRMATIVE_PREFIXES[index % len(AFFIRMATIVE_PREFIXES)] + " "
    ids = tokenizer(target, add_special_tokens=False).input_ids[:max_tokens]
    return tokenizer.decode(ids).rstrip() + " "


def build_data(cfg: TrainConfig, lm: LM, out: Path, progress: bool = True) -> TrainingData:
    """Every training example of the method, encoded; weights computed (or loaded from ``out``)."""
    from mosr.refusals import refusal_for

    evals = eval_sets(cfg)
    disjoint = harmful_prompts(cfg, evals)
    harmful = disjoint.sample(cfg.data.n_harmful, cfg.seed)
    if not len(harmful):
        raise DataError(f"the harmful training set is empty ({cfg.data.harmful!r}, n_harmful={cfg.data.n_harmful})")
    examples: dict[str, list[TrainExample]] = {k: [] for k in KINDS}
    weights: WeightResult | None = None
    use_w, use_a = cfg.components()
    if cfg.erasure:
        bank = datasets.load(cfg.data.bank, data_dir=cfg.data.data_dir, n=cfg.data.n_bank, seed=cfg.seed)
        check_disjoint(bank, evals)
        harmful = with_completions(cfg, lm, harmful, out, progress)
        retain = datasets.load(cfg.data.retain, data_dir=cfg.data.data_dir, n=cfg.data.n_retain, seed=cfg.seed)
        for name in cfg.data.extra_retain:
            retain = retain + datasets.load(name, data_dir=cfg.data.data_dir, n=cfg.data.n_extra_retain, seed=cfg.seed)
        if cfg.data.retain_answers == "model":
            retain = model_answers(cfg, lm, retain, out, progress)
        examples["retain"] = [TrainExample(kind="retain", prompt=r.prompt, response=_answer(r), id=r.id)
                              for r in retain if _answer(r)]
        if use_a:
            # refusal: the record's own, else a template (mosr.refusals) seeded by augment.seed
            examples["refusal"] = augment(lm.tokenizer, harmful, cfg.augment)
        if use_w:
            wdir = out / "weights"
            if (wdir / WEIGHTS_JSON).is_file():
                weights = WeightResult.load(wdir)
                missing = [i for i in harmful.ids if i not in weights.as_dict()]
                if missing:
                    raise DataError(f"{wdir} holds weights for other prompts (e.g. no weight for {missing[0]!r}); "
                                    "use a fresh run folder")
            else:
                wcfg = replace(cfg.weighting, layers=cfg.weighting.layers or cfg.target_layers)
                weights = compute_weights(lm, harmful, bank, retain, wcfg, progress=progress)
                weights.save(wdir)
                from mosr.plots import plot_weights

                plot_weights(weights, wdir / "weights")
        lookup = weights.weight if weights is not None else (lambda _id: 1.0)
        examples["erase"] = [TrainExample(kind="erase", prompt=r.prompt, response=r.completion or "", id=r.id,
                                          weight=lookup(r.id)) for r in harmful]
    else:
        targets = _targets(cfg) if cfg.method == "psft" else {}
        refusals = [r.refusal or refusal_for(r.id, seed=cfg.seed) for r in harmful]
        examples["refusal"] = [
            TrainExample(kind="refusal", prompt=r.prompt, response=y, id=r.id,
                         response_prefix=(affirmative_prefix(r, targets, lm.tokenizer, cfg.prefix_tokens, i)
                                          if cfg.method == "psft" else ""))
            for i, (r, y) in enumerate(zip(harmful, refusals))]
        if cfg.method == "trigger_sft":
            benign = trigger_benign(cfg, lm, disjoint, out, progress)
        else:
            benign = datasets.load(cfg.data.benign, data_dir=cfg.data.data_dir, n=cfg.data.n_benign, seed=cfg.seed)
        examples["sft"] = [TrainExample(kind="sft", prompt=r.prompt, response=_answer(r), id=r.id)
                           for r in benign if _answer(r)]
    mix = cfg.mix or {}
    for kind, share in mix.items():
        if share > 0 and not examples[kind]:
            raise DataError(f"{cfg.method}: no {kind!r} training examples (check data.{_SOURCE[kind]})")
    pools = {k: encode(lm.tokenizer, v, cfg.max_length) for k, v in examples.items() if v}
    for kind, share in mix.items():
        if share > 0 and not pools.get(kind):
            raise DataError(f"{cfg.method}: every {kind!r} example was dropped by encoding (max_length="
                            f"{cfg.max_length} leaves no response token)")
    return TrainingData(pools=pools, examples=examples, weights=weights)


_SOURCE = {"erase": "harmful", "retain": "retain", "refusal": "harmful", "sft": "benign / rewriter"}


def _answer(r: Record) -> str | None:
    return r.completion or r.extra.get("answer") or None


def trigger_benign(cfg: TrainConfig, lm: LM, harmful: PromptSet, out: Path, progress: bool = True) -> PromptSet:
    """trigger_sft's benign set: the harmful training prompts (all of the disjoint set, so the benign
    side is not limited by the harmful sample) rewritten with their harmful cues removed, sampled to
    ``data.n_benign``, answered by the model itself (generated once, cached next to the completions)."""
    rewrites = build_rewriter(cfg.rewriter, lm).rewrite(harmful).sample(cfg.data.n_benign, cfg.seed)
    base = Path(cfg.data.completions_cache).parent if cfg.data.completions_cache else out
    cache = base / f"trigger-answers-{_slug(cfg.model)}.jsonl"
    return harmful_completions(lm, rewrites, cache, cfg.data.max_new_tokens, allow_generate=cfg.data.generate,
                               progress=progress)


def model_answers(cfg: TrainConfig, lm: LM, prompts: PromptSet, out: Path, progress: bool = True) -> PromptSet:
    """``prompts`` with ``completion`` replaced by the frozen model's own greedy answer (generated once,
    cached as ``retain-answers-<model>.jsonl`` beside the completions cache, or in ``out``)."""
    base = Path(cfg.data.completions_cache).parent if cfg.data.completions_cache else out
    cache = base / f"retain-answers-{_slug(cfg.model)}.jsonl"
    bare = PromptSet([replace(r, completion=None) for r in prompts], name=prompts.name)
    return harmful_completions(lm, bare, cache, cfg.data.max_new_tokens, allow_generate=cfg.data.generate,
                               progress=progress)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(name).name)


def mix_counts(mix: dict[str, float], batch_size: int) -> dict[str, int]:
    """Examples of each kind in a micro-batch (largest remainder; every kind with share > 0 gets ≥ 1)."""
    kinds = [k for k in KINDS if mix.get(k, 0) > 0]
    if batch_size < len(kinds):
        raise ConfigError(f"batch_size {batch_size} is smaller than the number of example kinds {kinds}")
    total = sum(mix[k] for k in kinds)
    raw = {k: mix[k] / total * batch_size for k in kinds}
    counts = {k: max(1, int(math.floor(raw[k]))) for k in kinds}
    while sum(counts.values()) < batch_size:
        k = max(kinds, key=lambda k: raw[k] - counts[k])
        counts[k] += 1
    while sum(counts.values()) > batch_size:
        k = max((k for k in kinds if counts[k] > 1), key=lambda k: counts[k] - raw[k])
        counts[k] -= 1
    return counts


def sample_batch(pools: dict[str, list[Any]], counts: dict[str, int], seed: int, step: int, micro: int,
                 rank: int = 0) -> dict[str, list[int]]:
    """Pool indices per kind for one micro-batch. Stateless: a function of (seed, step, micro, rank),
    so a resumed run draws exactly the batches an uninterrupted run would."""
    rng = np.random.default_rng([seed, step, micro, rank])
    out = {}
    for kind in KINDS:
        c = counts.get(kind, 0)
        if c:
            n = len(pools[kind])
            out[kind] = rng.choice(n, size=c, replace=n < c).tolist()
    return out


# ---------------------------------------------------------------------------------------------------------------
# loss


@dataclass
class StepInputs:
    """Collated groups of one micro-batch and which rows hold which kind."""

    hidden: dict[str, Tensor] | None
    logits: dict[str, Tensor] | None
    rows: dict[str, tuple[str, list[int]]]  # kind -> (group, row indices)
    ids: dict[str, list[str]]  # kind -> example ids (weight lookup)
    #: cached frozen states per group (``batch layer seq d_model``); empty without a cache
    refs: dict[str, Tensor] = field(default_factory=dict)


def make_inputs(data: TrainingData, picks: dict[str, list[int]], pad_id: int, device: torch.device,
                reference: ReferenceStates | None = None) -> StepInputs:
    """Collate erase + retain examples into the truncatable group, refusal + sft into the full one;
    with ``reference``, also their cached frozen states."""
    groups: dict[str, list[Any]] = {"hidden": [], "logits": []}
    keys: dict[str, list[tuple[str, int]]] = {"hidden": [], "logits": []}
    rows: dict[str, tuple[str, list[int]]] = {}
    ids: dict[str, list[str]] = {}
    for kind in KINDS:
        if kind not in picks:
            continue
        group = "hidden" if kind in ("erase", "retain") else "logits"
        start = len(groups[group])
        groups[group].extend(data.pools[kind][i] for i in picks[kind])
        keys[group].extend((kind, i) for i in picks[kind])
        rows[kind] = (group, list(range(start, len(groups[group]))))
        ids[kind] = [data.pools[kind][i].id for i in picks[kind]]
    batches = {g: ({k: v.to(device) for k, v in collate(enc, pad_id).items()} if enc else None)
               for g, enc in groups.items()}
    refs: dict[str, Tensor] = {}
    if reference is not None:
        for g, b in batches.items():
            if b is not None and reference.has(keys[g]):
                refs[g] = reference.batch(keys[g], b["input_ids"].shape[1]).to(device)
    return StepInputs(batches["hidden"], batches["logits"], rows, ids, refs)


def _states(h: Tensor, rows: list[int], layers: Sequence[int], wanted: Sequence[int]) -> dict[int, Tensor]:
    """``layer -> Tensor[batch seq d_model]`` for ``rows`` of stacked states ``h`` (batch layer seq d_model)."""
    pos = {layer: j for j, layer in enumerate(layers)}
    sub = h[rows]
    return {layer: sub[:, pos[layer]] for layer in wanted}


def compute_loss(cfg: TrainConfig, out: dict[str, Tensor], inp: StepInputs, hooked_layers: Sequence[int],
                 weights: WeightResult | None, step: int,
                 center: dict[int, Tensor] | None = None) -> tuple[Tensor, dict[str, float]]:
    """The method's loss for one micro-batch, and its parts (floats, for the log).

    ``center``: the frozen mean state per target layer (``layer -> Tensor[d_model]``), required when
    ``cfg.erase_similarity == "centered"``."""
    zero = next(iter(out.values())).sum() * 0.0
    parts: dict[str, float] = {}

    def sel(kind: str) -> tuple[dict[str, Tensor], str, list[int]]:
        group, rows = inp.rows[kind]
        batch = inp.hidden if group == "hidden" else inp.logits
        assert batch is not None
        return batch, group, rows

    def nll(kind: str) -> Tensor:
        if kind not in inp.rows:
            return zero
        batch, group, rows = sel(kind)
        per = token_nll(out[f"{group}_logits"][rows], batch["labels"][rows])
        return weighted_mean(per)

    if not cfg.erasure:
        l_ref, l_sft = nll("refusal"), nll("sft")
        loss = cfg.sft_alpha * l_ref + (1 - cfg.sft_alpha) * l_sft
        parts.update(nll_refusal=_f(l_ref), nll_sft=_f(l_sft))
        return loss, parts

    assert cfg.target_layers is not None and cfg.retain_layers is not None
    c_r, c_e = coefficients(step, cfg.steps, cfg.alpha, cfg.coef_schedule, cfg.retain_scale)
    if cfg.erase_similarity == "centered" and center is None:
        raise MosrError("erase_similarity='centered' needs the frozen mean states (center)")
    mu = center if cfg.erase_similarity == "centered" else None
    relative = cfg.retain_distance == "relative"

    def states(kind: str, layers: Sequence[int]) -> tuple[dict[int, Tensor], dict[int, Tensor], dict[str, Tensor], list[int]]:
        batch, group, rows = sel(kind)
        return (_states(out[f"{group}_h"], rows, hooked_layers, layers),
                _states(out[f"{group}_ref"], rows, hooked_layers, layers), batch, rows)
    l_erase = l_retain = l_aug = zero
    if "erase" in inp.rows:
        h, ref, batch, rows = states("erase", cfg.target_layers)
        per = erase_loss(h, ref, batch["response_mask"][rows], center=mu)
        if cfg.erase_collapse > 0:
            per = per + cfg.erase_collapse * collapse_loss(h, ref, batch["response_mask"][rows], center=mu)
        # per-example weights were looked up by id once, when the examples were built
        l_erase = weighted_mean(per, batch["weight"][rows] if weights is not None else None)
    retain_terms: list[Tensor] = []
    if "retain" in inp.rows:
        h, ref, batch, rows = states("retain", cfg.retain_layers)
        mask = batch["attention_mask" if cfg.retain_tokens == "all" else "response_mask"][rows]
        retain_terms.append(retain_loss(h, ref, mask, relative=relative))
    if "refusal" in inp.rows:
        l_aug = nll("refusal")
        if cfg.aug_in_retain:
            h, ref, batch, rows = states("refusal", cfg.retain_layers)
            retain_terms.append(retain_loss(h, ref, batch["response_mask"][rows], relative=relative))
    if retain_terms:
        l_retain = torch.cat(retain_terms).mean()
    beta = cfg.augment.beta * (step / cfg.steps if cfg.aug_schedule == "ramp" else 1.0)
    loss = c_r * l_retain + c_e * l_erase + beta * l_aug
    parts.update(erase=_f(l_erase), retain=_f(l_retain), aug=_f(l_aug), c_r=float(c_r), c_e=float(c_e),
                 beta=float(beta))
    return loss, parts


def _f(x: Tensor) -> float:
    return float(x.detach())


# ---------------------------------------------------------------------------------------------------------------
# schedule, checkpoints


def lr_lambda(cfg: TrainConfig) -> Any:
    """Multiplier of the base lr at optimizer step ``s`` (0-based)."""
    warm = max(cfg.warmup_steps, 0)

    def f(s: int) -> float:
        if cfg.schedule != "constant" and warm and s < warm:
            return (s + 1) / warm
        if cfg.schedule == "linear":
            return max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm))
        return 1.0

    return f


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, peft_model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    step: int) -> Path:
    """Write ``path`` (a folder) atomically: adapter weights, optimizer, scheduler, RNG states, step."""
    from peft import get_peft_model_state_dict

    from mosr.io import save_tensors

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_tensors(tmp / "adapter.safetensors", get_peft_model_state_dict(peft_model))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                "step": step}, tmp / "state.pt")
    write_json(tmp / "step.json", {"step": step})
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def latest_checkpoint(run: Path) -> Path | None:
    """The checkpoint folder with the highest step (only complete ones: they are renamed into place)."""
    root = run / "checkpoints"
    found = [(read_json(p / "step.json")["step"], p) for p in root.glob("step-*") if (p / "step.json").is_file()]
    return max(found)[1] if found else None


def load_checkpoint(path: Path, peft_model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> int:
    """Restore a checkpoint into the live objects; returns the number of finished optimizer steps."""
    from peft import set_peft_model_state_dict

    from mosr.io import load_tensors

    set_peft_model_state_dict(peft_model, load_tensors(path / "adapter.safetensors"))
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return int(state["step"])


def save_adapter(peft_model: nn.Module, path: Path, state_dict: dict[str, Tensor] | None = None) -> Path:
    """``save_pretrained`` (optionally from a gathered ``state_dict``) into a temporary folder, then
    rename into place."""
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp), state_dict=state_dict)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
    """Where the run put its outputs, plus the last logged row."""

    out: Path
    adapter: Path
    steps: int
    last: dict[str, Any]


def train(cfg: TrainConfig, out: str | os.PathLike[str], resume: bool = False, steps: int | None = None,
          lm: LM | None = None, stop_after: int | None = None) -> TrainResult:
    """Train one LoRA adapter; see the module docstring for the run folder.

    Args:
        cfg: the run's config (validated and resolved here).
        out: run folder.
        resume: continue from the newest checkpoint in ``out`` (exactly: same batches, optimizer, RNG).
        steps: override ``cfg.steps``.
        lm: an already-loaded model (else ``cfg.model`` is loaded); LoRA is attached to it in place.
        stop_after: end the loop after this many optimizer steps (simulates an interruption in tests).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    out = Path(out)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    cfg.validate()
    if resume and latest_checkpoint(out) is None and not (out / "config.yaml").is_file():
        raise MosrError(f"--resume: {out} holds no checkpoint to resume from")
    set_seed(cfg.seed)
    lm = lm if lm is not None else load_lm(cfg.model, dtype=cfg.dtype, device="cpu")
    cfg = cfg.resolved(lm)
    assert cfg.lora.layers is not None and cfg.target_layers is not None and cfg.retain_layers is not None
    hooked_layers = sorted(set(cfg.target_layers) | set(cfg.retain_layers))
    unused = cfg.truncate and cfg.erasure and max(cfg.lora.layers) > max(hooked_layers)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, cpu=cfg.cpu,
                              mixed_precision=cfg.mixed_precision,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=bool(unused))])
    main = accelerator.is_main_process
    lm.model.to(accelerator.device)
    if resume and (out / "config.yaml").is_file():
        _check_same_config(TrainConfig.load(out / "config.yaml"), cfg, out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
    # the main process writes caches (completions, weights) first; the others then read them
    with accelerator.main_process_first():
        data = build_data(cfg, lm, out, progress=main)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    reference, center = (frozen_reference(cfg, lm, data, hooked_layers, pad_id, accelerator.device, out if main else None)
                         if cfg.erasure else (None, None))
    peft_model = attach_lora(lm, cfg)
    forward = TrainForward(peft_model, lm, hooked_layers, truncate=cfg.truncate)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    start = 0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        start = load_checkpoint(ckpt, peft_model, optimizer, scheduler)
    forward, optimizer = accelerator.prepare(forward, optimizer)
    log = out / "log.jsonl"
    if main:
        _truncate_log(log, start)
    counts = mix_counts(cfg.mix or {}, cfg.batch_size)
    states = (("hidden", "logits") if cfg.aug_in_retain else ("hidden",)) if cfg.erasure else ()
    #: kinds whose frozen states a loss reads (refusal rows only when they enter the retain term)
    ref_kinds = ("erase", "retain") + (("refusal",) if "logits" in states else ())
    if main:
        write_json(out / "data.json", {"examples": data.counts(), "batch": counts, "start_step": start,
                                       "processes": accelerator.num_processes})
    last: dict[str, Any] = {}
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(range(start, end), desc=f"train {cfg.method}", disable=not (main and cfg.progress), unit="step",
               initial=start, total=cfg.steps)
    for step in bar:
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        grad_norm = float("nan")
        for micro in range(cfg.grad_accum):
            picks = sample_batch(data.pools, counts, cfg.seed, step, micro, accelerator.process_index)
            if reference is not None:  # frozen states of examples drawn for the first time
                with peft_model.disable_adapter():
                    reference.fill(lm, data.pools, [(k, i) for k, idx in picks.items() if k in ref_kinds for i in idx],
                                   pad_id, accelerator.device)
            inp = make_inputs(data, picks, pad_id, accelerator.device, reference)
            with accelerator.accumulate(forward):
                outputs = forward(hidden=inp.hidden, logits=inp.logits, states=states, refs=inp.refs)
                loss, parts = compute_loss(cfg, outputs, inp, hooked_layers, data.weights, step, center)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = float(accelerator.clip_grad_norm_(params, cfg.max_grad_norm))
                optimizer.step()
                optimizer.zero_grad()
            for k, v in {"loss": _f(loss), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        last = {"step": step + 1, **{k: round(v, 6) for k, v in sums.items()}, "lr": lr,
                "grad_norm": round(grad_norm, 6), "seconds": round(time.perf_counter() - t0, 3)}
        if main:
            append_jsonl(log, [last])
            bar.set_postfix(loss=f"{sums['loss']:.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            accelerator.wait_for_everyone()
            if main:
                save_checkpoint(out / "checkpoints" / f"step-{step + 1}", accelerator.unwrap_model(forward).peft_model,
                                optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer, scheduler,
                                step + 1)
                _prune_checkpoints(out, cfg.keep_checkpoints)
    bar.close()
    accelerator.wait_for_everyone()
    in_sync = True
    if accelerator.num_processes > 1:  # DDP keeps every rank's adapter identical; check it, cheaply
        checksum = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1).to(accelerator.device)
        per_rank = accelerator.gather(checksum)
        in_sync = bool(torch.allclose(per_rank, per_rank[:1].expand_as(per_rank)))
    adapter = out / "adapter"
    if end == cfg.steps:
        # get_state_dict gathers sharded parameters (FSDP / DeepSpeed); every process must call it
        full = accelerator.get_state_dict(forward)
        prefix = "peft_model."
        state = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
    if main and end == cfg.steps:
        save_adapter(accelerator.unwrap_model(forward).peft_model, adapter, state)
        write_json(out / "summary.json", {"method": cfg.method, "model": cfg.model, "steps": cfg.steps,
                                          "last": last, "adapter": str(adapter),
                                          "processes": accelerator.num_processes, "ranks_in_sync": in_sync,
                                          "reference_cache": None if reference is None else {
                                              "mb": megabytes(reference), "forwards": reference.forwards,
                                              "examples": sum(len(v) for v in reference.states.values())}})
    accelerator.wait_for_everyone()
    return TrainResult(out=out, adapter=adapter, steps=end, last=last)


def frozen_reference(cfg: TrainConfig, lm: LM, data: TrainingData, layers: Sequence[int], pad_id: int,
                     device: torch.device, out: Path | None) -> tuple[ReferenceStates | None, dict[int, Tensor] | None]:
    """Before LoRA is attached: the reference cache, holding every retain example (one batched pass; the
    centre is their mean state) and filled lazily for the other kinds, and the centre per target layer
    (saved to ``out/reference``). Without the centred cosine only the lazy cache is built."""
    assert cfg.target_layers is not None
    ref = ReferenceStates(layers=sorted(set(layers)))
    center = None
    if cfg.erase_similarity == "centered":
        ref = compute_reference(lm, {"retain": data.pools["retain"]}, layers, pad_id, device, progress=False)
        center = ref.center = {layer: ref.center[layer] for layer in cfg.target_layers}
        if out is not None:
            ref.save_center(out / "reference")
    if not cfg.cache_reference:
        return None, center
    return ref, center


def _check_same_config(saved: TrainConfig, now: TrainConfig, out: Path) -> None:
    """A resumed run must use the config it was started with (``progress`` may differ)."""
    a, b = saved.to_dict(), now.to_dict()
    diff = sorted(k for k in set(a) | set(b) if k != "progress" and a.get(k) != b.get(k))
    if diff:
        raise ConfigError(f"--resume: the config differs from the one {out} was started with in {diff}; "
                          "resume with the same config (or train into a new folder)")


def _truncate_log(log: Path, step: int) -> None:
    """Drop log rows past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not log.is_file():
        return
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    write_jsonl(log, [r for r in rows if r.get("step", 0) <= step])


def _prune_checkpoints(run: Path, keep: int) -> None:
    found = sorted((read_json(p / "step.json")["step"], p) for p in (run / "checkpoints").glob("step-*")
                   if (p / "step.json").is_file())
    for _, p in found[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
