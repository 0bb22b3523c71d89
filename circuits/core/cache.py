"""The toolkit's cache folder and the one file hash used to verify what is in it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
