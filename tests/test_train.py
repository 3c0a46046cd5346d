"""Tests of the training loop (mosr.train) and `mosr train` on tiny random models."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from conftest import adapter_tensors, load_script, tiny_cfg

from mosr.errors import ConfigError, DataError, LayerError, MosrError
from mosr.models import LM
from mosr.testing import FAMILIES, tiny_lm
from mosr.train import METHODS, DataSettings, TrainConfig, train
from mosr.train.batches import StepInputs, make_inputs, mix_counts, sample_batch
from mosr.train.checkpoint import latest_checkpoint
from mosr.train.data import TrainingData, build_data
from mosr.train.loop import lr_lambda
from mosr.train.lora import TrainForward, attach_lora
from mosr.train.objective import compute_loss
from mosr.train.weighting import WeightConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def build(cfg: TrainConfig, lm: LM, out: Path) -> TrainingData:
    """:func:`build_data` of a resolved config: its data settings and its example plan."""
    return build_data(cfg.data, cfg.example_plan(), lm, out, progress=False)


# --- every method, every family -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_writes_run_folder(method: str, data: dict[str, str], tmp_path: Path) -> None:
    cfg = _xboundary_cfg(data, tmp_path) if method == "xboundary" else tiny_cfg(data, method)
    res = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "log.jsonl",
        "data.json",
        "summary.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    ):
        assert (run / name).is_file(), name
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    if method in ("mosr", "mosr_no_aug"):
        assert (run / "weights" / "weights.json").is_file()
    else:
        assert not (run / "weights").exists()
    if method in ("sft", "psft", "trigger_sft"):
        assert rows[0]["nll_refusal"] > 0 and rows[0]["nll_sft"] > 0
    else:
        assert rows[0]["c_r"] == 0.0 and rows[0]["c_e"] == 5.0 and rows[1]["c_r"] > 0  # DESIGN §4 schedule
        assert (rows[0]["aug"] > 0) == (method in ("mosr", "mosr_no_weight"))
    saved = TrainConfig.load(run / "config.yaml")
    assert saved.method == method and saved.lora.layers is not None and saved.mix is not None
    assert res.steps == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_mosr_trains_on_every_family_and_adapter_loads(family: str, data: dict[str, str], tmp_path: Path) -> None:
    from peft import PeftModel

    res = train(tiny_cfg(data, "mosr", family), tmp_path / "run")
    tensors = adapter_tensors(res.adapter)
    assert tensors and any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_B" in k)  # B left its zero init
    base = tiny_lm(family)
    merged = PeftModel.from_pretrained(base.model, str(res.adapter)).merge_and_unload()
    ids = torch.tensor([[5, 6, 7, 8]])
    assert not torch.allclose(merged(ids).logits, tiny_lm(family).model(ids).logits)


# --- the forward: reference states, truncation --------------------------------------------------------------


def _forward_parts(data: dict[str, str], method: str, tmp_path: Path, **kw: object):  # noqa: ANN202
    lm = tiny_lm("llama")
    kw.setdefault("erase_similarity", "raw")  # these tests call compute_loss without a centre
    cfg = tiny_cfg(data, method, **kw).resolved(lm)
    td = build(cfg, lm, tmp_path / "run")
    peft_model = attach_lora(lm, cfg)
    layers = sorted(set(cfg.target_layers) | set(cfg.retain_layers))
    fwd = TrainForward(peft_model, lm, layers, truncate=cfg.truncate)
    picks = sample_batch(td.pools, mix_counts(cfg.mix, cfg.batch_size), 0, 0, 0)
    inp = make_inputs(td, picks, lm.tokenizer.pad_token_id, torch.device("cpu"))
    return lm, cfg, td, peft_model, fwd, inp, layers


def test_reference_states_are_the_frozen_model(data: dict[str, str], tmp_path: Path) -> None:
    from mosr.capture import hooked
    from mosr.capture import run as run_fwd

    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(data, "mosr", tmp_path)
    with torch.no_grad():  # move the adapters away from their no-op init
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    out = fwd(hidden=inp.hidden, logits=inp.logits)
    fresh = tiny_lm("llama")  # same seed: the frozen base weights
    from mosr.batching import Batch

    b = inp.hidden
    batch = Batch(b["input_ids"], b["attention_mask"], b["position_ids"], list(range(len(b["input_ids"]))), "right")
    with hooked(fresh, layers) as store:
        run_fwd(fresh, batch)
    ref = torch.stack([store[layer] for layer in layers], 1)
    assert torch.allclose(out["hidden_ref"], ref, atol=1e-5)
    assert not out["hidden_ref"].requires_grad and out["hidden_h"].requires_grad
    assert not torch.allclose(out["hidden_h"], out["hidden_ref"])
    assert "logits_logits" in out and "hidden_logits" not in out  # no logits for erase / retain rows


@pytest.mark.parametrize("truncate", [True, False])
def test_truncation_skips_blocks_after_the_deepest_layer(truncate: bool, data: dict[str, str], tmp_path: Path) -> None:
    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(
        data, "rr", tmp_path, truncate=truncate, target_layers=[0, 1]
    )
    calls: list[str] = []
    hooks = [
        lm.blocks[2].register_forward_hook(lambda *a: calls.append("block2")),
        lm.unembed.register_forward_hook(lambda *a: calls.append("head")),
    ]
    out = fwd(hidden=inp.hidden)
    for h in hooks:
        h.remove()
    assert inp.logits is None and layers == [0, 1]  # rr: erase + retain only
    # the reference forward always stops at block 1; the trained one too unless truncate is off
    assert calls == ([] if truncate else ["block2", "head"])
    assert out["hidden_h"].shape[1] == 2


def test_weights_computed_once_and_looked_up_by_id(
    data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mosr.train import weighting

    cfg = tiny_cfg(data, "mosr", weighting=WeightConfig(k=2, lam=1.0, w_min=0.1))
    train(cfg, tmp_path / "run", stop_after=1)
    saved = json.loads((tmp_path / "run" / "weights" / "weights.json").read_text())
    weights = {r["id"]: r["weight"] for r in saved["rows"]}
    assert len(set(round(w, 6) for w in weights.values())) > 1
    monkeypatch.setattr(weighting, "compute_weights", lambda *a, **k: pytest.fail("weights recomputed"))
    monkeypatch.setattr("mosr.train.data.compute_weights", lambda *a, **k: pytest.fail("weights recomputed"))
    lm = tiny_lm("llama")
    td = build(cfg.resolved(lm), lm, tmp_path / "run")
    assert {e.id: e.weight for e in td.pools["erase"]} == pytest.approx(weights)


def test_weighted_erasure_uses_per_example_weights(data: dict[str, str], tmp_path: Path) -> None:
    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(data, "mosr", tmp_path)
    out = fwd(hidden=inp.hidden, logits=inp.logits)
    loss_w, parts_w = compute_loss(cfg, out, inp, layers, td.weights, step=0)
    _, rows = inp.rows["erase"]
    inp.hidden["weight"][rows] = torch.tensor([1.0, 0.0, 0.0][: len(rows)])
    _, parts_one = compute_loss(cfg, out, inp, layers, td.weights, step=0)
    inp.hidden["weight"][rows] = 1.0
    _, parts_flat = compute_loss(cfg, out, inp, layers, None, step=0)
    from mosr.losses import erase_loss

    h = {layer: out["hidden_h"][rows][:, layers.index(layer)] for layer in cfg.target_layers}
    r = {layer: out["hidden_ref"][rows][:, layers.index(layer)] for layer in cfg.target_layers}
    per = erase_loss(h, r, inp.hidden["response_mask"][rows])
    assert parts_one["erase"] == pytest.approx(float(per[0].detach()), abs=1e-6)
    assert parts_flat["erase"] == pytest.approx(float(per.mean().detach()), abs=1e-6)
    assert torch.isfinite(loss_w)


def _erasure_by_hand(
    cfg: TrainConfig, out: dict[str, torch.Tensor], inp: StepInputs, layers: list[int], step: int, peft_model
) -> tuple[torch.Tensor, dict[str, float]]:  # noqa: ANN001
    """The erasure objective of DESIGN §4 recomputed from mosr.losses alone (raw cosine, relative retain L2,
    retain over every token): ``c_r·L_retain + c_e·L_erase + β·L_aug`` and its three parts."""
    from mosr.losses import erase_loss, retain_loss, token_nll

    def rows_of(kind: str, wanted: list[int]):  # noqa: ANN202
        group, rows = inp.rows[kind]
        batch = inp.hidden if group == "hidden" else inp.logits
        h = {layer: out[f"{group}_h"][rows][:, layers.index(layer)] for layer in wanted}
        ref = {layer: out[f"{group}_ref"][rows][:, layers.index(layer)] for layer in wanted}
        return h, ref, batch, rows

    h, ref, batch, rows = rows_of("erase", cfg.target_layers)
    w = batch["weight"][rows]
    erase = (w * erase_loss(h, ref, batch["response_mask"][rows])).sum() / w.sum()
    h, ref, batch, rows = rows_of("retain", cfg.retain_layers)
    per_retain = [retain_loss(h, ref, batch["attention_mask"][rows], relative=True)]
    if cfg.aug_in_retain:  # the augmented refusals also keep their states (on their response tokens)
        h, ref, batch, rows = rows_of("refusal", cfg.retain_layers)
        per_retain.append(retain_loss(h, ref, batch["response_mask"][rows], relative=True))
    retain = torch.cat(per_retain).mean()
    _, rows = inp.rows["refusal"]
    # the NLL of a plain forward with every position's logits (TrainForward keeps only the labelled tail)
    full = peft_model(**{k: inp.logits[k] for k in ("input_ids", "attention_mask", "position_ids")}).logits
    aug = token_nll(full[rows], inp.logits["labels"][rows]).mean()
    frac = step / (2 * cfg.steps)  # cb schedule
    c_r, c_e = cfg.retain_scale * cfg.alpha * frac, cfg.alpha * (1 - frac)
    parts = {"retain": float(retain.detach()), "erase": float(erase.detach()), "aug": float(aug.detach())}
    return c_r * retain + c_e * erase + cfg.augment.beta * aug, {**parts, "c_r": c_r, "c_e": c_e}


def _moved_adapters(peft_model) -> None:  # noqa: ANN001
    """Move the LoRA B matrices off their zero init, so trained and frozen states differ."""
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.add_(0.3)


@pytest.mark.parametrize("aug_in_retain", [True, False])
def test_erasure_loss_is_the_weighted_sum_of_its_parts(
    aug_in_retain: bool, data: dict[str, str], tmp_path: Path
) -> None:
    from mosr.train.augment import AugmentConfig

    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(
        data,
        "mosr",
        tmp_path,
        retain_scale=2.0,
        augment=AugmentConfig(beta=0.7),
        aug_in_retain=aug_in_retain,
        weighting=WeightConfig(k=2, lam=1.0, w_min=0.1),
        batch_size=8,
    )
    assert set(inp.rows) == {"erase", "retain", "refusal"}
    _moved_adapters(peft_model)
    states = ("hidden", "logits") if aug_in_retain else ("hidden",)
    out = fwd(hidden=inp.hidden, logits=inp.logits, states=states)
    loss, parts = compute_loss(cfg, out, inp, layers, td.weights, step=1)
    expected, by_hand = _erasure_by_hand(cfg, out, inp, layers, step=1, peft_model=peft_model)
    assert out["logits_logits"].shape[1] < inp.logits["input_ids"].shape[1]  # the unlabelled head is skipped
    assert by_hand["c_r"] == 2.5 and by_hand["c_e"] == 3.75  # ρ·α·s/(2S), α·(1 − s/(2S)) at s = 1 of S = 2
    # the parts differ from each other, so a swapped coefficient or a dropped term changes the total
    assert abs(by_hand["erase"] - by_hand["retain"]) > 0.05 and by_hand["aug"] > 0.05 and by_hand["retain"] > 1e-3
    for name in ("erase", "retain", "aug", "c_r", "c_e"):
        assert parts[name] == pytest.approx(by_hand[name], rel=1e-5, abs=1e-7), name
    assert parts["beta"] == pytest.approx(0.7)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


@pytest.mark.parametrize("first_weight", [0.0, 2.0])
def test_sft_loss_is_the_alpha_mix_of_token_mean_and_first_token_nll(
    first_weight: float, data: dict[str, str], tmp_path: Path
) -> None:
    from mosr.losses import first_token_nll, token_nll

    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(
        data, "sft", tmp_path, sft_alpha=0.3, sft_first_token_weight=first_weight, batch_size=8
    )
    assert set(inp.rows) == {"refusal", "sft"}
    _moved_adapters(peft_model)
    out = fwd(hidden=inp.hidden, logits=inp.logits, states=())
    loss, parts = compute_loss(cfg, out, inp, layers, None, step=1)
    # a plain forward with every position's logits
    full = peft_model(**{k: inp.logits[k] for k in ("input_ids", "attention_mask", "position_ids")}).logits
    by_kind = {}
    for kind in ("refusal", "sft"):
        _, rows = inp.rows[kind]
        labels = inp.logits["labels"][rows]
        mean, first = token_nll(full[rows], labels), first_token_nll(full[rows], labels)
        assert bool((first != mean).any())  # the first token is not the mean: the weight changes the loss
        by_kind[kind] = (mean + first_weight * first).mean()
    expected = 0.3 * by_kind["refusal"] + 0.7 * by_kind["sft"]
    assert parts["nll_refusal"] == pytest.approx(float(by_kind["refusal"].detach()), rel=1e-5)
    assert parts["nll_sft"] == pytest.approx(float(by_kind["sft"].detach()), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_aug_in_retain_puts_the_refusal_rows_into_the_retain_term(data: dict[str, str], tmp_path: Path) -> None:
    from mosr.losses import retain_loss

    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(data, "mosr", tmp_path, batch_size=8)
    assert [len(inp.rows[k][1]) for k in ("erase", "retain", "refusal")] == [3, 3, 2]
    _moved_adapters(peft_model)
    out = fwd(hidden=inp.hidden, logits=inp.logits)
    with_aug = compute_loss(cfg, out, inp, layers, td.weights, step=1)[1]["retain"]
    without = compute_loss(replace(cfg, aug_in_retain=False), out, inp, layers, td.weights, step=1)[1]["retain"]

    def per_sample(kind: str, mask: str) -> torch.Tensor:
        group, rows = inp.rows[kind]
        batch = inp.hidden if group == "hidden" else inp.logits
        h = {layer: out[f"{group}_h"][rows][:, layers.index(layer)] for layer in cfg.retain_layers}
        ref = {layer: out[f"{group}_ref"][rows][:, layers.index(layer)] for layer in cfg.retain_layers}
        return retain_loss(h, ref, batch[mask][rows], relative=True).detach()

    retain_rows, refusal_rows = per_sample("retain", "attention_mask"), per_sample("refusal", "response_mask")
    assert without == pytest.approx(float(retain_rows.mean()), rel=1e-5)
    # one mean over retain + refusal rows (not a mean of the two means)
    assert with_aug == pytest.approx(float(torch.cat([retain_rows, refusal_rows]).mean()), rel=1e-5)
    assert abs(with_aug - without) > 1e-3


# --- cached reference states --------------------------------------------------------------------------------


def test_cached_reference_states_equal_the_in_step_reference(data: dict[str, str], tmp_path: Path) -> None:
    from mosr.train.reference import compute_reference

    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(data, "mosr", tmp_path)
    pad_id = lm.tokenizer.pad_token_id
    with peft_model.disable_adapter():
        ref = compute_reference(lm, td.pools, layers, pad_id, progress=False)
    cached = make_inputs(
        td, sample_batch(td.pools, mix_counts(cfg.mix, cfg.batch_size), 0, 0, 0), pad_id, torch.device("cpu"), ref
    )
    assert set(cached.refs) == {"hidden", "logits"}
    live = fwd(hidden=inp.hidden, logits=inp.logits)
    for group in ("hidden", "logits"):
        mask = inp.hidden["attention_mask"] if group == "hidden" else inp.logits["attention_mask"]
        m = mask[:, None, :, None].bool()
        assert torch.allclose(cached.refs[group] * m, live[f"{group}_ref"] * m, atol=1e-5)
    # with refs the forward skips the reference pass and returns them as they are
    out = fwd(hidden=inp.hidden, logits=inp.logits, refs=cached.refs)
    assert out["hidden_ref"] is cached.refs["hidden"]
    # the centre is the mean frozen state over the retain tokens, attention sinks left out
    enc = td.pools["retain"]
    states = torch.cat([ref.states["retain"][i][0] for i in range(len(enc))])
    norms = states.norm(dim=-1)
    keep = norms <= 10 * norms.median()
    assert torch.allclose(ref.center[layers[0]], states[keep].mean(0), atol=1e-5)


def test_centre_leaves_out_attention_sinks() -> None:
    from mosr.train.reference import mean_state

    tokens = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1000.0], [2.0, 0.0]])  # one sink token
    center = mean_state({"retain": [tokens[None]]}, [7], ["retain"], 10.0, 2, torch.device("cpu"))
    assert center[7].tolist() == pytest.approx([2.0, 0.0])
    assert mean_state({}, [7], ["retain"], 10.0, 2, torch.device("cpu"))[7].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("similarity", ["centered", "raw"])
def test_training_with_and_without_the_reference_cache_agree(
    similarity: str, data: dict[str, str], tmp_path: Path
) -> None:
    cfg = tiny_cfg(data, "rr", steps=3, erase_similarity=similarity, retain_distance="relative")
    a = train(cfg, tmp_path / "cached")
    b = train(replace(cfg, cache_reference=False), tmp_path / "live")
    ta, tb = adapter_tensors(a.adapter), adapter_tensors(b.adapter)
    for k in ta:
        assert torch.allclose(ta[k], tb[k], atol=1e-5), k
    assert (tmp_path / "cached" / "reference" / "center.safetensors").is_file() == (similarity == "centered")
    cache = json.loads((tmp_path / "cached" / "summary.json").read_text())["reference_cache"]
    pools = json.loads((tmp_path / "cached" / "data.json").read_text())["examples"]
    assert 0 < cache["examples"] <= sum(pools.values())  # each example computed at most once


def test_reference_cache_fills_whole_chunks_once(data: dict[str, str], tmp_path: Path) -> None:
    from mosr.train.reference import CHUNK, ReferenceStates, compute_reference

    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(data, "mosr", tmp_path)
    pad = lm.tokenizer.pad_token_id
    ref = ReferenceStates(layers=layers)
    with peft_model.disable_adapter():
        assert ref.fill(lm, td.pools, [("erase", 1)], pad) == min(CHUNK, len(td.pools["erase"]))
        assert ref.fill(lm, td.pools, [("erase", 0), ("erase", 1)], pad) == 0  # already cached
        full = compute_reference(lm, td.pools, layers, pad, progress=False)
    assert ref.forwards == 1 and ref.has([("erase", 0)]) and not ref.has([("retain", 0)])
    for i, h in ref.states["erase"].items():  # same chunks, same batches: bit-identical
        assert torch.equal(h, full.states["erase"][i])


def test_reference_cache_keeps_the_model_dtype(data: dict[str, str], tmp_path: Path) -> None:
    from mosr.train.reference import compute_reference

    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(data, "mosr", tmp_path)
    pad = lm.tokenizer.pad_token_id
    with peft_model.disable_adapter():
        f32 = compute_reference(lm, td.pools, layers, pad, progress=False)
        peft_model.to(torch.bfloat16)
        bf16 = compute_reference(lm, td.pools, layers, pad, progress=False)
    h32, h16 = f32.states["erase"][0], bf16.states["erase"][0]
    assert h32.dtype == torch.float32 and h16.dtype == torch.bfloat16  # bf16 runs cache half the bytes
    assert torch.allclose(h16.float(), h32, rtol=0.1, atol=0.1 * float(h32.abs().mean()))
    assert all(c.dtype == torch.float32 for c in bf16.center.values())  # the centre is averaged in float64


def test_bad_weights_fail_when_the_examples_are_built(
    data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mosr.train.weighting import WeightResult

    monkeypatch.setattr(WeightResult, "weight", lambda self, _id: float("nan"))
    lm = tiny_lm("llama")
    with pytest.raises(DataError, match="finite and ≥ 0"):
        build(tiny_cfg(data, "mosr").resolved(lm), lm, tmp_path / "run")


def test_log_rows_are_plain_floats(data: dict[str, str], tmp_path: Path) -> None:
    """Loss parts stay on the device during the step and are read once into the log row."""
    train(tiny_cfg(data, "mosr"), tmp_path / "run", stop_after=2)
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    for row in rows:
        for k in ("loss", "erase", "retain", "aug", "grad_norm"):
            assert isinstance(row[k], float) and math.isfinite(row[k])


def test_loss_options_change_the_loss(data: dict[str, str], tmp_path: Path) -> None:
    from mosr.train.reference import compute_reference

    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(data, "rr", tmp_path)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.add_(0.3)
    with peft_model.disable_adapter():
        ref = compute_reference(lm, td.pools, layers, lm.tokenizer.pad_token_id, progress=False)
    out = fwd(hidden=inp.hidden, logits=inp.logits)
    parts = {}
    for dist in ("relative", "absolute"):
        for sim in ("raw", "centered"):
            c = replace(cfg, retain_distance=dist, erase_similarity=sim)
            parts[dist, sim] = compute_loss(c, out, inp, layers, None, step=1, center=ref.center)[1]
    assert parts["relative", "raw"]["retain"] != pytest.approx(parts["absolute", "raw"]["retain"])
    assert parts["relative", "raw"]["retain"] == pytest.approx(parts["relative", "centered"]["retain"])
    assert parts["relative", "raw"]["erase"] != pytest.approx(parts["relative", "centered"]["erase"])
    with pytest.raises(MosrError, match="center"):
        compute_loss(replace(cfg, erase_similarity="centered"), out, inp, layers, None, step=1)
    # the collapse push adds γ·collapse_loss to every erase sample
    from mosr.losses import collapse_loss

    c = replace(cfg, erase_similarity="centered")
    base = compute_loss(c, out, inp, layers, None, step=1, center=ref.center)[1]["erase"]
    pushed = compute_loss(replace(c, erase_collapse=0.5), out, inp, layers, None, step=1, center=ref.center)[1]["erase"]
    _, rows = inp.rows["erase"]
    h = {layer: out["hidden_h"][rows][:, layers.index(layer)] for layer in cfg.target_layers}
    r = {layer: out["hidden_ref"][rows][:, layers.index(layer)] for layer in cfg.target_layers}
    extra = collapse_loss(h, r, inp.hidden["response_mask"][rows], center=ref.center).mean()
    assert float(pushed) == pytest.approx(float(base) + 0.5 * float(extra.detach()), abs=1e-5)


# --- resume ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mosr", "sft"])
def test_resume_gives_the_same_adapter_as_an_uninterrupted_run(
    method: str, data: dict[str, str], tmp_path: Path
) -> None:
    from mosr.train import LoraSettings

    cfg = tiny_cfg(
        data,
        method,
        steps=5,
        checkpoint_every=2,
        grad_accum=2,
        schedule="linear",
        warmup_steps=2,
        lora=LoraSettings(rank=4, dropout=0.2),
    )
    full = train(cfg, tmp_path / "full")
    train(cfg, tmp_path / "part", stop_after=3)  # interrupted after 3 steps; last checkpoint at step 2
    assert not (tmp_path / "part" / "adapter").exists()
    assert latest_checkpoint(tmp_path / "part").name == "step-2"
    resumed = train(cfg, tmp_path / "part", resume=True)
    a, b = adapter_tensors(full.adapter), adapter_tensors(resumed.adapter)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    log = [json.loads(x) for x in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]  # step 3 of the interrupted run was dropped and redone
    full_log = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in full_log], abs=1e-6)


def test_resume_with_a_different_config_is_an_error(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data, "rr", steps=3)
    train(cfg, tmp_path / "run", stop_after=1)
    with pytest.raises(ConfigError, match=r"holds a run with a different lr \(lr=0\.01\): use a new --out folder"):
        train(replace(cfg, lr=0.5), tmp_path / "run", resume=True)


def test_augmented_refusals_without_retain_term(data: dict[str, str], tmp_path: Path) -> None:
    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(data, "mosr", tmp_path, aug_in_retain=False)
    out = fwd(hidden=inp.hidden, logits=inp.logits, states=("hidden",))
    assert "logits_h" not in out and "logits_ref" not in out and "logits_logits" in out
    loss, parts = compute_loss(cfg, out, inp, layers, td.weights, step=1)
    loss.backward()
    assert parts["aug"] > 0 and all(
        torch.isfinite(p.grad).all() for p in peft_model.parameters() if p.requires_grad and p.grad is not None
    )


def test_resume_without_checkpoint_is_an_error(data: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(MosrError, match="no checkpoint"):
        train(tiny_cfg(data), tmp_path / "empty", resume=True)


# --- bad configs -------------------------------------------------------------------------------------------


def test_unknown_method(data: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown method 'circuit'"):
        train(tiny_cfg(data, "circuit"), tmp_path / "run")


def test_target_layer_out_of_range(data: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="target_layers: layer 7 out of range"):
        train(tiny_cfg(data, target_layers=[1, 7]), tmp_path / "run")


def test_empty_harmful_set(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data)
    with pytest.raises(ConfigError, match="data.n_harmful must be a positive integer or null"):  # before the run folder
        train(replace(cfg, data=replace(cfg.data, n_harmful=0)), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="harmful training set .* empty"):
        train(replace(cfg, data=replace(cfg.data, harmful=str(empty))), tmp_path / "run2")


def test_bank_overlapping_an_eval_set_refuses_to_train(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data)
    with pytest.raises(DataError, match="not disjoint from the evaluation sets"):
        train(replace(cfg, data=replace(cfg.data, eval_sets=[data["eval_bank"]])), tmp_path / "run")


def test_harmful_prompts_in_eval_sets_are_dropped_or_refused(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data, "rr")
    cfg = replace(cfg, data=replace(cfg.data, eval_sets=[data["eval_harm"]]))
    lm = tiny_lm("llama")
    td = build(cfg.resolved(lm), lm, tmp_path / "run")
    assert "h0" not in {e.id for e in td.examples["erase"]} and len(td.examples["erase"]) == 5
    strict = replace(cfg, data=replace(cfg.data, drop_eval_overlap=False))
    with pytest.raises(DataError, match="shares 1 prompt"):
        build(strict.resolved(lm), lm, tmp_path / "run2")


def test_missing_completions_with_generation_disabled(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data, "rr")
    cfg = replace(cfg, data=replace(cfg.data, harmful=data["harmful_nocomp"], generate=False))
    with pytest.raises(DataError, match="no completion and generation is disabled"):
        train(cfg, tmp_path / "run")


def test_missing_completions_are_generated_and_cached(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data, "rr")
    cache = tmp_path / "cache" / "completions.jsonl"
    cfg = replace(
        cfg,
        data=replace(
            cfg.data, harmful=data["harmful_nocomp"], generate=True, max_new_tokens=4, completions_cache=str(cache)
        ),
    )
    train(cfg, tmp_path / "run", stop_after=1)
    rows = [json.loads(x) for x in cache.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [f"h{i}" for i in range(6)]
    # a second config reuses the shared cache with generation disabled
    train(replace(cfg, method="mosr_no_aug", data=replace(cfg.data, generate=False)), tmp_path / "run2", stop_after=1)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"schedule": "cosine"}, "schedule"),
        ({"batch_size": 0}, "batch_size"),
        ({"mix": {"erase": 1, "bogus": 1}}, "mix"),
        ({"sft_alpha": 1.5}, "sft_alpha"),
        ({"sft_first_token_weight": -1.0}, "sft_first_token_weight"),
    ],
)
def test_bad_values_are_config_errors(bad: dict, match: str, data: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=match):
        replace(tiny_cfg(data), **bad).validate()


@pytest.mark.parametrize(
    "sample, match",
    [({"advbench": 100}, r"names \['advbench'\], which are not in data.eval_sets"), ({"x": 0}, "positive integers")],
)
def test_eval_sample_must_name_an_eval_set_with_a_positive_size(sample: dict, match: str, data: dict[str, str]) -> None:
    cfg = tiny_cfg(data)
    with pytest.raises(ConfigError, match=match):
        replace(cfg, data=replace(cfg.data, eval_sets=["x"], eval_sample=sample)).validate()


def test_unknown_yaml_key_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("method: mosr\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.load(tmp_path / "c.yaml")


# --- pieces ------------------------------------------------------------------------------------------------


def test_mix_counts() -> None:
    assert mix_counts({"erase": 3, "retain": 3, "refusal": 2}, 8) == {"erase": 3, "retain": 3, "refusal": 2}
    assert mix_counts({"erase": 0.5, "retain": 0.5}, 5) == {"erase": 3, "retain": 2}  # a tie goes to the first kind
    assert mix_counts({"erase": 1, "retain": 0.01}, 4) == {"erase": 3, "retain": 1}  # every kind gets ≥ 1
    assert mix_counts({"erase": 0.375, "retain": 0.375, "refusal": 0.25}, 8) == {"erase": 3, "retain": 3, "refusal": 2}
    with pytest.raises(ConfigError, match="smaller than the number of example kinds"):
        mix_counts({"erase": 1, "retain": 1, "refusal": 1}, 2)


def test_sample_batch_is_seeded_and_random_across_steps() -> None:
    pools = {"erase": list(range(10)), "retain": list(range(3))}
    counts = {"erase": 3, "retain": 5}
    a = sample_batch(pools, counts, 0, 7, 0)
    assert a == sample_batch(pools, counts, 0, 7, 0)  # same (seed, step, micro, rank): same batch
    assert len(a["erase"]) == 3 and len(set(a["erase"])) == 3  # without replacement when the pool is large enough
    assert len(a["retain"]) == 5 and set(a["retain"]) <= {0, 1, 2}  # with replacement when it is small
    # every coordinate of the draw changes the batch: steps, micro-batches, processes and seeds
    steps = [tuple(sample_batch(pools, counts, 0, s, 0)["erase"]) for s in range(20)]
    assert len(set(steps)) >= 15
    assert len({tuple(sample_batch(pools, counts, 0, 7, m)["erase"]) for m in range(8)}) >= 6
    assert len({tuple(sample_batch(pools, counts, 0, 7, 0, rank=r)["erase"]) for r in range(8)}) >= 6
    seeds = [tuple(sample_batch(pools, counts, seed, s, 0)["erase"]) for seed in (1, 2) for s in range(20)]
    assert sum(x != y for x, y in zip(steps, seeds[:20])) >= 15 and seeds[:20] != seeds[20:]
    # over many steps each example is drawn about equally often (uniform, not a fixed subset)
    drawn = Counter(i for s in range(400) for i in sample_batch(pools, counts, 3, s, 0)["erase"])
    assert set(drawn) == set(range(10)) and max(drawn.values()) - min(drawn.values()) < 60  # 120 ± ~10 each


def test_lr_schedules(data: dict[str, str]) -> None:
    cfg = tiny_cfg(data, steps=10, warmup_steps=2)
    assert [lr_lambda(replace(cfg, schedule="constant"))(s) for s in (0, 5)] == [1.0, 1.0]
    assert [lr_lambda(replace(cfg, schedule="linear_warmup"))(s) for s in (0, 1, 5)] == [0.5, 1.0, 1.0]
    lin = lr_lambda(replace(cfg, schedule="linear"))
    assert lin(0) == 0.5 and lin(2) == 1.0 and lin(10) == 0.0


def test_psft_trains_refusal_after_an_unlabelled_affirmative_prefix(data: dict[str, str], tmp_path: Path) -> None:
    lm = tiny_lm("llama")
    cfg = tiny_cfg(data, "psft").resolved(lm)
    td = build(cfg, lm, tmp_path / "run")
    ex = td.examples["refusal"]
    assert all(e.response_prefix for e in ex)
    assert any(e.response_prefix.startswith("Sure, here is a gu") for e in ex)  # the record target, cut to 12 tokens
    enc = td.pools["refusal"][0]
    trained = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != -100]
    text = lm.tokenizer.decode(trained)
    assert ex[0].response_prefix.strip() not in text and ex[0].response.strip()[:10] in text


def test_trigger_sft_uses_rewrites_of_the_harmful_prompts(data: dict[str, str], tmp_path: Path) -> None:
    lm = tiny_lm("llama")
    td = build(tiny_cfg(data, "trigger_sft").resolved(lm), lm, tmp_path / "run")
    assert {e.id for e in td.examples["sft"]} == {f"trig_h{i}" for i in range(6)}
    assert all("police" in e.prompt for e in td.examples["sft"])


def test_cli_train_with_overrides(data: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mosr.cli import main

    tiny_cfg(data, "rr").save(tmp_path / "rr.yaml")
    rc = main(
        [
            "train",
            "--config",
            str(tmp_path / "rr.yaml"),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "1",
            "--set",
            "lr=0.001",
            "--set",
            "lora.rank=2",
        ]
    )
    assert rc == 0
    assert "adapter:" in capsys.readouterr().out
    saved = TrainConfig.load(tmp_path / "run" / "config.yaml")
    assert saved.steps == 1 and saved.lr == 0.001 and saved.lora.rank == 2
    rc = main(["train", "--config", str(tmp_path / "rr.yaml"), "--out", str(tmp_path / "r2"), "--set", "method=xx"])
    assert rc == 2
    assert "unknown method 'xx'" in capsys.readouterr().err


def test_weights_figure_is_drawn_by_the_cli_not_by_training(data: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import subprocess_env

    from mosr.cli import main
    from mosr.cli.train import draw_weights

    train(tiny_cfg(data, "mosr"), tmp_path / "lib", stop_after=1)
    assert (tmp_path / "lib" / "weights" / "weights.json").is_file()
    assert not (tmp_path / "lib" / "weights" / "weights.png").exists()  # the data path draws nothing
    assert [p.suffix for p in draw_weights(tmp_path / "lib")] == [".png", ".pdf"]
    assert draw_weights(tmp_path / "lib") == [] and draw_weights(tmp_path / "nothing") == []  # drawn once; no weights
    tiny_cfg(data, "mosr").save(tmp_path / "mosr.yaml")
    assert main(["train", "--config", str(tmp_path / "mosr.yaml"), "--out", str(tmp_path / "cli"), "--steps", "1"]) == 0
    assert (tmp_path / "cli" / "weights" / "weights.png").is_file()
    code = (
        "import sys, mosr.train, mosr.train.data; print(sorted(m for m in sys.modules if m.startswith('matplotlib')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-2000:]


def test_experiment_configs_parse() -> None:
    root = Path(__file__).resolve().parents[1] / "experiments"
    cfgs = {p.stem: TrainConfig.load(p) for p in sorted(root.glob("*.yaml"))}
    assert set(METHODS) <= set(cfgs)
    for name in METHODS:
        cfgs[name].validate()
        assert cfgs[name].method == name
    assert cfgs["mosr"].components() == (True, True) and cfgs["rr"].components() == (False, False)
    assert cfgs["mosr_no_weight"].components() == (False, True)
    assert cfgs["mosr_no_aug"].components() == (True, False)


def test_qwen_configs_parse_and_h533_configs_are_their_swept_settings() -> None:
    """Every ``experiments/qwen_coder`` training config validates, and each shipped ``*_h533.yaml`` is its sweep's
    seed-0 setting resolved as ``mosr train --config BASE --set ...`` resolves it."""
    from mosr.cli._common import build_config

    repo = Path(__file__).resolve().parents[1] / "experiments"
    root = repo / "qwen_coder"
    for p in sorted(root.glob("*.yaml")):
        if p.stem != "eval":
            TrainConfig.load(p).validate()
    sw = load_script(repo / "sweep.py")
    for shipped, spec_name, setting_name in [
        ("rr_h533.yaml", "harmful_scale_const.yaml", "rr-h533-rret-const05-lin-s200"),
        ("mosr_h533.yaml", "const_mosr_rr03.yaml", "mosr-b05-h533-rret-const05-lin-s200"),
    ]:
        spec = yaml.safe_load((repo / "sweeps" / "qwen_coder" / spec_name).read_text(encoding="utf-8"))
        base, overrides = sw.setting(spec["settings"][setting_name], spec)
        assert base == f"experiments/qwen_coder/{shipped.replace('_h533', '')}"
        swept = build_config(TrainConfig, str(repo.parent / base), overrides)
        assert TrainConfig.load(root / shipped).to_dict() == swept.to_dict(), shipped


@pytest.mark.slow
def test_real_model_one_step_and_adapter_loads(real_lm, data_dir, tmp_path: Path) -> None:  # noqa: ANN001
    import mosr

    cfg = TrainConfig(
        method="mosr_no_aug",
        steps=1,
        batch_size=2,
        max_length=48,
        progress=False,
        data=DataSettings(n_harmful=4, n_retain=4, n_bank=32, generate=False, completions=None, data_dir=str(data_dir)),
    )
    lm = mosr.load("smollm2-135m-instruct", device="cpu")
    harmful = tmp_path / "completions.jsonl"
    from mosr.train.data import eval_sets, harmful_prompts

    picked = harmful_prompts(cfg.data, eval_sets(cfg.data)).sample(4, 0)
    harmful.write_text(
        "".join(json.dumps({"id": r.id, "completion": "Sure, here is how. Step 1: do it."}) + "\n" for r in picked)
    )
    cfg = replace(cfg, data=replace(cfg.data, completions=str(harmful)))
    res = train(cfg, tmp_path / "run", lm=lm)
    loaded = mosr.load("smollm2-135m-instruct", device="cpu", adapter=res.adapter)
    assert loaded.n_layers == 30
    with pytest.raises(MosrError):
        mosr.load("smollm2-135m-instruct", device="cpu", adapter=tmp_path)  # not an adapter folder


def test_retain_answers_from_the_model_are_generated_once_and_cached(data: dict[str, str], tmp_path: Path) -> None:
    cfg = tiny_cfg(data, "rr", steps=1)
    cfg = replace(
        cfg,
        data=replace(
            cfg.data,
            retain_answers="model",
            generate=True,
            completions_cache=str(tmp_path / "cache" / "completions.jsonl"),
        ),
    )
    lm = tiny_lm("llama")
    td = build(cfg.resolved(lm), lm, tmp_path / "run")
    cache = tmp_path / "cache" / "retain-answers-tiny-llama.jsonl"
    rows = [json.loads(x) for x in cache.read_text().splitlines()]
    answers = {r["id"]: r["completion"] for r in rows}
    reference = {
        r["id"]: r["completion"] for r in (json.loads(x) for x in Path(data["retain"]).read_text().splitlines())
    }
    assert {e.id for e in td.examples["retain"]} <= set(answers)
    assert all(e.response == answers[e.id] for e in td.examples["retain"])
    assert any(answers[i] != reference[i] for i in answers)  # the model's own text, not the set's reference
    build(cfg.resolved(lm), lm, tmp_path / "run2")  # second build: read from the cache
    assert len(cache.read_text().splitlines()) == len(rows)
    with pytest.raises(ConfigError, match="retain_answers"):
        replace(cfg, data=replace(cfg.data, retain_answers="gpt")).validate()


def test_gradient_checkpointing_gives_the_same_adapter(data: dict[str, str], tmp_path: Path) -> None:
    a = train(tiny_cfg(data, "mosr", steps=2), tmp_path / "plain")
    b = train(tiny_cfg(data, "mosr", steps=2, gradient_checkpointing=True), tmp_path / "ckpt")
    ta, tb = adapter_tensors(a.adapter), adapter_tensors(b.adapter)
    assert ta.keys() == tb.keys()
    assert any(not torch.equal(v, torch.zeros_like(v)) for v in ta.values())
    for k in ta:
        assert torch.allclose(ta[k], tb[k], atol=1e-6), k


def _xboundary_cfg(data: dict[str, str], tmp_path: Path, **kw: object) -> TrainConfig:
    """xboundary on the tiny data, with boundary-safe prompts (the bank) answered compliantly in retain."""
    from conftest import BANK, write_rows

    bank = write_rows(
        tmp_path / "bank_answered.jsonl",
        [
            {
                "id": f"ba{i}",
                "prompt": p,
                "label": "pseudo_harmful",
                "category": None,
                "source": "test",
                "completion": "Sure, happy to help with that.",
            }
            for i, p in enumerate(BANK[1:])
        ],
    )
    base = tiny_cfg(data, "xboundary")
    return replace(base, data=replace(base.data, extra_retain=[bank], n_extra_retain=None), **kw)  # type: ignore[arg-type]


def test_xboundary_trains_with_warmup_and_separation(data: dict[str, str], tmp_path: Path) -> None:
    cfg = _xboundary_cfg(data, tmp_path, steps=3, retain_warmup=2, batch_size=8)
    res = train(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["c_r"] for r in rows[:2]] == [0.0, 0.0] and rows[2]["c_r"] > 0  # warm-up, then the cb ramp
    seps = [r["sep"] for r in rows if "sep" in r]
    assert seps and all(0.0 <= s <= 1.0 for s in seps) and any(s > 0 for s in seps)
    assert json.loads((tmp_path / "run" / "data.json").read_text())["examples"]["boundary"] == len(BANK_ANSWERED)
    assert (res.adapter / "adapter_config.json").is_file()


BANK_ANSWERED = range(5)  # BANK[1:] of conftest


def test_xboundary_drops_boundary_prompts_whose_answer_the_retain_filter_drops(
    data: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A boundary prompt the model refuses has no compliant retain answer to be separated from: it is left out
    (counted in the log), as X-Boundary keeps only fully compliant OR-Bench answers."""
    import yaml as _yaml

    cfg = _xboundary_cfg(data, tmp_path, steps=1, batch_size=8)
    bank = Path(cfg.data.extra_retain[0])
    rows = [json.loads(x) for x in bank.read_text().splitlines()]
    rows[0]["completion"] = "I'm sorry, but I can't help with that."
    bank.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = replace(cfg, data=replace(cfg.data, retain_filter="compliant"))
    with caplog.at_level("WARNING"):
        train(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "data.json").read_text())["examples"]["boundary"] == len(BANK_ANSWERED) - 1
    assert "dropped 1 of 5 boundary prompts" in caplog.text
    assert _yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["retain_filter"] == "compliant"


