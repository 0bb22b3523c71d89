"""A local GGUF file, checked before transformers reads it.

``check_gguf`` refuses, with one line naming the file and the fix, a file that does not start with
the GGUF magic bytes, one whose header cannot be read, and one shorter than its header says its
tensors need (a cut-short download or copy: transformers would fail deep inside with "cannot
reshape array"). The header is read with ``struct`` alone (the layout of GGUF versions 2 and 3:
magic, version, tensor count, key/value count, the key/value pairs, the tensor infos, then the
tensor data at the next multiple of ``general.alignment``); a tensor's size in bytes is its
element count times its type's bytes per block over the block's elements (``gguf``'s table).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from circuits.core.errors import UsageError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
_FIX = "download it again, or export it again from the model it came from"


class _Short(Exception):
    """The file ended inside its header."""


class _Header:
    """Sequential reads of the header's little- (or big-) endian fields."""

    def __init__(self, handle: BinaryIO, order: str, size: int) -> None:
        self.handle, self.order, self.size = handle, order, size

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes (``_Short`` past the end of the file, before reading)."""
        if n > self.size - self.handle.tell():
            raise _Short
        return self.handle.read(n)

    def read(self, fmt: str) -> tuple:
        return struct.unpack(self.order + fmt, self.take(struct.calcsize(self.order + fmt)))

    def string(self) -> bytes:
        return self.take(self.read("Q")[0])

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.read(_SCALARS[kind])[0]
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.read("IQ")
            if item in _SCALARS:  # skip a numeric array without unpacking it
                self.take(struct.calcsize(self.order + _SCALARS[item]) * n)
                return None
            for _ in range(n):
                self.value(item)
            return None
        raise ValueError(f"unknown value type {kind}")


def needed_size(path: Path) -> int | None:
    """The bytes the header of GGUF file ``path`` says the file holds (up to the end of its last
    tensor); None for a GGUF version or tensor type this reader does not know. ``_Short`` when
    the file ends inside the header, ``ValueError`` when the header is not GGUF's."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as handle:
        head = _Header(handle, "<", path.stat().st_size)
        if head.take(4) != GGUF_MAGIC:
            raise ValueError("no GGUF magic")
        (version,) = head.read("I")
        if not version & 0xFFFF:  # written on a big-endian machine
            head.order, version = ">", struct.unpack(">I", struct.pack("<I", version))[0]
        if version not in (2, 3):
            return None  # another layout: transformers says what it makes of it
        n_tensors, n_kv = head.read("QQ")
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = head.string()
            (kind,) = head.read("I")
            value = head.value(kind)
            if key == b"general.alignment" and isinstance(value, int) and value > 0:
                alignment = value
        end = 0
        for _ in range(n_tensors):
            head.string()
            (n_dims,) = head.read("I")
            dims = head.read("Q" * n_dims)
            ggml_type, offset = head.read("IQ")
            try:
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
            except (ValueError, KeyError):
                return None
            elements = 1
            for d in dims:
                elements *= d
            end = max(end, offset + elements * type_size // block)
        start = handle.tell()
    return -(-start // alignment) * alignment + end


def check_gguf(path: Path) -> None:
    """A one-line ``UsageError`` unless ``path`` is a GGUF file as long as its header says."""
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise UsageError(
                f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)"
            )
    actual = path.stat().st_size
    try:
        needed = needed_size(path)
    except _Short:
        raise UsageError(
            f"{path} is truncated: it ends inside its header ({actual} bytes); {_FIX}"
        ) from None
    except (ValueError, OverflowError, struct.error) as err:
        raise UsageError(f"{path} has a damaged GGUF header ({err}); {_FIX}") from None
    if needed is not None and actual < needed:
        raise UsageError(
            f"{path} is truncated: its header says {needed} bytes, the file has {actual}; {_FIX}"
        )
