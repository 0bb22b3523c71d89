"""One model, one hooked forward at a time, whoever asks.

TransformerLens keeps a forward's hooks on the model's own modules (``HookPoint``\\s) and its
switches (``use_split_qkv_input``, the hooks' context level) on the model: two forwards that run
at once on one model, from two threads (two panels, a panel and a ``Patcher``), each see the
other's hooks, stop at the other's last read or write into the other's rows. Every place in the
toolkit that puts hooks on a model or flips one of its switches holds this model's lock for
exactly that forward (``with exclusive(model): ...``), so any number of panels, patchers and
discoveries may share a model in one process and each gets the numbers it would get alone.

The lock is re-entrant (a path patch holds it around its flag change and the forwards inside)
and belongs to the model object: it goes when the model goes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The re-entrant lock of ``model`` (made on first use, one per model object)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def exclusive(model: Any) -> Iterator[None]:
    """Hold ``model``'s lock: no other thread runs a hooked forward on it meanwhile."""
    with model_lock(model):
        yield
