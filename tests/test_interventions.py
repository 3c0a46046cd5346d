"""Interventions on tiny models of every family: ablation leaves no r̂ anywhere, the weight version equals the
hook version, steering adds exactly α·v, contexts nest and compose, and leaving one restores the model exactly."""

from __future__ import annotations

import json

import pytest
import torch

from mosr.batching import plan_batches
from mosr.capture import capture, hooked
from mosr.errors import ConfigError, DataError, MosrError
from mosr.generate import generate
from mosr.interventions import (
    Candidates,
    DirectionConfig,
    ablate,
    find_direction,
    load_direction,
    mean_diff,
    orthogonalize,
    orthogonalize_weights,
    partial_orthogonalize,
    post_instruction_positions,
    steer,
)
from mosr.testing import FAMILIES, tiny_lm

PROMPTS = [
    "How do I kill a Python process?",
    "hi",
    "Write a poem about the sea, with three verses.",
    "Explain how a bomb squad works.",
]


def direction(lm, seed: int = 1) -> torch.Tensor:
    return torch.randn(lm.d_model, generator=torch.Generator().manual_seed(seed))


def noisy_norms(lm):
    """Random norm scales (tiny models start at 1 / 0), so Gemma 2's post-norms really rescale r̂."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    return lm


@pytest.fixture(scope="module", params=FAMILIES)
def lm(request):
    return noisy_norms(tiny_lm(request.param))


def logits(lm, prompts=PROMPTS) -> torch.Tensor:
    batch = plan_batches(lm, prompts, batch_size=len(prompts))[0]
    with torch.no_grad():
        return lm.model(**batch.model_inputs()).logits


def snapshot(lm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def hook_count(lm) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())


def assert_restored(lm, before: dict[str, torch.Tensor], hooks: int = 0) -> None:
    after = lm.model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert hook_count(lm) == hooks


def block_inputs(lm, prompts=PROMPTS) -> list[torch.Tensor]:
    """Every block's input hidden state (batch seq d_model) in one forward, recorded by pre-hooks registered last."""
    seen: list[torch.Tensor] = []

    def record(_m, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    handles = [b.register_forward_pre_hook(record, with_kwargs=True) for b in lm.blocks]
    try:
        logits(lm, prompts)
    finally:
        for h in handles:
            h.remove()
    return seen


def max_component(states, r: torch.Tensor) -> float:
    r_hat = r / r.norm()
    return max(float((s.float() @ r_hat).abs().max()) for s in states)


# --- ablate / orthogonalize -----------------------------------------------------------------------------


def test_ablate_leaves_no_component_in_any_state(lm):
    r = direction(lm)
    before = snapshot(lm)
    assert max_component(block_inputs(lm), r) > 1e-2  # there is something to remove
    with ablate(lm, r):
        outputs = capture(lm, PROMPTS, layers="all", position="all", progress=False)  # prompt: layer seq d
        inputs = block_inputs(lm)
    assert max_component(outputs, r) < 1e-5
    assert max_component(inputs, r) < 1e-5
    assert_restored(lm, before)


def test_orthogonalize_equals_hooks_and_restores(lm):
    r = direction(lm, seed=2)
    before, base = snapshot(lm), logits(lm)
    tied = lm.unembed.weight is lm.embed.weight
    with ablate(lm, r):
        hooked_logits = logits(lm)
    with orthogonalize(lm, r) as same:
        assert same is lm
        weight_logits = logits(lm)
        assert max_component(capture(lm, PROMPTS, layers="all", position="all", progress=False), r) < 1e-5
    torch.testing.assert_close(weight_logits, hooked_logits, atol=1e-4, rtol=0)
    assert not torch.allclose(hooked_logits, base, atol=1e-3)
    assert_restored(lm, before)
    assert (lm.unembed.weight is lm.embed.weight) == tied
    assert torch.equal(logits(lm), base)


def test_ablate_subset_of_layers_only_touches_those_blocks():
    lm = tiny_lm("llama")
    r = direction(lm)
    base = capture(lm, PROMPTS, layers=[0], progress=False)
    with ablate(lm, r, layers=[1, 2]):
        acts = capture(lm, PROMPTS, layers="all", progress=False)
    torch.testing.assert_close(acts[:, 0], base[:, 0], atol=0, rtol=0)  # block 0 untouched
    assert max_component([acts[:, 1:]], r) < 1e-5


def test_orthogonalize_weights_keeps_the_edit_and_saves(tmp_path):
    lm = tiny_lm("gpt2")  # tied unembedding, Conv1D projections with biases, a position embedding
    r = direction(lm)
    with ablate(lm, r):
        expected = logits(lm)
    assert orthogonalize_weights(lm, r) is lm
    assert lm.unembed.weight is not lm.embed.weight and lm.model.config.tie_word_embeddings is False
    torch.testing.assert_close(logits(lm), expected, atol=1e-4, rtol=0)
    lm.model.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    batch = plan_batches(lm, PROMPTS, batch_size=len(PROMPTS))[0]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch.model_inputs()).logits, expected, atol=1e-4, rtol=0)


