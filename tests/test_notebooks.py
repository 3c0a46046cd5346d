"""The committed notebooks: every code cell was run and none holds an error output; they match their
builder (``notebooks/build.py``); and (slow, needs the shared data and nbclient) 01 and 02 execute."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _builder():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOK_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def test_notebooks_are_committed() -> None:
    names = {p.name for p in NOTEBOOKS}
    for filename, _ in _builder().NOTEBOOKS.values():
        assert filename in names, f"notebooks/{filename} is missing: run `python notebooks/build.py`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_was_run_without_errors(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    for i, cell in enumerate(code):
        first_line = _source(cell).strip().splitlines()[0] if _source(cell).strip() else "<empty>"
        assert cell.get("execution_count") is not None, f"{path.name}: code cell {i} ({first_line!r}) was never run"
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", (
                f"{path.name}: code cell {i} ({first_line!r}) has an error output: "
                f"{out.get('ename')}: {out.get('evalue')}"
            )
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                assert "Traceback (most recent call last)" not in _source({"source": out.get("text", "")}), (
                    f"{path.name}: code cell {i} ({first_line!r}) printed a traceback"
                )
    counts = [c["execution_count"] for c in code]
    assert counts == sorted(counts), f"{path.name}: cells were not run top to bottom ({counts})"


@pytest.mark.parametrize("key", ["01", "02", "03", "04", "05"])
def test_notebook_matches_its_builder(key: str) -> None:
    """A committed notebook is the builder's cells, executed: edit build.py and rebuild, not the .ipynb."""
    build = _builder()
    filename, cells = build.NOTEBOOKS[key]
    nb = json.loads((NOTEBOOK_DIR / filename).read_text(encoding="utf-8"))
    committed = [("md" if c["cell_type"] == "markdown" else c["cell_type"], _source(c)) for c in nb["cells"]]
    assert committed == list(cells), f"notebooks/{filename} is out of date: run `python notebooks/build.py {key}`"


@pytest.mark.slow
@pytest.mark.parametrize("key", ["01", "02"])
def test_notebook_executes(key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-execute the committed notebook from scratch (nbclient, 600 s per cell); figures go to tmp_path."""
    if not DATA_DIR.is_dir():
        pytest.skip("shared benchmark data not present")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    build = _builder()
    filename, _ = build.NOTEBOOKS[key]
    nb = nbformat.read(NOTEBOOK_DIR / filename, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    monkeypatch.setenv("MOSR_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("MOSR_DATA_DIR", str(DATA_DIR))
    build.execute(nb, timeout=600)  # raises CellExecutionError on the first failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert any(p.suffix == ".png" for p in (tmp_path / filename.removesuffix(".ipynb")).iterdir())
