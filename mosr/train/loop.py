"""The training loop: :func:`train` sets a run up (:func:`_setup`), takes its optimizer steps
(:func:`_step`, one :func:`_micro_step` per gradient-accumulation micro-batch, then checkpoints) and
finishes it (:func:`_finish`: the adapter and ``summary.json``).

Everything runs through Hugging Face Accelerate: ``accelerate launch --num_processes N -m mosr.cli train ...``
gives DDP (or FSDP / DeepSpeed through the accelerate config) with no distributed code here. Only the
main process writes the run folder; the others read the caches it wrote first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mosr.batching import pad_id
from mosr.errors import MosrError
from mosr.io import append_jsonl, read_json, write_json
from mosr.losses import mean_direction
from mosr.models import LM
from mosr.models import load as load_lm
from mosr.train.batches import make_inputs, mix_counts, sample_batch
from mosr.train.checkpoint import (
    check_same_config,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    save_gathered_adapter,
    truncate_log,
)
from mosr.train.config import TrainConfig
from mosr.train.data import TrainingData, build_data
from mosr.train.lora import TrainForward, attach_lora
from mosr.train.objective import compute_loss
from mosr.train.refcache import RefCache, open_cache
from mosr.train.reference import ReferenceStates, compute_reference, megabytes

if TYPE_CHECKING:
    from peft import PeftModel


@dataclass
class TrainResult:
    """Where the run put its outputs, plus the last logged row."""

    out: Path
    adapter: Path
    steps: int
    last: dict[str, Any]
    #: the run folder held this run, finished: nothing was trained
    finished_before: bool = False


def train(
    cfg: TrainConfig,
    out: str | os.PathLike[str],
    resume: bool = False,
    steps: int | None = None,
    lm: LM | None = None,
    stop_after: int | None = None,
    on_data: Callable[[TrainingData, Path], Any] | None = None,
) -> TrainResult:
    """Train one LoRA adapter; see :mod:`mosr.train` for the run folder.

    A run folder that holds this run is resumed, as ``mosr eval`` resumes: training continues from the
    newest checkpoint in ``out`` (exactly: same batches, optimizer, RNG; ``log.jsonl`` keeps its rows up to
    that step), and a finished run (``summary.json`` and ``adapter/``) is returned as it is, untrained
    (``finished_before``). A run folder made with another config is refused
    (:func:`~mosr.config.changed_run_error`).

    Args:
        cfg: the run's config (validated and resolved here).
        out: run folder.
        resume: insist on resuming: a folder without a started run is then an error (``--resume``).
        steps: override ``cfg.steps``.
        lm: an already-loaded model (else ``cfg.model`` is loaded); LoRA is attached to it in place.
        stop_after: end the loop after this many optimizer steps (simulates an interruption in tests).
        on_data: called on the main process as ``on_data(data, out)`` once the training data are built,
            before the first step (``mosr train`` draws the weights figure here).
    """
    out = Path(out)
    cfg, lm = _prepare(cfg, out, resume, steps, lm)
    finished = _finished_run(cfg, out)
    if finished is not None:
        return finished
    run = _setup(cfg, out, lm, on_data)
    cfg = run.cfg
    last: dict[str, Any] = {}
    end = cfg.steps if stop_after is None else min(cfg.steps, run.start + stop_after)
    bar = tqdm(
        range(run.start, end),
        desc=f"train {cfg.method}",
        disable=not (run.main and cfg.progress),
        unit="step",
        initial=run.start,
        total=cfg.steps,
    )
    for step in bar:
        last, loss = _step(run, step)
        if run.main:
            bar.set_postfix(loss=f"{loss:.4f}")
        _save_progress(run, step)
    bar.close()
    return _finish(run, end, last)


@dataclass
class _Run:
    """What one run holds between its steps (built by :func:`_setup`)."""

    cfg: TrainConfig  # resolved
    out: Path
    lm: LM
    accelerator: Any
    main: bool
    data: TrainingData
    hooked_layers: list[int]
    pad_id: int
    reference: ReferenceStates | None
    center: dict[int, Tensor] | None
    peft_model: PeftModel
    forward: nn.Module  # TrainForward, wrapped by accelerator.prepare
    params: list[nn.Parameter]
    optimizer: Any
    scheduler: Any
    start: int  # optimizer steps already taken (a resumed run)
    counts: dict[str, int]  # examples of each kind per micro-batch
    states: tuple[str, ...]  # groups whose hidden states the loss reads
    ref_kinds: tuple[str, ...]  # kinds whose frozen states the loss reads
    #: xboundary: boundary example id -> separation target ``Tensor[target_layer d_model]``
    targets: dict[str, Tensor] | None = None


def _prepare(cfg: TrainConfig, out: Path, resume: bool, steps: int | None, lm: LM | None) -> tuple[TrainConfig, LM]:
    """The validated config resolved for the model (loaded here unless given), checked against the run
    folder's: a folder holding a run made with another config is refused before anything is written."""
    from accelerate.utils import set_seed

    if steps is not None:
        cfg = replace(cfg, steps=steps)
    cfg.validate()
    if resume and latest_checkpoint(out) is None and not (out / "config.yaml").is_file():
        raise MosrError(f"--resume: {out} holds no checkpoint to resume from")
    set_seed(cfg.seed)
    lm = lm if lm is not None else load_lm(cfg.model, dtype=cfg.dtype, device="cpu")
    cfg = cfg.resolved(lm)
    if (out / "config.yaml").is_file():
        check_same_config(TrainConfig.load(out / "config.yaml"), cfg, out)
    return cfg, lm


