"""The toolkit's cache folder, its per-entry lock, and the one file hash used to verify what is in it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from circuits.core.errors import UsageError


def cache_root() -> Path:
    """The toolkit's cache folder (``$P0_CIRCUITS_CACHE`` or ``~/.cache/p0-circuits``)."""
    root = os.environ.get("P0_CIRCUITS_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "p0-circuits"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in 4 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def cache_lock(name: str, *, timeout: float = 3600.0) -> Iterator[None]:
    """Hold the cache's lock for entry ``name`` (a file lock: across processes), so two commands
    fetching or converting the same model into one cache do it once, one after the other.

    A cache folder that cannot be written (read-only, or not creatable) is a ``UsageError``
    naming it and the fix."""
    from filelock import FileLock, Timeout

    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / f".{name}.lock"), timeout=timeout)
        lock.acquire()
    except Timeout:
        raise UsageError(
            f"another process has held the cache lock of {name} for {timeout:.0f} s"
        ) from None
    except OSError as err:
        raise UsageError(
            f"the model cache {root} is not writable ({err.strerror or err}); set "
            "P0_CIRCUITS_CACHE to a writable folder with space"
        ) from None
    try:
        yield
    finally:
        lock.release()
