"""LoRA defence training for MOSR, its ablations and the baselines: one concept per module.

=============================  ====================================================================================
module                         what it holds
=============================  ====================================================================================
:mod:`mosr.train.config`       :class:`TrainConfig` (+ :class:`DataSettings`, :class:`LoraSettings`), the methods
                               and their defaults (components, micro-batch mix, LoRA modules)
:mod:`mosr.train.lora`         :func:`attach_lora` and :class:`TrainForward` (trained + frozen reference forward)
:mod:`mosr.train.batches`      :func:`mix_counts`, :func:`sample_batch`, :func:`make_inputs` -> :class:`StepInputs`
:mod:`mosr.train.objective`    :func:`compute_loss` per method family (:func:`erasure_loss`, :func:`sft_loss`)
:mod:`mosr.train.checkpoint`   checkpoints, saved adapters, RNG states, resume checks
:mod:`mosr.train.loop`         :func:`train` -> :class:`TrainResult`, :func:`frozen_reference`, :func:`lr_lambda`
:mod:`mosr.train.data`         where the examples come from: :func:`build_data` -> :class:`TrainingData`
:mod:`mosr.train.examples`     the example itself: :class:`~mosr.train.examples.TrainExample`, ``encode``, ``collate``
:mod:`mosr.train.weighting`    overlap-aware weights of the harmful training prompts
:mod:`mosr.train.augment`      refusal augmentation; :mod:`mosr.train.refusals` the refusal templates
:mod:`mosr.train.trigger`      the harmful-cue rewriter of ``trigger_sft``
:mod:`mosr.train.reference`    the frozen reference states, cached per example
:mod:`mosr.train.dryrun`       ``mosr train --dry-run``: the config on a tiny model and a memory estimate
=============================  ====================================================================================

``train(TrainConfig.load("experiments/mosr.yaml"), out="runs/mosr")`` trains a LoRA adapter and writes
the run folder::

    config.yaml          resolved config (every default filled in)
    completions.jsonl    generated harmful completions (unless a shared cache path is configured)
    weights/             overlap-aware weights (mosr, mosr_no_aug), computed once before training
                         (``mosr train`` also draws weights.png / .pdf there)
    reference/           the frozen mean state per layer (centre of the centred erase cosine)
    data.json            examples per kind, micro-batch counts, start step, processes
    log.jsonl            one row per optimizer step (losses, coefficients, lr, grad norm, seconds)
    checkpoints/step-N/  adapter + optimizer + scheduler + RNG states + step (atomic, resumable)
    adapter-step-N/      PEFT adapters after the steps listed in ``save_adapters`` (optional)
    adapter/             the final PEFT adapter: ``mosr.load(base, adapter="runs/mosr/adapter")``
    summary.json         method, steps, last log row, processes, reference-cache size

Methods (DESIGN §4), one loss each (:mod:`mosr.train.objective`)::

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
the adapters disabled, and cached (:mod:`mosr.train.reference`; ``cache_reference: false`` instead runs one
reference forward per step). Examples that need no logits (erase / retain) run through a
forward that stops after the deepest hooked layer; examples with an NLL term run the full model.
Everything runs through Hugging Face Accelerate: ``accelerate launch --num_processes N -m mosr.cli train ...``
gives DDP (or FSDP / DeepSpeed through the accelerate config) with no distributed code here.
"""

from mosr.train.examples import KINDS
from mosr.train.batches import StepInputs, make_inputs, mix_counts, sample_batch
from mosr.train.examples import collate
from mosr.train.checkpoint import (_save_gathered_adapter, check_same_config, latest_checkpoint, load_checkpoint,
                                   prune_checkpoints, rng_state, save_adapter, save_checkpoint,
                                   save_gathered_adapter, set_rng_state, truncate_log)
from mosr.train.config import (DEFAULT_REWRITES, LORA_MODULES, METHODS, SFT_METHODS, DataSettings, LoraSettings,
                               TrainConfig)
from mosr.train.lora import TrainForward, attach_lora
from mosr.train.loop import TrainResult, frozen_reference, lr_lambda, train
from mosr.train.objective import compute_loss, erasure_loss, sft_loss
from mosr.train.data import (AFFIRMATIVE_PREFIXES, TrainingData, affirmative_prefix, build_data, eval_sets,
                            harmful_prompts, model_answers, trigger_benign, with_completions)

__all__ = [
    "AFFIRMATIVE_PREFIXES", "DEFAULT_REWRITES", "KINDS", "LORA_MODULES", "METHODS", "SFT_METHODS", "DataSettings",
    "LoraSettings", "StepInputs", "TrainConfig", "TrainForward", "TrainResult", "TrainingData",
    "_save_gathered_adapter",
    "affirmative_prefix", "attach_lora", "build_data", "check_same_config", "collate", "compute_loss",
    "erasure_loss", "eval_sets", "frozen_reference", "harmful_prompts", "latest_checkpoint", "load_checkpoint",
    "lr_lambda", "make_inputs", "mix_counts", "model_answers", "prune_checkpoints", "rng_state", "sample_batch",
    "save_adapter", "save_checkpoint", "save_gathered_adapter", "set_rng_state", "sft_loss", "train",
    "trigger_benign", "truncate_log", "with_completions",
]