def _finished_run(cfg: TrainConfig, out: Path) -> TrainResult | None:
    """The finished run of ``out`` (its summary and final adapter are there), else None."""
    summary = out / "summary.json"
    if not (summary.is_file() and (out / "adapter" / "adapter_config.json").is_file()):
        return None
    done = read_json(summary)
    if done.get("steps") != cfg.steps:
        return None
    return TrainResult(
        out=out, adapter=out / "adapter", steps=cfg.steps, last=done.get("last") or {}, finished_before=True
    )


def _setup(cfg: TrainConfig, out: Path, lm: LM, on_data: Callable[[TrainingData, Path], Any] | None) -> _Run:
    """Accelerator, run folder, data, reference states, LoRA, optimizer (+ the newest checkpoint) of a
    config from :func:`_prepare`."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    assert cfg.lora.layers is not None and cfg.target_layers is not None and cfg.retain_layers is not None
    hooked_layers = sorted(set(cfg.target_layers) | set(cfg.retain_layers))
    unused = cfg.truncate and cfg.erasure and max(cfg.lora.layers) > max(hooked_layers)
    _release_precision(cfg.mixed_precision)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=cfg.cpu,
        mixed_precision=cfg.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=bool(unused))],
    )
    main = accelerator.is_main_process
    lm.model.to(accelerator.device)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
    # the main process writes caches (completions, weights) first; the others then read them
    with accelerator.main_process_first():
        data = build_data(cfg.data, cfg.example_plan(), lm, out, progress=main)
    pad = pad_id(lm)
    disk = (  # the frozen base model's key: taken before LoRA is attached
        open_cache(cfg.reference_cache, lm, hooked_layers, accelerator.device, cfg.model)
        if cfg.erasure and cfg.reference_cache
        else None
    )
    reference, center = (
        frozen_reference(cfg, lm, data, hooked_layers, pad, accelerator.device, out if main else None, disk)
        if cfg.erasure
        else (None, None)
    )
    peft_model, forward, params, optimizer, scheduler, start = _trainable(
        cfg, lm, hooked_layers, accelerator, latest_checkpoint(out)
    )
    if main:
        truncate_log(out / "log.jsonl", start)
    counts = mix_counts(cfg.mix or {}, cfg.batch_size)
    states = (("hidden", "logits") if cfg.aug_in_retain else ("hidden",)) if cfg.erasure else ()
    # refusal rows need frozen states only when they enter the retain term
    ref_kinds = ("erase", "retain", "boundary") + (("refusal",) if "logits" in states else ())
    targets = (
        boundary_targets(cfg, lm, data, hooked_layers, pad, accelerator.device, reference, center, disk)
        if data.pools.get("boundary")
        else None
    )
    if main:
        write_json(
            out / "data.json",
            {"examples": data.counts(), "batch": counts, "start_step": start, "processes": accelerator.num_processes},
        )
        if on_data is not None:
            on_data(data, out)
    return _Run(
        cfg,
        out,
        lm,
        accelerator,
        main,
        data,
        hooked_layers,
        pad,
        reference,
        center,
        peft_model,
        forward,
        params,
        optimizer,
        scheduler,
        start,
        counts,
        states,
        ref_kinds,
        targets,
    )


def _trainable(
    cfg: TrainConfig, lm: LM, hooked_layers: list[int], accelerator: Any, checkpoint: Path | None
) -> tuple[PeftModel, nn.Module, list[nn.Parameter], Any, Any, int]:
    """LoRA on ``lm`` (after the frozen reference states were taken), the forward wrapper, AdamW and the
    lr schedule, restored from ``checkpoint`` when given and prepared by the accelerator. Returns
    ``(peft_model, forward, params, optimizer, scheduler, steps already taken)``."""
    peft_model = attach_lora(lm, cfg)
    if cfg.gradient_checkpointing:  # TrainForward switches it on for the adapter forward of each block
        lm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]  # LM.model: a PreTrainedModel
    forward = TrainForward(peft_model, lm, hooked_layers, truncate=cfg.truncate)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    start = load_checkpoint(checkpoint, peft_model, optimizer, scheduler) if checkpoint is not None else 0
    forward, optimizer = accelerator.prepare(forward, optimizer)
    return peft_model, forward, params, optimizer, scheduler, start


def _step(run: _Run, step: int) -> tuple[dict[str, Any], float]:
    """One optimizer step (0-based ``step``) over ``grad_accum`` micro-batches; returns its log row
    (appended to ``log.jsonl`` by the main process) and the unrounded mean loss."""
    cfg = run.cfg
    t0 = time.perf_counter()
    sums: dict[str, Tensor | float] = {}  # device tensors stay on the device until the one read below
    grad_norm: Tensor | float = float("nan")
    for micro in range(cfg.grad_accum):
        loss, parts, norm = _micro_step(run, step, micro)
        if norm is not None:
            grad_norm = norm
        for k, v in {"loss": loss.detach(), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
    lr = run.scheduler.get_last_lr()[0]
    run.scheduler.step()
    values = _to_host({**sums, "grad_norm": grad_norm})
    row = {
        "step": step + 1,
        **{k: round(v, 6) for k, v in values.items() if k != "grad_norm"},
        "lr": lr,
        "grad_norm": round(values["grad_norm"], 6),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if run.main:
        append_jsonl(run.out / "log.jsonl", [row])
    return row, values["loss"]


def _to_host(values: dict[str, Tensor | float]) -> dict[str, float]:
    """Floats of a step's log values, reading every device tensor in one transfer (one sync)."""
    tensors = {k: v for k, v in values.items() if isinstance(v, Tensor)}
    got = dict(zip(tensors, torch.stack([v.float().reshape(()) for v in tensors.values()]).tolist())) if tensors else {}
    return {k: float(got.get(k, v)) for k, v in values.items()}


