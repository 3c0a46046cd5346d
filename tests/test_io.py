"""Run-artefact files: atomic writes with normal permissions, the atomic folder swap, JSONL reading."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mosr.errors import DataError
from mosr.io import atomic_dir, atomic_path, read_rows, save_tensors, write_json, write_jsonl, write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_normal_permissions(tmp_path, umask_022):
    """tempfile.mkstemp makes 0600 files; result files must be 0666 less the umask, like any new file."""
    import torch

    paths = [
        write_text(tmp_path / "a.md", "x"),
        write_json(tmp_path / "b.json", {"k": 1}),
        write_jsonl(tmp_path / "c.jsonl", [{"k": 1}]),
        save_tensors(tmp_path / "d.safetensors", {"t": torch.ones(2)}),
    ]
    for p in paths:
        assert _mode(p) == 0o644, p.name
    os.umask(0o077)
    assert _mode(write_text(tmp_path / "private.md", "x")) == 0o600  # the umask still rules
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_atomic_path_keeps_the_old_file_on_error(tmp_path):
    target = write_text(tmp_path / "t.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_atomic_dir(tmp_path, umask_022):
    target = tmp_path / "models" / "m"
    with atomic_dir(target) as tmp:
        assert tmp.is_dir() and tmp.parent == target.parent and not target.exists()
        (tmp / "config.json").write_text("{}")
    assert (target / "config.json").is_file() and _mode(target) == 0o755
    # another writer finished first: its copy is kept, ours dropped
    with atomic_dir(target) as tmp:
        (tmp / "other.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    # an error leaves nothing behind
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "models" / "n") as tmp:
            (tmp / "x").write_text("")
            raise RuntimeError
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m"]


def test_read_rows(tmp_path):
    path = tmp_path / "log.jsonl"
    assert read_rows(path, missing_ok=True) == []
    with pytest.raises(DataError, match="not found"):
        read_rows(path)
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"')  # a torn last append
    with pytest.raises(DataError, match=r"log\.jsonl:4: malformed JSON"):
        read_rows(path)
    assert read_rows(path, repair=True) == [{"a": 1}, {"a": 2}]
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'  # repaired: appends start on a clean line
    path.write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(DataError, match=r"log\.jsonl:2: malformed JSON"):
        read_rows(path, repair=True)  # only the last line may be torn


def test_append_after_a_torn_last_line_drops_it(tmp_path: Path) -> None:
    """An interrupted write leaves a partial last line; the next append must not run into it."""
    from mosr.io import append_jsonl, read_rows

    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2', encoding="utf-8")  # the second row was cut short
    append_jsonl(path, [{"a": 3}])
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"a": 3}\n'
    assert [r["a"] for r in read_rows(path)] == [1, 3]
    path.write_text('{"a": 4', encoding="utf-8")  # nothing but a torn line
    append_jsonl(path, [{"a": 5}])
    assert path.read_text(encoding="utf-8") == '{"a": 5}\n'


def test_folder_lock(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mosr.errors import FolderInUseError
    from mosr.io import folder_lock, try_lock

    run = tmp_path / "run"
    with folder_lock(run, "mosr eval"):
        assert (run / ".lock").is_file()
        with pytest.raises(
            FolderInUseError, match=r"run is in use by another process: .* give mosr eval another folder"
        ):
            with folder_lock(run, "mosr eval"):
                pass
    assert not run.exists()  # a folder it made and left empty is removed again
    run.mkdir()
    (run / "responses.jsonl").write_text("")
    with folder_lock(run):
        pass
    assert sorted(p.name for p in run.iterdir()) == [".lock", "responses.jsonl"]
    # a process that dies holding the lock does not block the next run
    code = f"from mosr.io import folder_lock\nimport os\nwith folder_lock({str(run)!r}):\n    os._exit(1)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 1
    with folder_lock(run):
        pass
    held = try_lock(run / ".lock")
    assert held is not None and try_lock(run / ".lock") is None  # a second holder, even in this process
    held.close()
    again = try_lock(run / ".lock")
    assert again is not None
    again.close()