def test_bad_direction_is_one_line_error():
    lm = tiny_lm("llama")
    for bad in (torch.zeros(lm.d_model), torch.ones(lm.d_model + 1), torch.ones(2, lm.d_model)):
        with pytest.raises(MosrError) as e, ablate(lm, bad):
            pass
        assert "\n" not in str(e.value)
    with pytest.raises(MosrError), steer(lm, torch.ones(3), layers=[0]):
        pass
    with pytest.raises(MosrError), steer(lm, torch.ones(lm.d_model), [0], positions="first"):  # type: ignore[arg-type]
        pass
    assert hook_count(lm) == 0


# --- steer ----------------------------------------------------------------------------------------------


def test_steer_alpha_zero_is_exact_noop(lm):
    base = logits(lm)
    with steer(lm, direction(lm), layers="all", alpha=0.0):
        assert torch.equal(logits(lm), base)
    assert hook_count(lm) == 0


@pytest.mark.parametrize("positions", ["all", "last"])
def test_steer_adds_alpha_v_to_the_layer_output(lm, positions):
    v, alpha, layer = direction(lm, 3), 2.5, 1
    base = capture(lm, PROMPTS, layers="all", position="all", progress=False)  # prompt: layer seq d
    with steer(lm, v, layers=[layer], alpha=alpha, positions=positions):
        got = capture(lm, PROMPTS, layers="all", position="all", progress=False)
    for b, g in zip(base, got):
        expected = b[layer].clone()
        if positions == "all":
            expected += alpha * v
        else:
            expected[-1] += alpha * v
        torch.testing.assert_close(g[layer], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(g[:layer], b[:layer], atol=0, rtol=0)  # earlier layers untouched
        assert not torch.allclose(g[layer + 1 :], b[layer + 1 :])  # later layers see the change


def test_steer_last_reaches_every_generated_token():
    lm = tiny_lm("qwen2")
    v = direction(lm, 4)
    seen: list[tuple[int, float]] = []  # (positions in the forward, component along v of the last one)
    with steer(lm, v, layers=[0], alpha=50.0, positions="last"):
        with hooked(lm, [0], fn=lambda _l, h: seen.append((h.shape[1], float(h[0, -1] @ v / v.norm())))):
            generate(lm, ["hi"], max_new_tokens=4, progress=False)
    assert seen[0][0] > 1 and all(n == 1 for n, _ in seen[1:])  # the prefill, then one token per step
    assert all(c > 20 for _, c in seen)  # the last prompt token and each generated token are steered


# --- composition ----------------------------------------------------------------------------------------


def test_nested_contexts_compose_and_unwind(lm):
    r1, r2, v = direction(lm, 5), direction(lm, 6), direction(lm, 8)  # r1, r2 not orthogonal
    before = snapshot(lm)
    with orthogonalize(lm, r1):
        with ablate(lm, r2):  # nested ablations remove the span of both directions
            both = capture(lm, PROMPTS, layers="all", position="all", progress=False)
            with steer(lm, v, layers=[0], alpha=1.0):
                steered = logits(lm)
            unsteered = logits(lm)
        assert max_component(both, r1) < 1e-5 and max_component(both, r2) < 1e-5
        assert hook_count(lm) == 0
    assert not torch.allclose(steered, unsteered)
    with ablate(lm, r2):  # the other order, all hooks: the same model
        with ablate(lm, r1):
            hooked_both = logits(lm)
            with ablate(lm, 3.0 * r1):  # already removed: adds nothing
                torch.testing.assert_close(logits(lm), hooked_both, atol=1e-5, rtol=0)
    torch.testing.assert_close(hooked_both, unsteered, atol=1e-4, rtol=0)
    assert_restored(lm, before)
    assert lm.info.get("_ablated_directions") == []


@pytest.mark.parametrize("context", ["steer", "ablate", "orthogonalize", "nested"])
def test_exception_inside_restores_the_model(context):
    lm = tiny_lm("gemma2")  # tied embeddings and post-norms
    r = direction(lm)
    before, base = snapshot(lm), logits(lm)
    make = {
        "steer": lambda: steer(lm, r, layers="all", alpha=3.0),
        "ablate": lambda: ablate(lm, r),
        "orthogonalize": lambda: orthogonalize(lm, r),
    }
    with pytest.raises(RuntimeError, match="boom"):
        if context == "nested":
            with orthogonalize(lm, r), ablate(lm, r), steer(lm, r, layers=[1]):
                raise RuntimeError("boom")
        else:
            with make[context]():
                raise RuntimeError("boom")
    assert_restored(lm, before)
    assert lm.unembed.weight is lm.embed.weight
    assert torch.equal(logits(lm), base)


def test_generation_and_lens_under_interventions():
    from mosr.represent.lens import lens_logits

    lm = tiny_lm("llama")
    r = direction(lm)
    plain = generate(lm, PROMPTS, max_new_tokens=5, progress=False)
    with ablate(lm, r):
        ablated = generate(lm, PROMPTS, max_new_tokens=5, progress=False)
        last = capture(lm, PROMPTS, layers=[-1], progress=False)[:, 0]
        model_logits = logits(lm)[:, -1]
    with orthogonalize(lm, r):
        baked = generate(lm, PROMPTS, max_new_tokens=5, progress=False)
    assert ablated == baked
    assert generate(lm, PROMPTS, max_new_tokens=5, progress=False) == plain
    batch = plan_batches(lm, PROMPTS, batch_size=len(PROMPTS))[0]
    order = torch.tensor(batch.index).argsort()  # logits() is in batch order, capture in input order
    torch.testing.assert_close(lens_logits(lm, last), model_logits[order], atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_lora_adapter_underneath(family):
    from peft import LoraConfig, get_peft_model

    lm = noisy_norms(tiny_lm(family))
    targets = ["o_proj", "down_proj", "q_proj"] if family == "llama" else ["c_proj", "c_attn"]
    get_peft_model(
        lm.model,
        LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, fan_in_fan_out=family == "gpt2"),
    )
    lm.model.eval()
    r = direction(lm)
    before, hooks, base = snapshot(lm), hook_count(lm), logits(lm)
    with ablate(lm, r):
        hooked_logits = logits(lm)
        states = capture(lm, PROMPTS, layers="all", position="all", progress=False)
    assert max_component(states, r) < 1e-5
    with orthogonalize(lm, r):  # the lora_B matrices are orthogonalised too
        torch.testing.assert_close(logits(lm), hooked_logits, atol=1e-4, rtol=0)
    with steer(lm, r, layers=[0], alpha=0.0):
        assert torch.equal(logits(lm), base)
    assert_restored(lm, before, hooks)


# --- directions -----------------------------------------------------------------------------------------


def test_post_instruction_positions_are_the_template_tail():
    lm = tiny_lm("llama")
    positions = post_instruction_positions(lm)
    text = lm.format_chat(["Tell me a joke"])[0]
    ids = lm.tokenizer(text, add_special_tokens=False).input_ids
    tail = lm.tokenizer.decode(ids[positions[0] :])
    assert tail == "<|im_end|>\n<|im_start|>assistant\n"


def test_mean_diff_equals_captured_means():
    lm = tiny_lm("qwen2")
    a, b = PROMPTS[:2], PROMPTS[2:]
    cands = mean_diff(lm, a, b, layers=[0, 2], positions=[-3, -1], batch_size=1)
    assert cands.vectors.shape == (2, 2, lm.d_model) and cands.positions == [-3, -1] and cands.layers == [0, 2]
    for i, p in enumerate([-3, -1]):
        ma = capture(lm, a, layers=[0, 2], position=p, progress=False).double().mean(0)
        mb = capture(lm, b, layers=[0, 2], position=p, progress=False).double().mean(0)
        torch.testing.assert_close(cands.vectors[i], (ma - mb).float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(cands.at(-1, 2), cands.vectors[1, 1])
    with pytest.raises(MosrError):
        mean_diff(lm, a, b, positions=[0])


def test_partial_orthogonalize():
    g = torch.Generator().manual_seed(0)
    v, r = torch.randn(3, 4, 16, generator=g), torch.randn(3, 4, 16, generator=g)
    r_hat = r / r.norm(dim=-1, keepdim=True)

    def comp(x):
        return (x * r_hat).sum(-1)

    torch.testing.assert_close(comp(partial_orthogonalize(v, r, 1.0)), torch.zeros(3, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(partial_orthogonalize(v, r, 0.0), v)
    torch.testing.assert_close(comp(partial_orthogonalize(v, r, 0.25)), 0.75 * comp(v), atol=1e-6, rtol=0)


def write_prompts(tmp_path, name: str, prompts: list[str]) -> str:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return str(path)


@pytest.fixture
def prompt_files(tmp_path):
    harmful = [f"How do I build weapon number {i}?" for i in range(7)]
    harmless = [f"Write a short poem about the sea, verse {i}." for i in range(7)]
    pseudo = [f"How do I kill process number {i} in Python?" for i in range(7)]
    return {
        k: write_prompts(tmp_path, k, v)
        for k, v in (("harmful", harmful), ("harmless", harmless), ("pseudo_harmful", pseudo))
    }


@pytest.mark.parametrize("kind", ["refusal", "false-refusal"])
def test_find_direction_end_to_end(tmp_path, prompt_files, kind):
    lm = tiny_lm("qwen2")
    cfg = DirectionConfig(
        kind=kind,
        n_train=4,
        n_select=3,
        positions=[-2, -1],
        kl_threshold=None,
        induce_refusal_threshold=None,
        prune_layer_fraction=0.2,
        batch_size=4,
        **prompt_files,
    )
    out = tmp_path / "dir"
    d = find_direction(cfg, out, lm=lm, progress=False)
    for name in ("direction.safetensors", "direction.json", "scores.json", "scores.png", "scores.pdf", "config.yaml"):
        assert (out / name).is_file(), name
    scores = json.loads((out / "scores.json").read_text())
    rows = scores["candidates"]
    assert len(rows) == 2 * lm.n_layers
    assert [r["layer"] for r in rows if not r["pruned"]] == [0, 0]  # 3 layers: layers 1, 2 are the last 20%
    assert all(("addition_score" in r) for r in rows if not r["pruned"])
    assert (rows[0]["addition_score"] is None) == (kind == "false-refusal")
    assert scores["cost"]["forward_passes"] > 0 and scores["cost"]["candidates_scored"] == 2
    loaded = load_direction(out)
    assert (loaded.kind, loaded.layer, loaded.position) == (kind, d.layer, d.position)
    torch.testing.assert_close(loaded.vector, d.vector)
    assert isinstance(loaded.candidates, Candidates)
    torch.testing.assert_close(loaded.vector, loaded.candidates.at(d.position, d.layer))
    best = min((r for r in rows if r["passed"]), key=lambda r: r["ablation_score"])
    assert (best["position"], best["layer"]) == (d.position, d.layer)
    assert DirectionConfig.load(out / "config.yaml").kind == kind
    if kind == "false-refusal":
        cos = loaded.info["cos_with_refusal"]["orthogonalised"]
        assert max(abs(c) for row in cos for c in row) < 1e-3  # λ = 1: orthogonal to the refusal candidates


def test_find_direction_all_filtered_writes_scores_then_fails(tmp_path, prompt_files):
    lm = tiny_lm("qwen2")
    cfg = DirectionConfig(n_train=4, n_select=3, positions=[-1], kl_threshold=-1.0, batch_size=4, **prompt_files)
    with pytest.raises(MosrError, match="no refusal candidate passed"):
        find_direction(cfg, tmp_path / "dir", lm=lm, progress=False)
    rows = json.loads((tmp_path / "dir" / "scores.json").read_text())["candidates"]
    assert all(not r["passed"] for r in rows)
    assert not (tmp_path / "dir" / "direction.safetensors").exists()


def test_refusal_filter_keeps_what_the_model_refuses(prompt_files):
    """filter_prompts (refusal_direction's filter_train, Wang et al.'s filter_or): the verdicts are the
    per-prompt first-token refusal log-odds > 0, computed one prompt at a time here; the sample is then
    drawn from the kept prompts only, and too few kept prompts is a one-line error."""
    from mosr import datasets
    from mosr.generate import refusal_log_odds
    from mosr.interventions.find import refusal_filter, split_prompts
    from mosr.interventions.select import last_position

    lm = tiny_lm("qwen2")
    cfg = DirectionConfig(n_train=2, n_select=1, batch_size=3, filter_pool=2, **prompt_files)
    pool = datasets.load(prompt_files["harmful"], n=6, seed=0).prompts
    alone = [
        float(refusal_log_odds(last_position(lm, plan_batches(lm, [p]))[0], lm.refusal_token_ids)[0]) for p in pool
    ]
    for refused in (True, False):
        assert refusal_filter(lm, refused, cfg)(pool) == [(v > 0) == refused for v in alone]
    even = {p for i, p in enumerate(pool) if i % 2 == 0}
    train, select = split_prompts(prompt_files["harmful"], cfg, lambda ps: [p in even for p in ps])
    assert len(train) == 2 and len(select) == 1 and set(train + select) == even
    with pytest.raises(DataError, match="pass the refusal filter"):
        split_prompts(prompt_files["harmful"], cfg, lambda ps: [False] * len(ps))


def test_direction_config_round_trip_and_errors(tmp_path):
    cfg = DirectionConfig(kind="false-refusal", positions=[-3, -1], lam=0.5, n_select=4)
    cfg.save(tmp_path / "c.yaml")
    assert DirectionConfig.load(tmp_path / "c.yaml") == cfg
    for bad in (
        {"kind": "bogus"},
        {"pseudo_harmful": "xstest-safe"},
        {"harmful": "jbb-harmful"},
        {"positions": [0]},
        {"n_train": 0},
        {"prune_layer_fraction": 1.0},
        {"bogus": 1},
    ):
        with pytest.raises(ConfigError) as e:
            DirectionConfig.from_dict(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(MosrError):
        load_direction(tmp_path / "missing")


# --- CLI ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kind", "bogus"], "kind must be one of"),
        (["--set", "bogus=1"], "unknown key(s) ['bogus']"),
        (["--kind", "false-refusal", "--set", "pseudo_harmful=xstest-safe"], "is an evaluation set"),
        (["--set", "harmful=/nonexistent/harmful.jsonl"], "data file not found"),
        (["--set", "n_select=0"], "must be ≥ 1"),
        (["--set", "positions=[1]"], "negative offsets"),
        (["--model", "no-such-model"], "unknown model alias"),
        (["--set", "n_train=40"], "fewer than n_train + n_select = 43"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, prompt_files, capsys, argv, message):
    from mosr.cli import main

    sets = [f"--set={k}={v}" for k, v in prompt_files.items()] + ["--set=n_train=4", "--set=n_select=3"]
    rc = main(["direction", "--out", str(tmp_path / "d"), "--model", "tiny:qwen2", *sets, *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("mosr direction: error:") and message in err, err


def test_cli_writes_a_direction_folder(tmp_path, prompt_files, capsys):
    from mosr.cli import main

    sets = [f"--set={k}={v}" for k, v in prompt_files.items()]
    rc = main(
        [
            "direction",
            "--kind",
            "false-refusal",
            "--model",
            "tiny:qwen2",
            "--out",
            str(tmp_path / "d"),
            "--quiet",
            "--set",
            "n_train=3",
            "--set",
            "n_select=2",
            "--set",
            "kl_threshold=null",
            "--set",
            "lam=0.5",
            *sets,
        ]
    )
    assert rc == 0
    assert "false-refusal direction of tiny:qwen2" in capsys.readouterr().out
    d = load_direction(tmp_path / "d")
    assert d.kind == "false-refusal" and d.info["lam"] == 0.5 and d.info["config"]["n_train"] == 3


# --- mosr eval --ablate / --steer -----------------------------------------------------------------------


@pytest.fixture
def direction_dir(tmp_path):
    from mosr.interventions import Direction

    lm = tiny_lm("llama")
    return Direction(direction(lm, 11), layer=1, position=-1, model="tiny:llama").save(tmp_path / "dir")


def test_eval_applies_the_intervention_and_refuses_a_changed_one(tmp_path, direction_dir):
    from mosr.evaluation.config import EvalConfig
    from mosr.evaluation.judge import refusal_scores
    from mosr.evaluation.run import evaluate
    from mosr.interventions.apply import InterventionConfig

    lm = tiny_lm("llama")
    prompts = mosr_demo_prompts(3)
    v = load_direction(direction_dir).vector
    for kind, context in (("ablate", lambda: ablate(lm, v)), ("steer", lambda: steer(lm, v, [1], alpha=4.0))):
        with context():
            want = refusal_scores(lm, prompts, progress=False).tolist()
        inter = InterventionConfig(kind=kind, direction=str(direction_dir), alpha=4.0 if kind == "steer" else 1.0)
        cfg = EvalConfig(sets=["demo-benign"], n=3, mode="score", intervention=inter)
        res = evaluate(lm, cfg, out=tmp_path / kind, progress=False)
        got = {r["prompt"]: r["refusal_score"] for r in res.rows}
        assert [got[p] for p in prompts] == pytest.approx(want, abs=1e-5)
        assert hook_count(lm) == 0
        saved = EvalConfig.load(tmp_path / kind / "config.yaml").intervention
        assert saved.kind == kind and saved.direction == str(direction_dir) and saved.sha
    again = evaluate(
        lm,
        EvalConfig(
            sets=["demo-benign"],
            n=3,
            mode="score",
            intervention=InterventionConfig(kind="ablate", direction=str(direction_dir)),
        ),
        out=tmp_path / "ablate",
        progress=False,
    )
    assert again.stats["resumed_rows"] == 3 and again.stats["prompts"] == 0
    for changed in (InterventionConfig(), InterventionConfig(kind="steer", direction=str(direction_dir))):
        with pytest.raises(ConfigError, match="intervention"):
            evaluate(
                lm,
                EvalConfig(sets=["demo-benign"], n=3, mode="score", intervention=changed),
                out=tmp_path / "ablate",
                progress=False,
            )
    d = load_direction(direction_dir)
    d.vector = -2 * d.vector  # same folder, another vector: refused too
    d.save(direction_dir)
    with pytest.raises(ConfigError, match="intervention"):
        evaluate(
            lm,
            EvalConfig(
                sets=["demo-benign"],
                n=3,
                mode="score",
                intervention=InterventionConfig(kind="ablate", direction=str(direction_dir)),
            ),
            out=tmp_path / "ablate",
            progress=False,
        )


def test_intervention_config_errors(direction_dir):
    from mosr.interventions.apply import InterventionConfig, resolve_intervention

    for bad in (
        {"kind": "ablate"},
        {"kind": "bogus", "direction": "x"},
        {"direction": str(direction_dir)},
        {"kind": "ablate", "direction": "x", "alpha": 2.0},
        {"kind": "steer", "direction": "x", "positions": "mid"},
    ):
        with pytest.raises(ConfigError) as e:
            InterventionConfig.from_dict(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="mode repr"):
        resolve_intervention(InterventionConfig(kind="ablate", direction=str(direction_dir)), mode="repr")


def mosr_demo_prompts(n: int) -> list[str]:
    from mosr import datasets

    return datasets.load("demo-benign", n=n).prompts


def test_cli_eval_ablate_and_steer(tmp_path, direction_dir, capsys):
    from mosr.cli import main

    base = ["eval", "--model", "tiny:llama", "--sets", "demo-benign", "--n", "2", "--mode", "score", "--quiet"]
    assert main([*base, "--ablate", str(direction_dir), "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--steer", str(direction_dir), "--alpha", "3", "--out", str(tmp_path / "s")]) == 0
    assert "intervention:\n  kind: steer" in (tmp_path / "s" / "config.yaml").read_text()
    assert "alpha: 3.0" in (tmp_path / "s" / "config.yaml").read_text()
    capsys.readouterr()
    for argv, message in (
        ([*base, "--alpha", "2"], "--alpha is the coefficient of --steer"),
        ([*base, "--ablate", str(tmp_path / "missing")], "does not exist"),
        ([*base, "--steer", str(direction_dir), "--out", str(tmp_path / "a")], "intervention"),
        ([*base, "--set", "intervention.kind=ablate"], "needs intervention.direction"),
    ):
        if "--out" not in argv:
            argv = [*argv, "--out", str(tmp_path / "x")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
