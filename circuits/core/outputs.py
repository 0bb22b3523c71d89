"""Output folders, all or nothing.

A command that makes a result folder (``measure``, ``discover``) writes everything into a hidden
temporary sibling, ``.NAME.partial-PID``, and renames it onto ``NAME`` only once every file is
written. A failure, Ctrl-C or a kill therefore never leaves a half-written ``NAME``; a kill leaves
the temporary sibling, which the next run next to it removes (its process is gone).

An existing ``NAME`` is refused unless ``overwrite``; then it is replaced whole, never mixed with
the new files. Nothing replaces what the toolkit did not write: ``overwrite`` replaces only a
folder that holds a p0-circuits ``manifest.json`` (every result folder does); any other non-empty
folder is refused, as are the current directory, a folder that holds it, the filesystem root and
the home directory. Everything is checked (``check_out``) before any model is loaded, and a
refused ``--out`` creates nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from circuits.core.errors import ChecksumError, UsageError
from circuits.core.manifest import MANIFEST, read_manifest

PARTIAL = ".partial-"
_OLD = ".replaced-"


def _existing_ancestor(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path("/")


def _refuse_file_or_unwritable(path: Path, base: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file; choose a directory path")
    base = _existing_ancestor(base)
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot write to output directory {path} ({base} is not a writable directory); "
            "choose a writable --out"
        )


def check_folder(out: str | os.PathLike) -> Path:
    """``out`` as a path to a folder that is written into (kept, not replaced), refused
    (one-line ``UsageError``, nothing created) when it is a file or cannot be written."""
    path = Path(out)
    _refuse_file_or_unwritable(path, path if path.is_dir() else path.parent)
    return path


def check_out(out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """``out`` as a path, refused (one-line ``UsageError``, nothing created) when it is a folder
    a command must never replace (``check_replaceable``), a file, or cannot be written, or when
    it exists and is not empty and ``overwrite`` is off or it holds no p0-circuits manifest."""
    path = Path(out)
    check_replaceable(path)
    _refuse_file_or_unwritable(path, path.parent)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise UsageError(
                f"--out {path} already exists and is not empty; pass --overwrite to replace it "
                "whole, or choose a new --out"
            )
        if not written_here(path):
            raise UsageError(
                f"--out {path} holds files p0-circuits did not write (it has no {MANIFEST}); "
                "--overwrite replaces only a result folder: choose another --out, or remove "
                f"{path} yourself"
            )
    return path


def written_here(path: Path) -> bool:
    """Whether folder ``path`` was written by p0-circuits: it holds a readable manifest."""
    try:
        return read_manifest(path) is not None
    except ChecksumError:
        return False


def check_replaceable(path: Path) -> None:
    """Refuse an ``--out`` that is the current directory or holds it (it cannot be renamed
    onto), the filesystem root or the home directory, whatever ``--overwrite`` says."""
    full = path.resolve()
    cwd = Path.cwd().resolve()
    what = None
    if full == Path(full.anchor):
        what = "the filesystem root"
    elif full == Path.home().resolve():
        what = "your home directory"
    elif full == cwd:
        what = "the current directory"
    elif full in cwd.parents:
        what = "a folder that holds the current directory"
    if what is not None:
        raise UsageError(
            f"--out {path} is {what}, which a command never replaces; choose a new folder "
            f"inside it, e.g. --out {path / 'results'}"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by killed runs (their process is gone)."""
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for sibling in path.parent.glob(f".{path.name}{PARTIAL}*"):
        pid = sibling.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


@contextmanager
def output_dir(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder for the run; on success rename it onto ``out`` (replacing
    an existing ``out`` whole when ``overwrite``), on any failure remove it. ``out`` is checked
    again here (``check_out``), so a caller that skipped the early check is still safe."""
    path = check_out(out, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = path.parent / f".{path.name}{PARTIAL}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as err:
        raise UsageError(
            f"cannot write to output directory {path} ({err.strerror or err}); choose a writable --out"
        ) from None
    try:
        yield tmp
        _publish(tmp, path, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, path: Path, *, overwrite: bool) -> None:
    if path.exists():
        if not overwrite and any(path.iterdir()):
            raise UsageError(f"--out {path} appeared while the command ran; nothing was written")
        old = path.parent / f".{path.name}{_OLD}{os.getpid()}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