def test_xboundary_targets_are_the_mean_unit_state_of_the_paired_answer(data: dict[str, str], tmp_path: Path) -> None:
    from mosr.batching import pad_id
    from mosr.losses import mean_direction
    from mosr.train.loop import boundary_targets
    from mosr.train.reference import compute_reference

    lm = tiny_lm("llama")
    cfg = _xboundary_cfg(data, tmp_path).resolved(lm)
    built = build(cfg, lm, tmp_path / "run")
    assert len(built.pools["boundary"]) == 5
    center = {layer: torch.randn(lm.d_model) for layer in cfg.target_layers}
    targets = boundary_targets(cfg, lm, built, cfg.target_layers, pad_id(lm), torch.device("cpu"), None, center)
    ex = built.pools["boundary"][2]
    paired = next(r for r in built.pools["retain"] if r.id == ex.id)
    assert "refus" not in paired.id and ex.id.startswith("ba")
    ref = compute_reference(lm, {"retain": [paired]}, cfg.target_layers, pad_id(lm), "cpu", progress=False)
    h = ref.states["retain"][0]  # layer seq d_model
    want = mean_direction(
        {layer: h[j].unsqueeze(0) for j, layer in enumerate(cfg.target_layers)}, torch.ones(1, h.shape[1]), center
    )
    for j, layer in enumerate(cfg.target_layers):
        assert torch.allclose(targets[ex.id][j], want[layer][0], atol=1e-5)


