"""Errors the toolkit raises for bad input: each message names the problem and the fix."""

from __future__ import annotations


class P0Error(Exception):
    """Base class: the CLI prints these as a one-line reason and exits 2."""


class UsageError(P0Error, ValueError):
    """Bad arguments or input data (a missing file, a too-short text, an out-of-range index)."""


class UnknownModelError(P0Error, KeyError):
    """A model name that is neither in the zoo, nor a local path, nor loadable by TransformerLens."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ChecksumError(P0Error):
    """A downloaded or cached model file whose sha256 is not the expected one."""


class FetchError(P0Error):
    """A model package could not be downloaded from the package index."""
