"""The training config: :class:`TrainConfig` (one run; every choice of docs/method.md is a field) with its
part :class:`LoraSettings` (the data part, :class:`~mosr.train.data.DataSettings`, is defined where the
data are built), the methods and their defaults.

Method defaults, filled in by :meth:`TrainConfig.resolved` for a loaded model:

====================================  =========================  ========================================
method                                (weights, augmentation)    micro-batch mix (share of each kind)
====================================  =========================  ========================================
``rr``                                (off, off)                 erase 0.5, retain 0.5
``mosr``                              (on, on)                   erase 0.375, retain 0.375, refusal 0.25
``mosr_no_weight``                    (off, on)                  erase 0.375, retain 0.375, refusal 0.25
``mosr_no_aug``                       (on, off)                  erase 0.5, retain 0.5
``xboundary``                         (off, off)                 erase 0.375, retain 0.5, boundary 0.125
``sft``, ``psft``, ``trigger_sft``    (off, off)                 refusal 0.5, sft 0.5
====================================  =========================  ========================================

Target layers default to two layers at ≈1/3 and 2/3 depth, retain layers to the target layers, LoRA
to the attention + MLP projections of blocks 0..deepest hooked layer (SFT family: every block).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from mosr.capture import default_target_layers
from mosr.config import Config
from mosr.encoding import KINDS
from mosr.errors import ConfigError, LayerError
from mosr.losses import COEF_SCHEDULES
from mosr.models import LM
from mosr.train.augment import AugmentConfig
from mosr.train.data import DataSettings, ExamplePlan
from mosr.train.trigger import RewriterConfig
from mosr.train.weighting import WeightConfig

METHODS: tuple[str, ...] = ("sft", "psft", "trigger_sft", "rr", "mosr", "mosr_no_weight", "mosr_no_aug", "xboundary")
#: methods trained with NLL only (the rest are the erasure family: erase + retain (+ augmentation))
SFT_METHODS: tuple[str, ...] = ("sft", "psft", "trigger_sft")
DEFAULT_REWRITES = "experiments/data/trigger_rewrites.jsonl"
#: method -> (overlap-aware weights, context-aware augmentation) defaults for the erasure family
_COMPONENTS: dict[str, tuple[bool, bool]] = {
    "rr": (False, False),
    "mosr": (True, True),
    "mosr_no_weight": (False, True),
    "mosr_no_aug": (True, False),
    "xboundary": (False, False),
}
#: default share of each example kind in a micro-batch
_MIX: dict[str, dict[str, float]] = {
    "rr": {"erase": 0.5, "retain": 0.5},
    "mosr_no_aug": {"erase": 0.5, "retain": 0.5},
    "mosr": {"erase": 0.375, "retain": 0.375, "refusal": 0.25},
    "mosr_no_weight": {"erase": 0.375, "retain": 0.375, "refusal": 0.25},
    "xboundary": {"erase": 0.375, "retain": 0.5, "boundary": 0.125},
    "sft": {"refusal": 0.5, "sft": 0.5},
    "psft": {"refusal": 0.5, "sft": 0.5},
    "trigger_sft": {"refusal": 0.5, "sft": 0.5},
}
#: LoRA target modules per family (``None`` in the config picks these: attention + MLP projections)
LORA_MODULES: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "default": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


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
class TrainConfig(Config):
    """One training run. ``method`` picks the loss; every choice of docs/method.md is a field."""

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
    #: xboundary: weight of the separation term (boundary-safe prompt states pushed off the frozen
    #: representation of the same prompt answered compliantly), inside the erase coefficient c_e
    separation_scale: float = 1.0
    #: the first ``retain_warmup`` steps train without the retain term (c_r = 0; X-Boundary's warm-up)
    retain_warmup: int = 0
    #: β of the augmentation NLL over training: ``constant`` (β) or ``ramp`` (β·s/S, so the refusal is
    #: learned after the retain term has anchored benign behaviour)
    aug_schedule: str = "constant"
    #: compute the frozen reference states once before training (else: one reference forward per step)
    cache_reference: bool = True
    #: folder of an on-disk cache of frozen reference states shared between runs, keyed by the model,
    #: the hooked layers and each example's tokens (:mod:`mosr.train.refcache`; relative: to the working
    #: directory). None: states live in memory only. May change when a run is resumed.
    reference_cache: str | None = None
    #: α of the SFT baselines: α·NLL(refusal) + (1 − α)·NLL(benign answer)
    sft_alpha: float = 0.5
    #: SFT baselines: extra weight on each row's first answer token (the answer-or-refuse decision), added to
    #: the token-mean NLL: NLL_mean + w·NLL(first token). 0 (default): plain SFT
    sft_first_token_weight: float = 0.0
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
    #: erase loss over the ``response`` tokens of an erased example (docs/method.md §2), or over its
    #: ``request_response`` tokens: the harmful request too, as circuit breakers' own code masks it (the
    #: attention mask of request + response), less the chat template's shared head, whose states no prompt changes
    erase_tokens: str = "response"
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
    #: also save a full PEFT adapter as ``adapter-step-<N>/`` after each of these optimizer steps (a
    #: trajectory of one run, e.g. a strength frontier along the training steps; the final one is ``adapter/``)
    save_adapters: list[int] = field(default_factory=list)
    #: force CPU even with a GPU present
    cpu: bool = False
    #: accelerate mixed precision: no | fp16 | bf16
    mixed_precision: str = "no"
    #: recompute each decoder block's activations in the backward pass (saves activation memory on
    #: 7-8B models; the same adapter, several times fewer saved tensors)
    gradient_checkpointing: bool = False
    progress: bool = True

    @property
    def erasure(self) -> bool:
        return self.method not in SFT_METHODS

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value."""
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "max_length": self.max_length,
            "checkpoint_every": self.checkpoint_every,
            "lora.rank": self.lora.rank,
        }
        for name, v in positive.items():
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.schedule not in ("constant", "linear_warmup", "linear"):
            raise ConfigError(f"schedule must be constant, linear_warmup or linear, got {self.schedule!r}")
        choices = {
            "coef_schedule": (self.coef_schedule, COEF_SCHEDULES),
            "retain_distance": (self.retain_distance, ("relative", "absolute")),
            "erase_similarity": (self.erase_similarity, ("centered", "raw")),
            "aug_schedule": (self.aug_schedule, ("constant", "ramp")),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.erase_collapse < 0:
            raise ConfigError(f"erase_collapse must be ≥ 0, got {self.erase_collapse}")
        if self.retain_scale < 0:
            raise ConfigError(f"retain_scale must be ≥ 0, got {self.retain_scale}")
        sizes = {
            f"data.{k}": getattr(self.data, k)
            for k in ("n_harmful", "n_retain", "n_extra_retain", "n_benign", "n_bank", "max_new_tokens")
        }
        for name, v in sizes.items():  # a sample size: null (all) or ≥ 1, checked before the run folder is written
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive integer or null (all), got {v!r}")
        if self.data.retain_filter not in ("all", "compliant"):
            raise ConfigError(f"data.retain_filter must be 'all' or 'compliant', got {self.data.retain_filter!r}")
        unknown = sorted(set(self.data.eval_sample) - set(self.data.eval_sets))
        if unknown:
            raise ConfigError(f"data.eval_sample names {unknown}, which are not in data.eval_sets")
        bad_n = {k: v for k, v in self.data.eval_sample.items() if not (isinstance(v, int) and v >= 1)}
        if bad_n:
            raise ConfigError(f"data.eval_sample sizes must be positive integers, got {bad_n}")
        if self.data.refusal_retain and not self.erasure:
            raise ConfigError(f"data.refusal_retain adds retain examples, which {self.method} does not use")
        if self.data.retain_answers not in ("reference", "model", "missing"):
            raise ConfigError(
                f"data.retain_answers must be 'reference', 'model' or 'missing', got {self.data.retain_answers!r}"
            )
        if self.retain_tokens not in ("all", "response"):
            raise ConfigError(f"retain_tokens must be 'all' or 'response', got {self.retain_tokens!r}")
        if self.erase_tokens not in ("response", "request_response"):
            raise ConfigError(f"erase_tokens must be 'response' or 'request_response', got {self.erase_tokens!r}")
        if not 0.0 <= self.sft_alpha <= 1.0:
            raise ConfigError(f"sft_alpha must be in [0, 1], got {self.sft_alpha}")
        if self.sft_first_token_weight < 0:
            raise ConfigError(f"sft_first_token_weight must be ≥ 0, got {self.sft_first_token_weight}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        bad = [n for n in self.save_adapters if not 0 < n <= self.steps]
        if bad:
            raise ConfigError(f"save_adapters must list steps in 1..steps ({self.steps}), got {bad}")
        if self.mix is not None:
            unknown = sorted(set(self.mix) - set(KINDS))
            if unknown or not any(v > 0 for v in self.mix.values()) or any(v < 0 for v in self.mix.values()):
                raise ConfigError(f"mix must map kinds {KINDS} to non-negative shares (some > 0), got {self.mix}")
        if self.erasure and not self.components()[1] and (self.mix or {}).get("refusal", 0) > 0:
            raise ConfigError(f"{self.method}: mix has refusal examples but augmentation is off")
        if self.method != "xboundary" and (self.mix or {}).get("boundary", 0) > 0:
            raise ConfigError(f"{self.method}: mix has boundary examples, which only method xboundary builds")
        if self.reference_cache is not None and not self.reference_cache.strip():
            raise ConfigError("reference_cache must be a folder or null (off), got an empty string")
        if self.separation_scale < 0 or self.retain_warmup < 0:
            raise ConfigError(
                f"separation_scale and retain_warmup must be ≥ 0, got {self.separation_scale}, {self.retain_warmup}"
            )

    def components(self) -> tuple[bool, bool]:
        """(use overlap-aware weights, use context-aware augmentation) after method defaults."""
        if not self.erasure:
            return False, False
        w, a = _COMPONENTS[self.method]
        return (
            w if self.use_weights is None else self.use_weights,
            a if self.use_augment is None else self.use_augment,
        )

    def example_plan(self) -> ExamplePlan:
        """What this run asks of its data besides :attr:`data` (call on a :meth:`resolved` config)."""
        use_w, use_a = self.components()
        return ExamplePlan(
            method=self.method,
            erasure=self.erasure,
            seed=self.seed,
            model=self.model,
            dtype=self.dtype,
            max_length=self.max_length,
            mix=dict(self.mix or {}),
            use_weights=use_w,
            use_augment=use_a,
            weighting=replace(self.weighting, layers=self.weighting.layers or self.target_layers),
            augment=self.augment,
            rewriter=self.rewriter,
            prefix_tokens=self.prefix_tokens,
        )

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
        return replace(
            self,
            target_layers=target if self.erasure else [],
            retain_layers=retain if self.erasure else [],
            use_weights=use_w,
            use_augment=use_a,
            mix=mix,
            lora=replace(self.lora, layers=lora_layers, modules=list(modules)),
        )


def _check_layers(layers: Sequence[int], n: int, name: str) -> list[int]:
    out = []
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool) or not -n <= layer < n:
            raise LayerError(f"{name}: layer {layer!r} out of range for a model with {n} layers (valid 0..{n - 1})")
        out.append(layer % n)
    if not out:
        raise LayerError(f"{name} is empty")
    return sorted(set(out))