def test_boundary_mix_needs_xboundary(data: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="only method xboundary"):
        tiny_cfg(data, "rr", mix={"erase": 1, "retain": 1, "boundary": 1}).validate()


def test_missing_retain_answers_keep_references_and_fill_prompts_without_one(
    data: dict[str, str], tmp_path: Path
) -> None:
    """``retain_answers: missing``: the retain set keeps its reference answers; an extra set of bare prompts
    (topic-matched benign rewrites) gets the frozen model's own answers, and only those are generated."""
    bare = tmp_path / "bare.jsonl"
    bare.write_text(
        "".join(
            json.dumps({"id": f"bare-{i}", "prompt": p, "label": "benign"}) + "\n"
            for i, p in enumerate(["How do locks keep a house safe?", "Why is bleach toxic?"])
        )
    )
    cfg = tiny_cfg(data, "rr", steps=1)
    cfg = replace(
        cfg,
        data=replace(
            cfg.data,
            retain_answers="missing",
            generate=True,
            extra_retain=[str(bare)],
            completions_cache=str(tmp_path / "cache" / "completions.jsonl"),
        ),
    )
    lm = tiny_lm("llama")
    td = build(cfg.resolved(lm), lm, tmp_path / "run")
    cache = tmp_path / "cache" / "retain-answers-tiny-llama.jsonl"
    generated = {r["id"]: r["completion"] for r in (json.loads(x) for x in cache.read_text().splitlines())}
    reference = {
        r["id"]: r["completion"] for r in (json.loads(x) for x in Path(data["retain"]).read_text().splitlines())
    }
    assert set(generated) == {"bare-0", "bare-1"}
    got = {e.id: e.response for e in td.examples["retain"]}
    assert {i: got[i] for i in generated if i in got} == {i: generated[i] for i in generated if i in got}
    assert all(got[i] == reference[i] for i in got if i in reference)
    assert any(i in reference for i in got) and any(i in generated for i in got)


