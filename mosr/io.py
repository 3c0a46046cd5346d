"""Run-artefact files: atomic writes (a crash never leaves a half-written file or folder behind) and
JSONL reading.

Files and folders get the permissions of a plain ``open`` / ``mkdir`` (0666 / 0777 less the umask),
not the owner-only modes of :mod:`tempfile`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

from mosr.errors import DataError, FolderInUseError


def _sibling(path: Path) -> Path:
    """A fresh hidden name next to ``path`` for its temporary copy."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds.

    The result has the mode of any new file (0666 less the umask), even when the block's writer
    recreated the temporary file with a mode of its own (safetensors writes 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = stat.S_IMODE(tmp.stat().st_mode)  # 0666 less the umask
    try:
        yield tmp
        if stat.S_IMODE(tmp.stat().st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; when the block succeeds it is renamed to ``path``.

    A missing or empty ``path`` is replaced. If ``path`` meanwhile holds files (another process
    finished the same work first) that copy is kept and this one dropped. On an error the temporary
    folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path.is_dir() and any(path.iterdir())):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def try_lock(path: str | os.PathLike[str]) -> IO[str] | None:
    """An exclusive OS lock on the file ``path`` (created if missing; ``fcntl.flock``): the open handle,
    which holds the lock until it is closed or the process ends, however it ends; None when another
    process holds it. Without ``fcntl`` (Windows) the handle comes back unlocked."""
    fh = open(path, "a")  # noqa: SIM115 (the caller owns the handle)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


@contextmanager
def folder_lock(folder: str | os.PathLike[str], what: str = "the run") -> Iterator[None]:
    """Hold :func:`try_lock` on ``folder/.lock`` while a run writes into ``folder``, so that a second process
    started on the same folder fails with a one-line :class:`~mosr.errors.FolderInUseError` instead of
    interleaving its rows with the first one's. An interrupted run never blocks the next one: the OS
    releases the lock with the process. A folder this call created and that holds nothing but the lock
    file afterwards is removed again (a failed start leaves nothing behind).
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    held = try_lock(lock)
    if held is None:
        raise FolderInUseError(
            f"{folder} is in use by another process: wait for it to end, or give {what} another folder"
        )
    try:
        yield
    finally:
        if created and [p.name for p in folder.iterdir()] == [lock.name]:
            lock.unlink()
            folder.rmdir()
        held.close()


def iter_rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, JSON value)`` of each non-empty line of a JSONL file (1-based line numbers).

    A missing file, a line that is not UTF-8 or a malformed line is a :class:`~mosr.errors.DataError`
    naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = decode_line(raw, path, lineno)
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None


def decode_line(raw: bytes, path: Path, lineno: int) -> str:
    """One line of a text file as UTF-8, else a :class:`~mosr.errors.DataError` naming the file, line and byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            "save the file as UTF-8"
        ) from None


def read_rows(path: str | os.PathLike[str], missing_ok: bool = False, repair: bool = False) -> list[Any]:
    """The JSON values of a JSONL file, one per non-empty line.

    Args:
        missing_ok: a missing file reads as no rows (a log that has not been started).
        repair: a malformed *last* line (an append cut off by an interruption) is dropped and the file
            rewritten without it, so appends start on a clean line; a malformed line elsewhere still
            raises.
    """
    path = Path(path)
    if missing_ok and not path.is_file():
        return []
    rows: list[Any] = []
    try:
        for _, obj in iter_rows(path):
            rows.append(obj)
    except DataError:
        if not (repair and path.is_file()):
            raise
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if len(rows) != len(lines) - 1:
            raise
        write_jsonl(path, rows)
    return rows


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Atomically write one JSON object per line."""
    text = "".join(json.dumps(dict(r), ensure_ascii=False, default=_json_default) + "\n" for r in rows)
    return write_text(path, text)


def append_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows and fsync, so finished work survives an interruption (resumable logs). A last line
    cut short by an earlier interruption (readers skip it, with a warning) is dropped first, so the new
    rows do not run into it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size:
        with path.open("r+b") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)
    with path.open("a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(dict(r), ensure_ascii=False, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def save_tensors(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Atomically save tensors as safetensors (contiguous copies, no pickle)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(tmp),
            metadata=dict(metadata) if metadata else None,
        )
    return Path(path)


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


PROVENANCE = "provenance.json"


def write_provenance(
    out: str | os.PathLike[str], argv: Iterable[str], source: str | os.PathLike[str] | None = None
) -> Path:
    """Record what produced the run folder ``out`` in ``out/provenance.json``: the exact command line
    (``mosr`` + ``argv``), the time, the code (``git``: commit and whether the tree had uncommitted changes,
    when the package runs from a checkout, else None; ``mosr``: the package version) and the Python,
    torch and transformers versions. ``source`` is the package folder (default: this one's). An earlier
    record of the folder (a resumed run) moves to the ``earlier`` list, oldest first."""
    import datetime
    import platform
    import shlex
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    argv = list(argv)
    record: dict[str, Any] = {
        "command": shlex.join(["mosr", *argv]),
        "argv": argv,
        "cwd": os.getcwd(),
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git": _STARTED.get("git")
        if "git" in _STARTED and source is None
        else _git_state(Path(source) if source is not None else Path(__file__).resolve().parent),
        "started": _STARTED.get("time"),
        "mosr": version("mosr"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
    }
    path = Path(out) / PROVENANCE
    if path.is_file():
        try:
            old = read_json(path)
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            record["earlier"] = [*old.pop("earlier", []), old]
    return write_json(path, record)


#: the code state when the command started (:func:`note_start`): a long run's record names the code it ran,
#: not whatever the checkout holds when it finishes
_STARTED: dict[str, Any] = {}


def note_start() -> None:
    """Remember the git state and the time now, for every later :func:`write_provenance` of this process."""
    import datetime

    _STARTED["git"] = _git_state(Path(__file__).resolve().parent)
    _STARTED["time"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _git_state(package: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout whose top folder holds ``package``, else None (an
    installed package, or git missing)."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != package.resolve().parent:  # not a checkout of this package
        return None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return None if commit is None else {"commit": commit, "dirty": bool(status)}


def script_provenance() -> dict[str, Any]:
    """What an analysis script (``experiments/*.py``) records beside its results: the code's git state
    (``{"commit", "dirty"}`` or None outside a checkout) and the exact command line."""
    import shlex
    import sys

    return {"git": _git_state(Path(__file__).resolve().parent), "command": shlex.join(["python", *sys.argv])}
