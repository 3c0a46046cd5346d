"""Benchmark data sets by name: ``mosr.datasets.load("xstest")``.

Sets are read from a data directory holding the shared JSONL files (``<dir>/<folder>/<file>.jsonl``):
``data_dir=`` argument, else ``$MOSR_DATA_DIR``, else ``../shared/data`` (next to the working directory
or the source checkout) when present. With ``remote=True`` a set missing locally is fetched from its
public home (GitHub / Hugging Face), converted to the same records and cached under
``~/.cache/mosr/data``. The project's own demo set (``demo``) is bundled and always available.

``self-instruct-heldout`` is a fixed 100-record part of the Self-Instruct retain file (first 100 ids in
``sha1(id)`` order, :func:`heldout_ids`), scored by ``mosr eval`` as capability NLL;
``self-instruct-retain`` (what training samples its retain data from) is the rest of the file, so
training never sees a held-out answer.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosr.data import PromptSet, Record, read_jsonl, read_prompts
from mosr.errors import DataDirError, DataError

DEMO_FILE = Path(__file__).parent / "resources" / "demo" / "demo.jsonl"
_GH = "https://raw.githubusercontent.com"
_HF = "https://huggingface.co/datasets"

Converter = Callable[[list[bytes]], list[Record]]


@dataclass(frozen=True)
class DatasetSpec:
    """Where a set lives locally and upstream, and how to convert the upstream files."""

    name: str
    local: str  # path under the data directory
    urls: tuple[str, ...] = ()
    convert: Converter | None = None
    label: str | None = None  # keep only this label after loading
    description: str = ""
    #: keep one part of a fixed split of the file (see :func:`heldout_ids`): ``"heldout"`` = the
    #: held-out records, ``"rest"`` = every other record; None = the whole file
    part: str | None = None


#: records held out of the Self-Instruct retain file for the capability check (``self-instruct-heldout``)
HELDOUT_N = 100
PARTS = ("heldout", "rest")


def heldout_ids(ids: list[str], n: int = HELDOUT_N) -> set[str]:
    """The fixed held-out subset of a file's ids: the first ``n`` in ``sha1(id)`` order.

    Depends only on the set of ids (not on file order, seeds or library versions), so the held-out
    set and its complement are the same on every machine and for the local and downloaded copies.
    """
    return set(sorted(ids, key=lambda i: hashlib.sha1(i.encode("utf-8")).hexdigest())[:n])


def select(spec: DatasetSpec, ps: PromptSet) -> PromptSet:
    """The records of a loaded (or converted) file that make up ``spec``'s set: label filter, then part."""
    if spec.label:
        ps = ps.filter(label=spec.label)
    if spec.part is not None:
        if spec.part not in PARTS:
            raise DataError(f"data set {spec.name!r}: part must be one of {PARTS}, got {spec.part!r}")
        held = heldout_ids(ps.ids)
        keep = spec.part == "heldout"
        ps = PromptSet([r for r in ps if (r.id in held) == keep], name=ps.name)
    return ps


# --- converters from upstream formats (tested against the byte-identical originals) -------------


def _csv_rows(blob: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(blob.decode("utf-8-sig"))))


def _rec(id_: str, prompt: str, label: str, category: str | None, source: str, **extra: Any) -> Record:
    return Record(
        id=id_,
        prompt=prompt.strip(),
        label=label,
        category=category or None,
        source=source,
        extra={k: v for k, v in extra.items() if v is not None},
    )


def convert_xstest(blobs: list[bytes]) -> list[Record]:
    return [
        _rec(
            f"xstest-{r['id']}",
            r["prompt"],
            "pseudo_harmful" if r["label"] == "safe" else "harmful",
            r["type"],
            "xstest_v2",
        )
        for r in _csv_rows(blobs[0])
    ]


def convert_advbench(blobs: list[bytes]) -> list[Record]:
    return [
        _rec(f"advbench-{i}", r["goal"], "harmful", None, "advbench", target=r["target"])
        for i, r in enumerate(_csv_rows(blobs[0]))
    ]


def convert_harmbench(blobs: list[bytes]) -> list[Record]:
    targets = json.loads(blobs[1]) if len(blobs) > 1 else {}
    return [
        _rec(
            f"harmbench-{r['BehaviorID']}",
            r["Behavior"],
            "harmful",
            r["SemanticCategory"],
            "harmbench_text",
            target=targets.get(r["BehaviorID"]),
        )
        for r in _csv_rows(blobs[0])
        if r["FunctionalCategory"] == "standard"
    ]


