"""Prompt records and the JSONL format.

One JSONL record per line::

    {"id": str, "prompt": str, "label": "harmful"|"benign"|"pseudo_harmful",
     "category": str|null, "source": str, "completion"?: str, "refusal"?: str, ...}

Unknown fields are kept in :attr:`Record.extra` and written back unchanged. A researcher's own prompt
file may hold less: in a prompt-only line (``{"prompt": ...}``) the id defaults to ``<file stem>-<line
number>`` and the label to the ``label=`` argument or ``unknown`` (:data:`UNKNOWN_LABEL`: evaluated
with an "answered" rate only); a ``.txt`` file holds one prompt per line (:func:`read_prompts`).
Chat formatting lives in :mod:`mosr.chat`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, overload

from mosr.errors import DataError
from mosr.io import decode_line, iter_rows, write_jsonl

LABELS: tuple[str, ...] = ("harmful", "benign", "pseudo_harmful")
#: label of prompts whose file did not say what they are (a user's own prompt list)
UNKNOWN_LABEL = "unknown"
#: every label a record may carry
ALL_LABELS: tuple[str, ...] = LABELS + (UNKNOWN_LABEL,)
REQUIRED_KEYS: tuple[str, ...] = ("id", "prompt", "label", "category", "source")


@dataclass(frozen=True)
class Record:
    """One prompt with its label and optional reference responses."""

    id: str
    prompt: str
    label: str
    category: str | None = None
    source: str = ""
    completion: str | None = None
    refusal: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "label": self.label,
            "category": self.category,
            "source": self.source,
        }
        if self.completion is not None:
            d["completion"] = self.completion
        if self.refusal is not None:
            d["refusal"] = self.refusal
        d.update(self.extra)
        return d


class PromptSet(Sequence[Record]):
    """An ordered, named collection of :class:`Record` with column accessors."""

    def __init__(self, records: Iterable[Record], name: str = "prompts") -> None:
        self.records: list[Record] = list(records)
        self.name = name

    @classmethod
    def from_prompts(
        cls, prompts: Iterable[str], label: str = "benign", name: str = "prompts", id_prefix: str | None = None
    ) -> PromptSet:
        """Wrap plain strings (ids ``<name>-0``, ``<name>-1``, ...)."""
        check_label(label)
        prefix = id_prefix or name
        return cls([Record(f"{prefix}-{i}", p, label) for i, p in enumerate(prompts)], name=name)

    @overload
    def __getitem__(self, i: int) -> Record: ...
    @overload
    def __getitem__(self, i: slice) -> PromptSet: ...
    def __getitem__(self, i: int | slice) -> Record | PromptSet:
        if isinstance(i, slice):
            return PromptSet(self.records[i], name=self.name)
        return self.records[i]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __add__(self, other: PromptSet) -> PromptSet:
        return PromptSet(self.records + other.records, name=f"{self.name}+{other.name}")

    def __repr__(self) -> str:
        counts = {lab: n for lab in ALL_LABELS if (n := sum(r.label == lab for r in self.records))}
        return f"PromptSet(name={self.name!r}, n={len(self)}, labels={counts})"

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.records]

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.records]

    @property
    def categories(self) -> list[str | None]:
        return [r.category for r in self.records]

    def filter(self, label: str | None = None, category: str | None = None) -> PromptSet:
        """Records with the given label and/or category."""
        if label is not None:
            check_label(label)
        recs = [
            r
            for r in self.records
            if (label is None or r.label == label) and (category is None or r.category == category)
        ]
        return PromptSet(recs, name=f"{self.name}[{label or category}]")

    def sample(self, n: int | None, seed: int = 0) -> PromptSet:
        """``n`` records drawn without replacement (file order kept); all when ``n`` is None or ≥ len."""
        if n is None or n >= len(self):
            return self
        keep = sorted(random.Random(seed).sample(range(len(self)), n))
        return PromptSet([self.records[i] for i in keep], name=self.name)

    def with_name(self, name: str) -> PromptSet:
        return PromptSet(self.records, name=name)

    @staticmethod
    def sample_together(sets: Sequence[PromptSet], n: int | None, seed: int = 0) -> list[PromptSet]:
        """``n`` records drawn without replacement from ``sets`` taken as one set (seeded, as :meth:`sample`
        draws from one), split back into one set per input (file order and names kept); all when ``n`` is
        None or ≥ their total. A composite set shares its ``n`` among its parts this way."""
        total = sum(len(ps) for ps in sets)
        if n is None or n >= total:
            return list(sets)
        keep = set(random.Random(seed).sample(range(total), n))
        out, start = [], 0
        for ps in sets:
            out.append(PromptSet([r for i, r in enumerate(ps.records, start) if i in keep], name=ps.name))
            start += len(ps)
        return out

    def relabel(self, label: str) -> PromptSet:
        return PromptSet([replace(r, label=label) for r in self.records], name=self.name)

    def to_jsonl(self, path: str | os.PathLike[str]) -> Path:
        """Atomically write the records as JSONL."""
        return write_jsonl(path, (r.to_dict() for r in self.records))


def check_label(label: str, where: str = "label") -> str:
    """``label`` if it is one of :data:`ALL_LABELS`, else a :class:`DataError` naming ``where``."""
    if label not in ALL_LABELS:
        raise DataError(f"{where} must be one of {ALL_LABELS}, got {label!r}")
    return label


def record_from_dict(
    d: dict[str, Any], where: str = "record", default_id: str | None = None, default_label: str | None = None
) -> Record:
    """Validate one JSON object and turn it into a :class:`Record`.

    ``default_id`` / ``default_label`` stand in for a missing ``id`` / ``label`` (prompt-only files);
    without them the key is required.
    """
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(d).__name__}")
    defaults = {"id": default_id, "label": default_label}
    missing = [k for k in ("id", "prompt", "label") if k not in d and defaults.get(k) is None]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}")
    if not isinstance(d["prompt"], str) or not d["prompt"].strip():
        raise DataError(f"{where}: empty or non-string prompt")
    label = d.get("label", default_label)
    if label not in ALL_LABELS:
        raise DataError(f"{where}: label {label!r} is not one of {ALL_LABELS}")
    known = {"id", "prompt", "label", "category", "source", "completion", "refusal"}
    return Record(
        id=str(d.get("id", default_id)),
        prompt=d["prompt"].strip(),
        label=label,
        category=d.get("category"),
        source=str(d.get("source") or ""),
        completion=d.get("completion"),
        refusal=d.get("refusal"),
        extra={k: v for k, v in d.items() if k not in known},
    )


def read_jsonl(path: str | os.PathLike[str], name: str | None = None, label: str | None = None) -> PromptSet:
    """Read a JSONL prompt file; errors name the file and the 1-based line number.

    Lines without an ``id`` get ``<file stem>-<line number>``; lines without a ``label`` get ``label``
    (default :data:`UNKNOWN_LABEL`), so a file of ``{"prompt": ...}`` lines loads as it is.
    """
    path = Path(path)
    default_label = check_label(label, "label=") if label is not None else UNKNOWN_LABEL
    records: list[Record] = []
    seen: set[str] = set()
    for lineno, obj in iter_rows(path):
        where = f"{path}:{lineno}"
        rec = record_from_dict(obj, where, default_id=f"{path.stem}-{lineno}", default_label=default_label)
        if rec.id in seen:
            raise DataError(f"{where}: duplicate id {rec.id!r}")
        seen.add(rec.id)
        records.append(rec)
    if not records:
        raise DataError(f"{path} holds no records")
    return PromptSet(records, name=name or path.stem)


def read_prompts(path: str | os.PathLike[str], name: str | None = None, label: str | None = None) -> PromptSet:
    """A text file with one prompt per line (blank lines skipped): ids ``<file stem>-<line number>``,
    label ``label`` (default :data:`UNKNOWN_LABEL`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    label = check_label(label, "label=") if label is not None else UNKNOWN_LABEL
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:  # name the line: decode it alone for the message
        lineno = raw.count(b"\n", 0, e.start) + 1
        decode_line(raw.split(b"\n")[lineno - 1], path, lineno)
        raise  # pragma: no cover - the line alone decodes only if the bad bytes span a newline
    records = [
        Record(f"{path.stem}-{lineno}", line.strip(), label, source=path.name)
        for lineno, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not records:
        raise DataError(f"{path} holds no prompts")
    return PromptSet(records, name=name or path.stem)


def as_prompt_list(prompts: str | Sequence[str] | PromptSet) -> list[str]:
    """Normalise the prompt arguments of the public API; raises on an empty set."""
    if isinstance(prompts, str):
        prompts = [prompts]
    items = prompts.prompts if isinstance(prompts, PromptSet) else list(prompts)
    if not items:
        raise DataError("the prompt set is empty")
    for i, p in enumerate(items):
        if not isinstance(p, str) or not p.strip():
            raise DataError(f"prompt {i} is empty or not a string: {p!r}")
    return items


def normalise_prompt(text: str) -> str:
    """Case- and whitespace-folded prompt text, for overlap checks between sets."""
    return " ".join(text.lower().split())


def overlap(a: PromptSet, b: PromptSet) -> list[str]:
    """Prompts of ``a`` that also occur in ``b`` (normalised text)."""
    keys = {normalise_prompt(p) for p in b.prompts}
    return [p for p in a.prompts if normalise_prompt(p) in keys]