def _micro_step(run: _Run, step: int, micro: int) -> tuple[Tensor, dict[str, Tensor | float], Tensor | None]:
    """Draw, collate, forward, loss, backward of one micro-batch; the optimizer steps when the
    gradients sync (the last micro-batch). Returns the loss, its parts and the clipped grad norm (None
    before the sync)."""
    acc = run.accelerator
    picks = sample_batch(run.data.pools, run.counts, run.cfg.seed, step, micro, acc.process_index)
    if run.reference is not None:  # frozen states of examples drawn for the first time
        with run.peft_model.disable_adapter():
            run.reference.fill(
                run.lm,
                run.data.pools,
                [(k, i) for k, idx in picks.items() if k in run.ref_kinds for i in idx],
                run.pad_id,
                acc.device,
            )
    inp = make_inputs(run.data, picks, run.pad_id, acc.device, run.reference)
    grad_norm = None
    with acc.accumulate(run.forward):
        outputs = run.forward(hidden=inp.hidden, logits=inp.logits, states=run.states, refs=inp.refs)
        loss, parts = compute_loss(
            run.cfg, outputs, inp, run.hooked_layers, run.data.weights, step, run.center, run.targets
        )
        acc.backward(loss)
        if acc.sync_gradients:
            grad_norm = acc.clip_grad_norm_(run.params, run.cfg.max_grad_norm)  # read with the log row
        run.optimizer.step()
        run.optimizer.zero_grad()
    return loss, parts, grad_norm


