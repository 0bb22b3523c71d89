"""``"token-file"``: a pre-tokenized corpus of any size, for runs that need real pretraining data
(the no-BOS sink regime of Gu et al. needs > 100M unique tokens; see results/emergence/README).

The file is a flat array of token ids: a ``.npy`` array of any unsigned integer type, or a raw
``.bin`` of little-endian uint16 (nanoGPT's format). It is memory-mapped, never read whole.
Batch ``step`` is ``batch_size`` random windows keyed by ``(seed, step)``, the same way as the
built-in text corpus, with ``bos_token_id`` prepended when the run has BOS.

Options (``--task``): ``path``, ``vocab_size`` (ids must lie below it), ``bos_token_id``.
What identifies the data (``data_id``): the file's size and the sha256 of its first and last
16 MB, so a multi-GB file is fingerprinted in a second.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from circuits.core.errors import UsageError
from circuits.core.schema import check_fields, check_range
from circuits.training.corpus import batch_generator, prepend_bos

CHUNK = 16 << 20


@dataclass(frozen=True)
class TokenFileTask:
    """A memory-mapped token file (see the module docstring)."""

    path: str = ""
    vocab_size: int = 50304
    bos_token_id: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        check_range("vocab_size", self.vocab_size, 2)
        check_range("bos_token_id", self.bos_token_id, 0, self.vocab_size - 1)
        if not self.path:
            raise UsageError('token-file needs a path: --task \'{"path": "tokens.bin", ...}\'')
        if not Path(self.path).is_file():
            raise UsageError(f"token file {self.path} does not exist")
        if self.tokens.size < 2:
            raise UsageError(f"token file {self.path} holds fewer than 2 tokens")

    @cached_property
    def tokens(self) -> np.ndarray:
        path = Path(self.path)
        if path.suffix == ".npy":
            arr = np.load(path, mmap_mode="r")
            if arr.ndim != 1 or arr.dtype.kind != "u":
                raise UsageError(
                    f"{path} must hold a 1-d unsigned integer array, got {arr.dtype} {arr.shape}"
                )
            return arr
        if path.suffix != ".bin":
            raise UsageError(f"token file {path} must be a .npy array or a raw uint16 .bin")
        return np.memmap(path, dtype="<u2", mode="r")

    @property
    def fingerprint(self) -> str:
        """size + sha256 of the first and last 16 MB (what a run records as its data)."""
        path = Path(self.path)
        size = path.stat().st_size
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            digest.update(fh.read(CHUNK))
            if size > CHUNK:
                fh.seek(max(CHUNK, size - CHUNK))
                digest.update(fh.read(CHUNK))
        return f"{size}:{digest.hexdigest()[:16]}"

    def batch(
        self, *, batch_size: int, n_ctx: int, bos: bool, seed: int, step: int
    ) -> Int[Tensor, "batch n_ctx"]:
        body = n_ctx - 1 if bos else n_ctx
        if self.tokens.size <= body:
            raise UsageError(f"token file {self.path} is shorter than one window of {body}")
        gen = batch_generator(seed, step)
        starts = torch.randint(0, self.tokens.size - body, (batch_size,), generator=gen).numpy()
        rows = np.stack([self.tokens[s : s + body] for s in starts]).astype(np.int64)
        if rows.max() >= self.vocab_size:
            raise UsageError(
                f"token file {self.path} holds id {int(rows.max())}, not below vocab_size "
                f"{self.vocab_size}"
            )
        out = torch.from_numpy(rows)
        return prepend_bos(out, self.bos_token_id) if bos else out