def _convert_jbb(kind: str) -> Converter:
    def convert(blobs: list[bytes]) -> list[Record]:
        rows = _csv_rows(blobs[0])
        out = []
        for i, r in enumerate(rows):
            r = {k.lower(): v for k, v in r.items() if k}
            out.append(
                _rec(
                    f"jbb-{kind}-{i}",
                    r["goal"],
                    kind,
                    r["category"],
                    "jbb_behaviors",
                    target=r["target"],
                    behavior=r["behavior"],
                    origin=r["source"],
                )
            )
        return out

    return convert


def convert_strongreject(blobs: list[bytes]) -> list[Record]:
    return [
        _rec(f"strongreject-{i}", r["forbidden_prompt"], "harmful", r["category"], "strongreject", origin=r["source"])
        for i, r in enumerate(_csv_rows(blobs[0]))
    ]


def _convert_orbench(label: str, source: str, id_prefix: str) -> Converter:
    def convert(blobs: list[bytes]) -> list[Record]:
        return [
            _rec(f"{id_prefix}-{i}", r["prompt"], label, r.get("category"), source)
            for i, r in enumerate(_csv_rows(blobs[0]))
        ]

    return convert


def convert_koala(blobs: list[bytes]) -> list[Record]:
    rows = [json.loads(line) for line in blobs[0].decode().splitlines() if line.strip()]
    return [_rec(r["id"], r["prompt"], "benign", None, "koala_test") for r in rows]


def _convert_gsm8k(split: str) -> Converter:
    def convert(blobs: list[bytes]) -> list[Record]:
        rows = [json.loads(line) for line in blobs[0].decode().splitlines() if line.strip()]
        return [
            _rec(
                f"gsm8k-{split}-{i}",
                r["question"],
                "benign",
                None,
                f"gsm8k_{split}",
                answer=r["answer"],
                final_answer=r["answer"].split("####")[-1].strip().replace(",", ""),
            )
            for i, r in enumerate(rows)
        ]

    return convert


def _convert_rd(split: str) -> Converter:
    label = "harmful" if split.startswith("harmful") else "benign"

    def convert(blobs: list[bytes]) -> list[Record]:
        return [
            _rec(f"rd-{split}-{i}", r["instruction"], label, r.get("category"), f"refusal_direction_{split}")
            for i, r in enumerate(json.loads(blobs[0]))
        ]

    return convert


def convert_self_instruct(blobs: list[bytes]) -> list[Record]:
    out = []
    for blob, kind in zip(blobs, ("seed", "user_oriented")):
        for line in blob.decode().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            for j, inst in enumerate(r["instances"]):
                prompt = r["instruction"] + (f"\n\n{inst['input']}" if inst.get("input") else "")
                category = r.get("name") or r.get("motivation_app")
                out.append(
                    _rec(
                        f"selfinstruct-{r['id']}-{j}",
                        prompt,
                        "benign",
                        category,
                        f"self_instruct_{kind}",
                        completion=inst["output"],
                    )
                )
    return out


def _spec(
    name: str,
    local: str,
    urls: tuple[str, ...] = (),
    convert: Converter | None = None,
    label: str | None = None,
    description: str = "",
    part: str | None = None,
) -> DatasetSpec:
    return DatasetSpec(name, local, urls, convert, label, description, part)


_RD = f"{_GH}/andyrdt/refusal_direction/main/dataset/splits"
_XS = f"{_GH}/paul-rottger/exaggerated-safety/main/xstest_prompts.csv"
_JBB = f"{_HF}/JailbreakBench/JBB-Behaviors/resolve/main/data"
_ORB = f"{_HF}/bench-llm/or-bench/resolve/main"
_SI = f"{_GH}/yizhongw/self-instruct/main"
_SI_URLS = (f"{_SI}/data/seed_tasks.jsonl", f"{_SI}/human_eval/user_oriented_instructions.jsonl")

DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        _spec("xstest", "xstest/xstest.jsonl", (_XS,), convert_xstest, description="XSTest v2, 250 safe + 200 unsafe"),
        _spec("xstest-safe", "xstest/xstest.jsonl", (_XS,), convert_xstest, "pseudo_harmful", "XSTest safe prompts"),
        _spec("xstest-unsafe", "xstest/xstest.jsonl", (_XS,), convert_xstest, "harmful", "XSTest unsafe contrasts"),
        _spec(
            "advbench",
            "advbench/advbench.jsonl",
            (f"{_GH}/llm-attacks/llm-attacks/main/data/advbench/harmful_behaviors.csv",),
            convert_advbench,
        ),
        _spec(
            "harmbench",
            "harmbench/harmbench_standard.jsonl",
            (
                f"{_GH}/centerforaisafety/HarmBench/main/data/behavior_datasets/harmbench_behaviors_text_all.csv",
                f"{_GH}/centerforaisafety/HarmBench/main/data/optimizer_targets/harmbench_targets_text.json",
            ),
            convert_harmbench,
            description="HarmBench text, standard behaviours",
        ),
        _spec(
            "jbb-harmful",
            "jailbreakbench/jbb_harmful.jsonl",
            (f"{_JBB}/harmful-behaviors.csv",),
            _convert_jbb("harmful"),
        ),
        _spec(
            "jbb-benign", "jailbreakbench/jbb_benign.jsonl", (f"{_JBB}/benign-behaviors.csv",), _convert_jbb("benign")
        ),
        _spec(
            "strongreject",
            "strongreject/strongreject.jsonl",
            (f"{_GH}/alexandrasouly/strongreject/main/strongreject_dataset/strongreject_dataset.csv",),
            convert_strongreject,
        ),
        _spec(
            "orbench-hard",
            "or_bench/or_bench_hard_1k.jsonl",
            (f"{_ORB}/or-bench-hard-1k.csv",),
            _convert_orbench("pseudo_harmful", "or_bench_hard_1k", "orbench-hard"),
            description="OR-Bench-Hard-1K",
        ),
        _spec(
            "orbench-80k-bank",
            "or_bench_80k_bank/or_bench_80k_bank.jsonl",
            (f"{_ORB}/or-bench-80k.csv",),
            _convert_orbench("pseudo_harmful", "or_bench_80k", "orbench80k"),
            description="pseudo-malicious bank (local: 529-prompt X-Boundary sample; remote: the full 80K)",
        ),
        _spec(
            "self-instruct-retain",
            "retain_self_instruct/self_instruct_retain.jsonl",
            _SI_URLS,
            convert_self_instruct,
            description="retain set with human-written answers (the held-out 100 excluded)",
            part="rest",
        ),
        _spec(
            "self-instruct-heldout",
            "retain_self_instruct/self_instruct_retain.jsonl",
            _SI_URLS,
            convert_self_instruct,
            description=f"{HELDOUT_N} held-out Self-Instruct tasks with reference answers "
            "(capability NLL; never in training retain data)",
            part="heldout",
        ),
        _spec(
            "gsm8k",
            "gsm8k/gsm8k_test.jsonl",
            (f"{_GH}/openai/grade-school-math/master/grade_school_math/data/test.jsonl",),
            _convert_gsm8k("test"),
        ),
        _spec(
            "gsm8k-train",
            "gsm8k/gsm8k_train_sample5k.jsonl",
            (f"{_GH}/openai/grade-school-math/master/grade_school_math/data/train.jsonl",),
            _convert_gsm8k("train"),
        ),
        _spec(
            "koala",
            "koala/koala.jsonl",
            (f"{_GH}/arnav-gudibande/koala-test-set/main/koala_test_set.jsonl",),
            convert_koala,
        ),
        *[
            _spec(
                f"rd-{split.replace('_', '-')}",
                f"refusal_direction/{split}.jsonl",
                (f"{_RD}/{split}.json",),
                _convert_rd(split),
                description=f"refusal_direction {split} split",
            )
            for split in (
                "harmful_train",
                "harmful_val",
                "harmful_test",
                "harmless_train",
                "harmless_val",
                "harmless_test",
            )
        ],
    ]
}
#: the project's own bundled set (always available)
DEMO_SETS = {"demo": None, "demo-harmful": "harmful", "demo-benign": "benign", "demo-pseudo": "pseudo_harmful"}
#: evaluation sets of docs/method.md §8 that training data must not share prompts with (:mod:`mosr.train.data`)
EVAL_SETS: tuple[str, ...] = (
    "xstest",
    "orbench-hard",
    "advbench",
    "harmbench",
    "jbb-harmful",
    "jbb-benign",
    "strongreject",
    "koala",
    "gsm8k",
)


def names() -> list[str]:
    """Every loadable set name."""
    return sorted([*DATASETS, *DEMO_SETS])


def _default_candidates() -> list[Path]:
    here = Path(__file__).resolve().parent.parent
    return [Path.cwd() / "shared" / "data", Path.cwd().parent / "shared" / "data", here.parent / "shared" / "data"]


