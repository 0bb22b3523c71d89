"""Arguments of the public Python API, checked before any work from their type annotations.

A public entry (``Patcher``, a readout, a counterfactual, ``Site``, ``explore``, ...) declares
what it takes in its signature, and ``@checked`` holds it to that: every argument is validated
against its annotation by pydantic (the library the toolkit already uses for its configs and
records) before the body runs, and a bad one is a one-line ``UsageError`` naming the entry, the
argument, what it must be and what was given. What a check means, by annotation:

* ``int``: an integer (``1.7`` is refused, not truncated; numpy / torch integer scalars pass);
* ``float``: a finite real number (NaN and inf are refused);
* ``Sequence[X]``: a list, tuple or range of ``X`` (a ``str`` is not a sequence of anything);
* ``Int[Tensor, "batch pos"]`` (jaxtyping): a tensor of that dtype kind and number of
  dimensions, so a ``[2, 2, 8]`` batch or float token ids are refused;
* ranges and emptiness are in the annotation: ``Count`` (an int >= 1), ``Index`` (an int >= 0),
  ``Positive``, ``Fraction``, ``NonEmpty[X]`` (a sequence with at least one ``X``),
  ``Positions``, or any ``Annotated[..., Field(...)]``.

A tensor with no elements is refused too, whatever its annotation.

Validated values are what the body receives (``np.int64(3)`` arrives as ``3``, a ``range`` as
a list). Annotations are resolved on the first call (so modules keep their light imports), and
an annotation pydantic cannot check (a protocol, a string alias) is left to the body's own
checks; ``unchecked_arguments`` lists those for the tests.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from circuits.core.errors import UsageError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("True / False is not a number here")
    return value


Count = Annotated[int, BeforeValidator(_not_bool), Field(ge=1)]
"""A number of things: an integer >= 1."""
Index = Annotated[int, BeforeValidator(_not_bool), Field(ge=0)]
"""A layer, head, position or token id: an integer >= 0."""
Positive = Annotated[float, Field(gt=0)]
"""A finite real number > 0 (a threshold, a ratio)."""
Fraction = Annotated[float, Field(ge=0, le=1)]
"""A share: a finite real number in [0, 1]."""
NonEmpty = Annotated[Sequence[T], Field(min_length=1)]
"""A sequence with at least one element."""
Positions = Annotated[tuple[Index, ...], Field(min_length=1)]
"""Token positions: a non-empty tuple of integers >= 0 (a list is accepted and made a tuple)."""

_CONFIG = ConfigDict(arbitrary_types_allowed=True, allow_inf_nan=False)
_UNCHECKED: dict[str, list[str]] = {}


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"a {type(value).__name__} of shape {list(shape)} and dtype {value.dtype}"
    return f"{text} ({type(value).__name__})"


_CONSTRAINTS = {
    "ge": ">= {}",
    "gt": "> {}",
    "le": "<= {}",
    "lt": "< {}",
    "min_length": "at least {} item(s)",
}


def describe_type(tp: Any) -> str:
    """An annotation in words: ``int >= 0``, ``a sequence of (str), at least 1 item(s)``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "None"
    if origin is Annotated:
        limits = []
        for field_info in args[1:]:
            for meta in getattr(field_info, "metadata", [field_info]):
                for key, text in _CONSTRAINTS.items():
                    if getattr(meta, key, None) is not None:
                        limits.append(text.format(getattr(meta, key)))
        return describe_type(args[0]) + (f" ({', '.join(limits)})" if limits else "")
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple,) and len(args) == 2 and args[1] is Ellipsis:
        return f"a tuple of [{describe_type(args[0])}]"
    if origin is tuple:
        return "(" + ", ".join(describe_type(a) for a in args) + ")"
    if origin is not None and args and isinstance(origin, type):
        inner = ", ".join(describe_type(a) for a in args)
        return f"a {origin.__name__.lower()} of [{inner}]"
    dims = getattr(tp, "dim_str", None)
    if isinstance(tp, type) and dims is not None:  # jaxtyping: Int[Tensor, 'batch pos']
        kind = {"Int": "integers", "Float": "floats"}.get(tp.__name__.split("[")[0], "numbers")
        return f"a tensor of {kind} [{', '.join(dims.split()) or '...'}]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def _message(entry: str, name: str, value: Any, err: ValidationError, tp: Any) -> str:
    errors = err.errors()
    first = errors[0]
    where = "".join(f"[{p!r}]" for p in first["loc"] if not isinstance(p, str))
    expected = f"expected {describe_type(tp)}"
    reason = f"{first['msg']} ({expected})" if len(errors) == 1 else expected
    return f"{entry}({name}{where}=...): {reason}; got {_shown(value)}"