def test_extra_retain_sharing_a_prompt_with_an_evaluation_set_is_refused(data: dict[str, str], tmp_path: Path) -> None:
    """Every retain set is checked against the evaluation sets, not only the bank: an extra retain set that holds
    an evaluation prompt (here the eval set's own haiku, reworded in case and spacing) stops training with one
    line naming the set and the shared prompt."""
    leaky = tmp_path / "leaky.jsonl"
    leaky.write_text(
        json.dumps(
            {"id": "x0", "prompt": "write a  HAIKU about rain.", "label": "benign", "completion": "Rain on the roof."}
        )
        + "\n"
    )
    cfg = tiny_cfg(data, "rr", steps=1)
    cfg = replace(cfg, data=replace(cfg.data, extra_retain=[str(leaky)]))
    lm = tiny_lm("llama")
    with pytest.raises(DataError, match=r"retain set .leaky. is not disjoint.*HAIKU about rain") as e:
        build(cfg.resolved(lm), lm, tmp_path / "run")
    assert "\n" not in str(e.value)


def test_logits_span_keeps_the_positions_from_the_one_before_the_first_label() -> None:
    from mosr.train.lora import logits_span

    ign = -100
    labels = torch.tensor([[ign, ign, ign, 5, 6, ign], [ign, ign, ign, ign, 7, 8]])
    assert logits_span(labels) == 4  # position 2 predicts the first label (column 3)
    assert logits_span(torch.full((2, 5), ign)) == 5  # nothing labelled: all (token_nll gives 0)
    assert logits_span(torch.tensor([[1, 2, ign]])) == 3  # column 0 labelled: all


