"""The stored outputs of the committed notebooks hold no machine paths and no warning noise (issue 23,
bug 8): ``notebooks/build.py`` cleans every output before it writes a notebook (:func:`clean_outputs`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FORBIDDEN = ("/.venv", "/root", "/home/", "Warning", str(ROOT))


def _build():
    spec = importlib.util.spec_from_file_location("notebooks_build", ROOT / "notebooks" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _texts(output: dict) -> list[str]:
    """The text an output shows (stream text, text/* data; images are base64 and skipped)."""
    if "text" in output:
        return ["".join(output["text"]) if isinstance(output["text"], list) else output["text"]]
    data = output.get("data", {})
    return ["".join(v) if isinstance(v, list) else str(v) for k, v in data.items() if k.startswith("text/")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_stored_outputs_hold_no_machine_paths_or_warnings(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        for output in cell.get("outputs", []):
            for text in _texts(output):
                found = [w for w in FORBIDDEN if w in text]
                assert not found, f"{path.name}: code cell {i} output holds {found}: {text[:300]!r}"


def _stream(name: str, text: str) -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def test_clean_outputs_strips_warnings_and_machine_paths() -> None:
    build = _build()
    venv = f"{ROOT}/.venv/lib/python3.11/site-packages"
    home = str(Path.home())
    warning = f"{venv}/transformers/modeling_utils.py:3312: FutureWarning: `x` is deprecated.\n  warnings.warn(\n"
    tqdm = f"{venv}/tqdm/auto.py:21: TqdmWarning: IProgress not found.\n  from .autonotebook import tqdm\n"
    paths = (
        f"data directory: {ROOT.parent}/shared/data\nadapter: {ROOT}/runs/x/adapter\n"
        f"cache: {home}/.cache/mosr and /root/.cache, /home/someone/x\n"
    )
    outputs = [
        _stream("stderr", warning),
        _stream("stderr", tqdm + "\rtrain rr:   0%|          | 0/6"),
        _stream("stderr", "\rtrain rr:  50%|#####     | 3/6"),
        _stream("stderr", "\rtrain rr: 100%|##########| 6/6\n"),
        _stream("stderr", "[transformers] `past_key_values` is deprecated. Use `cache` instead.\n"),
        _stream("stdout", paths),
        {"output_type": "execute_result", "data": {"text/plain": f"LM({venv}/m)", "image/png": "iVBOR/root"}},
        _stream("stderr", warning),  # a cell that only warned: nothing left
    ]
    nb = {"cells": [{"cell_type": "code", "outputs": outputs}]}
    build.clean_outputs(nb)
    outputs = nb["cells"][0]["outputs"]
    assert [o.get("name") for o in outputs] == ["stderr", "stdout", None]  # redraws joined, empty ones gone
    assert outputs[0]["text"] == "train rr: 100%|##########| 6/6\n"  # the bar as its last redraw left it
    assert outputs[1]["text"] == (
        "data directory: ../shared/data\nadapter: runs/x/adapter\ncache: ~/.cache/mosr and ~/.cache, ~/x\n"
    )
    assert outputs[2]["data"] == {"text/plain": "LM(<site-packages>/m)", "image/png": "iVBOR/root"}