def _adapter(tp: Any) -> TypeAdapter:
    try:
        return TypeAdapter(tp, config=_CONFIG)
    except Exception:  # a pydantic model carries its own config
        return TypeAdapter(tp)


def _adapters(func: Callable, skip_first: bool) -> dict[str, tuple[TypeAdapter, Any] | None]:
    hints = typing.get_type_hints(func, include_extras=True)
    params = list(inspect.signature(func).parameters.values())
    if skip_first:
        params = params[1:]
    out: dict[str, tuple[TypeAdapter, Any] | None] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name not in hints:
            continue
        try:
            out[p.name] = (_adapter(hints[p.name]), hints[p.name])
        except Exception:  # an annotation pydantic cannot check: the body checks it
            out[p.name] = None
            _UNCHECKED.setdefault(func.__qualname__, []).append(p.name)
    return out


def _refuse_empty_tensor(entry: str, name: str, value: Any) -> None:
    """An array with no elements means nothing to any entry: refused by name."""
    numel = getattr(value, "numel", None)
    if callable(numel) and hasattr(value, "shape") and numel() == 0:
        raise UsageError(
            f"{entry}({name}=...): the tensor is empty (shape {list(value.shape)}); "
            "give at least one element"
        )


def _entry_name(func: Callable) -> str:
    qual = func.__qualname__
    return qual.removesuffix(".__init__")


def checked(func: F) -> F:
    """Validate ``func``'s arguments against its annotations before it runs (module docstring).
    For a method or ``__init__``, ``self`` is skipped."""
    signature = inspect.signature(func)
    skip_first = next(iter(signature.parameters), "") in ("self", "cls")
    entry = _entry_name(func)
    adapters: dict[str, tuple[TypeAdapter, Any] | None] | None = None

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal adapters
        if adapters is None:
            adapters = _adapters(func, skip_first)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise UsageError(f"{entry}: {err}; see help({entry}) for its arguments") from None
        for name, value in list(bound.arguments.items()):
            checker = adapters.get(name)
            if checker is None:
                continue
            try:
                bound.arguments[name] = checker[0].validate_python(value)
            except ValidationError as err:
                raise UsageError(_message(entry, name, value, err, checker[1])) from None
            _refuse_empty_tensor(entry, name, value)
        return func(*bound.args, **bound.kwargs)

    return wrapper  # type: ignore[return-value]


_FIELD_ADAPTERS: dict[type, dict[str, tuple[TypeAdapter, Any]]] = {}


def _field_adapters(cls: type) -> dict[str, tuple[TypeAdapter, Any]]:
    if cls not in _FIELD_ADAPTERS:
        hints = typing.get_type_hints(cls, include_extras=True)
        _FIELD_ADAPTERS[cls] = {
            f.name: (_adapter(hints[f.name]), hints[f.name])
            for f in dataclasses.fields(cls)
            if f.name in hints
        }
    return _FIELD_ADAPTERS[cls]


def check_fields(obj: Any) -> None:
    """Validate a dataclass instance's fields against their annotations (call it from
    ``__post_init__``); the validated values are written back (frozen dataclasses too)."""
    for name, (adapter, tp) in _field_adapters(type(obj)).items():
        value = getattr(obj, name)
        try:
            checked_value = adapter.validate_python(value)
        except ValidationError as err:
            raise UsageError(_message(type(obj).__name__, name, value, err, tp)) from None
        object.__setattr__(obj, name, checked_value)


def unchecked_arguments() -> dict[str, list[str]]:
    """Entries (qualified names) and the arguments ``@checked`` could not check, so far."""
    return {k: list(v) for k, v in _UNCHECKED.items()}