def test_erase_tokens_request_response_erases_the_request_less_the_template_head(
    data: dict[str, str], tmp_path: Path
) -> None:
    from mosr.chat import format_chat, template_head
    from mosr.losses import erase_loss

    lm, cfg, td, peft_model, fwd, inp, layers = _forward_parts(data, "rr", tmp_path, batch_size=8)
    head = template_head(lm.tokenizer)
    ids = lm.tokenizer(format_chat(lm.tokenizer, ["one prompt"]), add_special_tokens=False).input_ids[0]
    assert 0 < head < len(ids)  # the template puts a shared head before the prompt
    group, rows = inp.rows["erase"]
    batch = inp.hidden
    content, response = batch["content_mask"][rows], batch["response_mask"][rows]
    assert (content[:, :head] == 0).all() and (content >= response).all() and (content.sum(1) > response.sum(1)).all()
    assert (content <= batch["attention_mask"][rows]).all()
    _moved_adapters(peft_model)
    out = fwd(hidden=inp.hidden, logits=inp.logits)
    parts = {
        t: float(compute_loss(replace(cfg, erase_tokens=t), out, inp, layers, None, step=1)[1]["erase"])
        for t in ("response", "request_response")
    }
    h = {layer: out["hidden_h"][rows][:, layers.index(layer)] for layer in cfg.target_layers}
    ref = {layer: out["hidden_ref"][rows][:, layers.index(layer)] for layer in cfg.target_layers}
    for name, mask in (("response", response), ("request_response", content)):
        assert parts[name] == pytest.approx(float(erase_loss(h, ref, mask).mean().detach()), rel=1e-5), name
    assert parts["response"] != pytest.approx(parts["request_response"], rel=1e-3)
    with pytest.raises(ConfigError, match="erase_tokens must be 'response' or 'request_response', got 'all'"):
        replace(cfg, erase_tokens="all").validate()