def _save_progress(run: _Run, step: int) -> None:
    """After optimizer step ``step``: a checkpoint every ``checkpoint_every`` steps and at the end, and
    the ``save_adapters`` trajectory adapters (the final adapter is written by :func:`_finish`)."""
    cfg, acc, done = run.cfg, run.accelerator, step + 1
    if done % cfg.checkpoint_every == 0 or done == cfg.steps:
        acc.wait_for_everyone()
        if run.main:
            optimizer = run.optimizer.optimizer if hasattr(run.optimizer, "optimizer") else run.optimizer
            save_checkpoint(
                run.out / "checkpoints" / f"step-{done}",
                acc.unwrap_model(run.forward).peft_model,
                optimizer,
                run.scheduler,
                done,
            )
            prune_checkpoints(run.out, cfg.keep_checkpoints)
    if done in cfg.save_adapters and done < cfg.steps:
        save_gathered_adapter(acc, run.forward, run.out / f"adapter-step-{done}", run.main)


def _finish(run: _Run, end: int, last: dict[str, Any]) -> TrainResult:
    """The final adapter and ``summary.json`` (when the run reached ``cfg.steps``), with a check that
    every process holds the same adapter."""
    cfg, acc, out = run.cfg, run.accelerator, run.out
    acc.wait_for_everyone()
    in_sync = True
    if acc.num_processes > 1:  # DDP keeps every rank's adapter identical; check it, cheaply
        checksum = torch.stack([p.detach().double().sum() for p in run.params]).sum().reshape(1).to(acc.device)
        per_rank = acc.gather(checksum)
        in_sync = bool(torch.allclose(per_rank, per_rank[:1].expand_as(per_rank)))
    adapter = out / "adapter"
    if end == cfg.steps:
        save_gathered_adapter(acc, run.forward, adapter, run.main)
    if run.main and end == cfg.steps:
        ref = run.reference
        write_json(
            out / "summary.json",
            {
                "method": cfg.method,
                "model": cfg.model,
                "steps": cfg.steps,
                "last": last,
                "adapter": str(adapter),
                "processes": acc.num_processes,
                "ranks_in_sync": in_sync,
                "reference_cache": None
                if ref is None
                else {
                    "mb": megabytes(ref),
                    "forwards": ref.forwards,
                    "examples": sum(len(v) for v in ref.states.values()),
                    # examples run through the frozen model / read from the on-disk reference_cache
                    "computed": ref.computed,
                    "from_disk": ref.from_disk,
                    "disk": None if ref.cache is None else str(ref.cache.folder),
                },
            },
        )
    acc.wait_for_everyone()
    return TrainResult(out=out, adapter=adapter, steps=end, last=last)


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step ``s`` (0-based)."""
    warm = max(cfg.warmup_steps, 0)

    def f(s: int) -> float:
        if cfg.schedule != "constant" and warm and s < warm:
            return (s + 1) / warm
        if cfg.schedule == "linear":
            return max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm))
        return 1.0

    return f


def frozen_reference(
    cfg: TrainConfig,
    lm: LM,
    data: TrainingData,
    layers: Sequence[int],
    pad_id: int,
    device: torch.device,
    out: Path | None,
    disk: RefCache | None = None,
) -> tuple[ReferenceStates | None, dict[int, Tensor] | None]:
    """Before LoRA is attached: the reference cache, holding every retain example (one batched pass; the
    centre is their mean state) and filled lazily for the other kinds, and the centre per target layer
    (``layer -> Tensor[d_model]``, saved to ``out/reference``). Without the centred cosine only the lazy
    cache is built; with ``cache_reference: false`` no cache is returned. ``disk``: the on-disk cache
    shared between runs (``reference_cache``), read before and written after each reference forward."""
    assert cfg.target_layers is not None
    ref = ReferenceStates(layers=sorted(set(layers)), cache=disk)
    center = None
    if cfg.erase_similarity == "centered":
        retain = {"retain": data.pools["retain"]}
        ref = compute_reference(lm, retain, layers, pad_id, device, progress=False, cache=disk)
        center = ref.center = {layer: ref.center[layer] for layer in cfg.target_layers}
        if out is not None:
            ref.save_center(out / "reference")
    if not cfg.cache_reference:
        return None, center
    return ref, center


def boundary_targets(
    cfg: TrainConfig,
    lm: LM,
    data: TrainingData,
    layers: Sequence[int],
    pad_id: int,
    device: torch.device,
    reference: ReferenceStates | None,
    center: dict[int, Tensor] | None,
    disk: RefCache | None = None,
) -> dict[str, Tensor]:
    """X-Boundary's separation targets, before LoRA is attached: for each boundary example, the mean unit
    (centred, with the centred cosine) frozen state over every token of the retain example with the same
    id (the same prompt answered compliantly), per target layer. Returns ``id -> Tensor[target_layer
    d_model]`` (target layers in ``cfg.target_layers`` order). ``disk``: the on-disk reference cache."""
    assert cfg.target_layers is not None
    index = {ex.id: i for i, ex in enumerate(data.pools["retain"])}
    wanted = [index[ex.id] for ex in data.pools["boundary"] if ex.id in index]
    if len(wanted) < len(data.pools["boundary"]):
        raise MosrError("xboundary: some boundary examples have no retain example with the same id")
    ref = reference
    if ref is None or not ref.has([("retain", i) for i in wanted]):
        pairs = {"retain": [data.pools["retain"][i] for i in wanted]}
        ref = compute_reference(lm, pairs, layers, pad_id, device, progress=False, cache=disk)
        if reference is not None:  # counted in the run's summary
            reference.computed += ref.computed
            reference.from_disk += ref.from_disk
        wanted_keys = list(range(len(wanted)))
    else:
        wanted_keys = wanted
    pos = [list(ref.layers).index(layer) for layer in cfg.target_layers]
    mu = center if cfg.erase_similarity == "centered" else None
    out: dict[str, Tensor] = {}
    for ex, key in zip(data.pools["boundary"], wanted_keys):
        h = ref.states["retain"][key]  # layer seq d_model
        states = {layer: h[p].unsqueeze(0) for layer, p in zip(cfg.target_layers, pos)}
        g = mean_direction(states, torch.ones(1, h.shape[1]), mu)
        out[ex.id] = torch.stack([g[layer][0] for layer in cfg.target_layers])
    return out


def _release_precision(wanted: str) -> None:
    """Accelerate keeps one process-wide state, and refuses an ``Accelerator`` whose mixed precision
    differs from the first one's. Several ``train()`` calls in one process (a study, a test session)
    may use different precisions: drop the stale state first (not under a distributed launch, where
    the launcher owns it)."""
    from accelerate.state import AcceleratorState, PartialState

    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", wanted)) != wanted and PartialState().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=False)