def data_dir(path: str | os.PathLike[str] | None = None, required: bool = True) -> Path | None:
    """The benchmark data directory: ``path``, else ``$MOSR_DATA_DIR``, else ``../shared/data``."""
    if path is not None or os.environ.get("MOSR_DATA_DIR"):
        where = "data_dir" if path is not None else "MOSR_DATA_DIR"
        p = Path(path if path is not None else os.environ["MOSR_DATA_DIR"]).expanduser()
        if not p.is_dir():
            raise DataDirError(
                f"{where}={str(p)!r} is not a directory. Point it at the folder holding the "
                "benchmark JSONL folders (xstest/, advbench/, ...), e.g. export MOSR_DATA_DIR=../shared/data"
            )
        return p
    for cand in _default_candidates():
        if cand.is_dir():
            return cand
    if required:
        raise DataDirError(
            "no benchmark data directory found: set MOSR_DATA_DIR=/path/to/shared/data (or pass "
            "data_dir=...), or pass remote=True to download the sets from their public homes. "
            f"Searched: {[str(c) for c in _default_candidates()]}. The bundled 'demo' set needs no "
            "data directory."
        )
    return None


def resolved_data_dir(path: str | os.PathLike[str] | None = None) -> str | None:
    """The data directory :func:`data_dir` finds, as a string for a saved config; ``path`` as given when it
    is not a directory, None when there is none."""
    try:
        found = data_dir(path, required=False)
    except DataDirError:
        return None if path is None else os.fspath(path)
    return None if found is None else str(found)


#: file endings loaded as a user's own prompt file: JSONL records (``{"prompt": ...}`` is enough) or text
PROMPT_FILES = (".jsonl", ".txt")


def check_name(name: str) -> None:
    """Raise :class:`DataError` unless ``name`` is a known set name or a ``.jsonl`` / ``.txt`` path (reads
    nothing)."""
    if not (name.endswith(PROMPT_FILES) or name in DEMO_SETS or name in DATASETS):
        raise DataError(
            f"unknown data set {name!r}; known sets: {', '.join(names())}; or a prompt file: "
            ".jsonl (records, or lines holding just a prompt) or .txt (one prompt per line)"
        )


def load(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    remote: bool = False,
    n: int | None = None,
    seed: int = 0,
    label: str | None = None,
) -> PromptSet:
    """Load a set by name (see :func:`names`) or a prompt file, optionally a seeded sample of ``n``.

    A ``.jsonl`` file holds records (:func:`mosr.data.read_jsonl`; lines without an id or label get one
    from the line number and ``label``), a ``.txt`` file one prompt per line
    (:func:`mosr.data.read_prompts`); ``label`` (default ``unknown``) applies to those files only.
    """
    if name.endswith(".jsonl"):
        return read_jsonl(Path(name), label=label).sample(n, seed)
    if name.endswith(".txt"):
        return read_prompts(Path(name), label=label).sample(n, seed)
    if name in DEMO_SETS:
        ps = read_jsonl(DEMO_FILE, name="demo")
        label = DEMO_SETS[name]
        ps = (ps.filter(label=label) if label else ps).with_name(name)
        return ps.sample(n, seed)
    check_name(name)
    spec = DATASETS[name]
    local = _load_local(spec, data_dir, required=not remote)
    ps = local if local is not None else _load_remote(spec)
    ps = select(spec, ps)
    if not len(ps):
        raise DataError(f"data set {name!r} is empty")
    return ps.with_name(name).sample(n, seed)


def _load_local(spec: DatasetSpec, path: str | os.PathLike[str] | None, required: bool) -> PromptSet | None:
    root = data_dir(path, required=required)
    if root is None:
        return None
    file = root / spec.local
    if not file.is_file():
        if required:
            raise DataDirError(f"data set {spec.name!r}: {file} not found in the data directory {root}")
        return None
    return read_jsonl(file, name=spec.name)


def _load_remote(spec: DatasetSpec) -> PromptSet:
    from mosr.models import cache_dir

    cached = cache_dir() / "data" / spec.local  # same file for sets that differ only in the label filter
    if cached.is_file():
        return read_jsonl(cached, name=spec.name)
    if not spec.urls or spec.convert is None:
        raise DataError(f"data set {spec.name!r} has no public download; set MOSR_DATA_DIR")
    blobs = [fetch(u) for u in spec.urls]
    ps = PromptSet(spec.convert(blobs), name=spec.name)
    ps.to_jsonl(cached)
    return ps


def fetch(url: str, timeout: float = 60.0) -> bytes:
    """Download one file; a network failure becomes a :class:`DataError` that says what to do."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed https URLs
            return resp.read()
    except OSError as e:
        raise DataError(
            f"could not download {url}: {e}. Without a network, set MOSR_DATA_DIR to a local copy of the data."
        ) from None