def test_refusal_retain_adds_the_harmful_prompts_the_model_refuses_with_its_own_refusal(
    data: dict[str, str], tmp_path: Path
) -> None:
    """``data.refusal_retain`` (circuit breakers' ``use_refusal_retain``): the frozen model's own answers to the
    harmful training prompts (here read from its answer cache) join retain where the judge calls them refusals;
    answered ones do not, and the retain set's own examples are unchanged."""
    from conftest import HARMFUL

    cache = tmp_path / "cache"
    cache.mkdir()
    harmful_ids = [json.loads(x)["id"] for x in Path(data["harmful"]).read_text().splitlines()]
    refusal = "I'm sorry, but I can't help with that request."
    answered = "Sure, step one is to gather the parts."
    answers = {i: refusal if k % 2 == 0 else answered for k, i in enumerate(harmful_ids)}
    (cache / "retain-answers-tiny-llama.jsonl").write_text(
        "".join(json.dumps({"id": i, "completion": a}) + "\n" for i, a in answers.items())
    )
    cfg = tiny_cfg(data, "rr", steps=1)
    lm = tiny_lm("llama")
    plain = build(cfg.resolved(lm), lm, tmp_path / "plain")
    cfg = replace(cfg, data=replace(cfg.data, refusal_retain=True, completions_cache=str(cache / "completions.jsonl")))
    with_refusals = build(cfg.resolved(lm), lm, tmp_path / "run")
    added = with_refusals.examples["retain"][len(plain.examples["retain"]) :]
    assert with_refusals.examples["retain"][: len(plain.examples["retain"])] == plain.examples["retain"]
    assert len(HARMFUL) == len(harmful_ids) and {e.id for e in added} == set(harmful_ids[::2])
    assert all(e.response == refusal and e.kind == "retain" for e in added)
    with pytest.raises(ConfigError, match="refusal_retain"):
        replace(cfg, method="sft").validate()
