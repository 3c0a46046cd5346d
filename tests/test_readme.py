"""The README's ten-line example runs as written (bundled model, bundled demo prompts, offline)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env

README = Path(__file__).resolve().parents[1] / "README.md"


def example() -> str:
    section = README.read_text().split("## In ten lines of Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_is_ten_lines_and_imports_only_mosr() -> None:
    code = [line for line in example().splitlines() if line.strip()]
    assert len(code) <= 12, code
    assert [line for line in code if line.startswith(("import", "from"))] == ["import mosr"]


@pytest.mark.slow
def test_the_example_runs_as_written() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", example()],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=README.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    assert [int(x[0]) for x in lines] == [0, 10, 15, 20, 29] and all(len(x) == 2 for x in lines)
