"""A 2-process CPU run through ``accelerate launch`` (gloo DDP) on a tiny model finishes and writes an adapter.

accelerate's own ``--cpu --num_processes 2`` path starts the extra processes through ``mpirun`` (oneCCL /
Intel MPI); without MPI it starts one process. The portable way to get 2 CPU processes is torchrun
through ``--multi_gpu`` with ``cpu: true`` in the config (``Accelerator(cpu=True)`` -> MULTI_CPU, gloo),
which is what this test runs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env, tiny_cfg

pytestmark = pytest.mark.slow  # accelerate launch, two processes
LAUNCHER = "from mosr.cli import main\nraise SystemExit(main())\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_accelerate_launch_two_cpu_processes(data: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    cfg = tiny_cfg(data, "mosr", steps=3, checkpoint_every=2, batch_size=4, cpu=True)
    cfg.save(tmp_path / "tiny.yaml")
    script = tmp_path / "launch_mosr.py"
    script.write_text(LAUNCHER)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(script),
        "train",
        "--config",
        str(tmp_path / "tiny.yaml"),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170, env=subprocess_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "data.json").read_text())["processes"] == 2, proc.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["ranks_in_sync"]  # gradients were all-reduced
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # logged once (main process), not once per rank
    assert (out / "checkpoints" / "step-3" / "adapter.safetensors").is_file()
