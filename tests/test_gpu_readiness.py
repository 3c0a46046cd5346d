"""GPU readiness, checked as far as a CPU allows: no host round trip in the per-batch loops (run on the
``meta`` device, where any ``.item()`` / ``bool(tensor)`` / copy to the host fails), the bf16 paths, the
accelerate config files, and ``benchmarks/gpu_check.sh`` (syntax, flags, and an end-to-end CPU run)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mosr.testing import tiny_lm

REPO = Path(__file__).resolve().parents[1]
GPU_CHECK = REPO / "benchmarks" / "gpu_check.sh"
PROMPTS = [
    "How do I kill a Python process?",
    "hi",
    "Write a poem about the sea, please.",
    "a b c",
    "Name three colours.",
]
capture_module = importlib.import_module("mosr.capture")  # `mosr.capture` the attribute is the function


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("position", ["last", "mean", -2, "all"])
def test_capture_runs_on_the_meta_device_with_one_host_copy_per_batch(
    family: str, position: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = tiny_lm(family, n_layers=4)
    lm.model.to("meta")
    copies: list[tuple[int, ...]] = []

    def to_host(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # the one copy; meta cannot leave the device
        assert x.device.type == "meta"
        copies.append(tuple(x.shape))
        return torch.zeros(x.shape, dtype=dtype)

    monkeypatch.setattr(capture_module, "to_host", to_host)
    out = capture_module.capture(lm, PROMPTS, layers="all", position=position, batch_size=2, progress=False)
    assert len(copies) == 3  # 5 prompts in batches of 2: one copy per batch, whatever the number of layers
    assert all(shape[1] == 4 for shape in copies)  # every layer of the batch in that one copy
    if position == "all":
        assert [t.shape[0] for t in out] == [4] * len(PROMPTS)
    else:
        assert out.shape == (len(PROMPTS), 4, lm.d_model)


def test_capture_in_bfloat16_matches_float32() -> None:
    lm = tiny_lm("llama")
    ref = capture_module.capture(lm, PROMPTS, layers="all", progress=False)
    lm.model.to(torch.bfloat16)
    got = capture_module.capture(lm, PROMPTS, layers="all", progress=False)
    assert got.dtype == torch.float32 and torch.allclose(got, ref, rtol=0.05, atol=0.05)


def test_lens_copies_only_small_results_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from mosr.represent.lens import decode_layers

    lm = tiny_lm("llama")
    hidden = capture_module.capture(lm, PROMPTS, layers="all", progress=False)
    vocab = lm.unembed.weight.shape[0]
    moved: list[tuple[int, ...]] = []
    original = torch.Tensor.cpu

    def cpu(self: torch.Tensor, *a: object, **k: object) -> torch.Tensor:
        if sys._getframe(1).f_code.co_filename.endswith("lens.py"):
            moved.append(tuple(self.shape))
        return original(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    result = decode_layers(lm, hidden, k=3, chunk_size=2)
    assert moved and all(vocab not in shape for shape in moved)  # top-k and masses, never the probabilities
    assert result.top_ids.shape == (len(PROMPTS), lm.n_layers, 3)


def test_refusal_scores_and_nll_in_bfloat16() -> None:
    from mosr.evaluation.judge import refusal_scores
    from mosr.evaluation.nll import capability_nll

    lm = tiny_lm("llama")
    lm.model.to(torch.bfloat16)
    scores = refusal_scores(lm, PROMPTS, progress=False)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    nll = capability_nll(lm, PROMPTS[:2], ["Use kill.", "The sea is blue."])
    assert all(v is not None and v > 0 for v, _ in nll)


@pytest.mark.parametrize("name,kind,processes", [("1gpu", "NO", 1), ("ddp4", "MULTI_GPU", 4), ("fsdp4", "FSDP", 4)])
def test_accelerate_configs_load(name: str, kind: str, processes: int) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "experiments" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.value == kind and cfg.num_processes == processes and cfg.mixed_precision == "bf16"


@pytest.mark.parametrize(
    "family,layer_class",
    [("llama", "LlamaDecoderLayer"), ("mistral", "MistralDecoderLayer"), ("qwen2", "Qwen2DecoderLayer")],
)
def test_fsdp_wrap_class_is_found_inside_the_training_module(family: str, layer_class: str) -> None:
    """fsdp4.yaml names the block class (accelerate cannot infer it from mosr's wrapper module)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    from mosr.train import TrainConfig
    from mosr.train.lora import TrainForward, attach_lora

    lm = tiny_lm(family, n_layers=4)
    cfg = TrainConfig(method="rr", model=f"tiny:{family}", target_layers=[1, 2]).resolved(lm)
    forward = TrainForward(attach_lora(lm, cfg), lm, [1, 2])
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=1,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=[layer_class],
        use_orig_params=True,
    )
    plugin.set_auto_wrap_policy(forward)
    assert [c.__name__ for c in plugin.auto_wrap_policy.keywords["transformer_layer_cls"]] == [layer_class]
    text = (REPO / "experiments" / "accelerate" / "fsdp4.yaml").read_text()
    assert layer_class in text


def _usage(name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """``benchmarks/<name>.py --help``, in this process (imported from its file, like tests/test_benchmarks.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"gpu_check_{name}", REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit):
        module.main()
    return capsys.readouterr().out


def test_gpu_check_script_syntax_and_flags(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert subprocess.run(["bash", "-n", str(GPU_CHECK)], capture_output=True).returncode == 0
    text = GPU_CHECK.read_text()
    assert "NOT YET RUN ON A GPU" in text
    calls = re.findall(r'"\$PY" benchmarks/(\w+)\.py((?:\\\n|[^\n])*)', text)  # each call, continuation lines too
    assert {name for name, _ in calls} == {"capture", "train_step", "generation"}
    for name, args in calls:
        usage = _usage(name, monkeypatch, capsys)
        flags = set(re.findall(r"(--[a-z][a-z-]*)", args))
        assert {"--device", "--dtype", "--model"} <= flags
        for flag in flags:
            assert flag in usage, f"{name}.py has no {flag}"


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PY": sys.executable,
        "DEVICE": "cpu",
        "DTYPE": "float32",
        "MODEL": "tiny:llama",
        "N": "8",
        "GEN_N": "4",
        "BATCH": "4",
        "REPEATS": "1",
        "STEPS": "1",
        "WARMUP": "0",
        "SEQ": "64",
        "VARIANTS": "rr",
        "OUT": str(tmp_path),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (tmp_path / "summary.md").read_text()
    assert "capture / bare forward" in summary and "| rr |" in summary and "score vs generation" in summary
