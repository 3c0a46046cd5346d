"""LoRA defence training for MOSR, its ablations and the baselines: one concept per module.

=============================  ====================================================================================
module                         what it holds
=============================  ====================================================================================
:mod:`mosr.train.config`       :class:`TrainConfig` (+ :class:`LoraSettings`), the methods and their defaults
                               (components, micro-batch mix, LoRA modules)
:mod:`mosr.train.lora`         :func:`attach_lora` and :class:`TrainForward` (trained + frozen reference forward)
:mod:`mosr.train.batches`      :func:`mix_counts`, :func:`sample_batch`, :func:`make_inputs` -> :class:`StepInputs`
:mod:`mosr.train.objective`    :func:`compute_loss` per method family (:func:`erasure_loss`, :func:`sft_loss`)
:mod:`mosr.train.checkpoint`   checkpoints, saved adapters, RNG states, resume checks
:mod:`mosr.train.loop`         :func:`train` -> :class:`TrainResult`, :func:`frozen_reference`, :func:`lr_lambda`
:mod:`mosr.train.data`         where the examples come from: :class:`DataSettings`, ``build_data`` -> ``TrainingData``
:mod:`mosr.train.weighting`    overlap-aware weights of the harmful training prompts
:mod:`mosr.train.augment`      refusal augmentation; :mod:`mosr.train.refusals` the refusal templates
:mod:`mosr.train.trigger`      the harmful-cue rewriter of ``trigger_sft``
:mod:`mosr.train.reference`    the frozen reference states, cached per example
:mod:`mosr.train.refcache`     their on-disk cache shared between runs (``reference_cache``)
:mod:`mosr.train.dryrun`       ``mosr train --dry-run``: the config on a tiny model and a memory estimate
=============================  ====================================================================================

The example itself (kinds, masks, tokenisation, collation) is :mod:`mosr.encoding`, shared with evaluation.
This package exports its public API only: :class:`TrainConfig` with its parts :class:`DataSettings` and
:class:`LoraSettings`, :data:`METHODS`, :func:`train` and :class:`TrainResult`; everything else is imported
from its module.

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

Methods (docs/method.md §6), one loss each (:mod:`mosr.train.objective`)::

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

from mosr.train.config import METHODS, LoraSettings, TrainConfig
from mosr.train.data import DataSettings
from mosr.train.loop import TrainResult, train

__all__ = ["METHODS", "DataSettings", "LoraSettings", "TrainConfig", "TrainResult", "train"]
