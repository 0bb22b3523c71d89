"""Counterfactuals as data: the values a patch writes, and the question each one asks.

Activation patching asks "what if this component had computed something else?". What else is the
counterfactual; each is an object that computes its values for a model and prompts and describes
itself (``describe()``: its ``name`` spec, its ``definition`` in words, its parameters), and every
output records that description.

``Shift(token=None)``, spec ``shift`` / ``shift:ID`` (the default)
    Run the same prompts with one token prepended, ``[t, x_0, x_1, ..., x_{T-1}]``, so that the
    original first token ``x_0`` sits at position 1. The counterfactual value of an activation at
    position ``p`` of the original run is that run's activation at position ``p + 1``: the same
    token, one place later, with one more token before it. For P0 it is exactly "the first token
    when it is not first". The prepended token ``t`` is, by default, each prompt's own last token
    ``x_{T-1}`` (an ordinary in-distribution token that differs across prompts; it never repeats
    ``x_0``'s role); ``token`` fixes it.
``MeanAblation()``, spec ``mean``
    The mean of the clean activation over every prompt and every position >= 1 (never P0
    itself), the same vector at every position.
``ZeroAblation()``, spec ``zero``
    All zeros.
``FirstToken(token)``, spec ``token:T``
    The same prompts with position 0 holding token ``T`` (``<bos>``, ``<eos>``, an id or a word
    that is one token): "what if P0 were ``<bos>``?". Values at every position come from that run.
``PromptSet(tokens, name=...)``
    A counterfactual prompt set of the same shape (IOI-style corrupted prompts, another first
    word, ...): values from the model run on those tokens, position for position.
``MassiveDims(dims, base=Shift())``, spec ``dims:D1,D2[@BASE]``
    Only the named coordinates of the residual stream take ``base``'s value; every other
    coordinate stays clean. At a residual-width hook (``resid_pre``/``mid``/``post``,
    ``attn_out``, ``mlp_out``, the embeddings) coordinate ``d`` is replaced, at any other hook
    (``z``, a head's query) nothing is (the clean value). It asks whether the massive-activation
    dimensions (Sun et al. 2024; ``measure`` lists them) carry P0's effect by themselves.
``CachedActivations(values, name=...)``
    Activations the caller computed (e.g. from another model or an interpolation), hook name ->
    tensor of the clean run's shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import torch
from jaxtyping import Int
from pydantic import Field
from torch import Tensor

from circuits.backend import HookedModel
from circuits.core.arguments import Index, NonEmpty, checked
from circuits.core.conventions import parse_counterfactual_spec
from circuits.core.errors import UsageError
from circuits.core.model_lock import exclusive


def shifted_tokens(
    tokens: Int[Tensor, "batch pos"], shift_token: int | None = None
) -> Int[Tensor, "batch pos_plus_1"]:
    """``tokens`` with one token prepended per row (default: the row's own last token)."""
    if shift_token is None:
        first = tokens[:, -1:]
    else:
        first = torch.full((tokens.shape[0], 1), int(shift_token), dtype=tokens.dtype)
    return torch.cat([first.to(tokens.device), tokens], dim=1)


def _run(model: HookedModel, tokens: Tensor, names: list[str]) -> dict[str, Tensor]:
    wanted = set(names)
    with exclusive(model), torch.inference_mode():
        _, cache = model.run_with_cache(
            tokens.to(model.cfg.device), return_type=None, names_filter=lambda n: n in wanted
        )
    return {n: cache[n] for n in names}


def _check_token(token: int, model: HookedModel, what: str) -> int:
    if not 0 <= int(token) < model.cfg.d_vocab:
        raise UsageError(f"{what} {token} is outside the vocabulary (0..{model.cfg.d_vocab - 1})")
    return int(token)


def _tokens_digest(tokens: Tensor) -> str:
    return hashlib.sha256(tokens.detach().cpu().to(torch.int64).numpy().tobytes()).hexdigest()[:16]


class Counterfactual:
    """What a patched site holds instead of its clean value. Subclasses define ``values``."""

    spec = "counterfactual"
    definition = ""
    kind: str | None = None
    """The spec kind a command line names it by (``circuits.core.conventions``'s
    ``COUNTERFACTUAL_SPECS`` says its syntax, torch-free); None: built from Python only."""
    registry: dict[str, type[Counterfactual]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            Counterfactual.registry[cls.kind] = cls  # type: ignore[index]

    @classmethod
    def from_spec(cls, arg: str | None, shift_token: int | None) -> Counterfactual:
        """The counterfactual a parsed spec names (``kind:arg``)."""
        return cls()

    def values(
        self,
        model: HookedModel,
        tokens: Int[Tensor, "batch pos"],
        clean: Mapping[str, Tensor],
        hook_names: Iterable[str],
    ) -> dict[str, Tensor]:
        """The counterfactual activation at each hook, aligned with ``clean[name]``'s shape."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """What every output records: ``name`` (a spec), ``definition`` and parameters."""
        return {"name": self.spec, "definition": self.definition, **self.params()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class Shift(Counterfactual):
    kind = "shift"

    @classmethod
    def from_spec(cls, arg: str | None, shift_token: int | None) -> Counterfactual:
        return cls(int(arg) if arg is not None else shift_token)

    @checked
    def __init__(self, token: Index | None = None) -> None:
        self.token = None if token is None else int(token)
        self.spec = "shift" if token is None else f"shift:{self.token}"
        self.definition = (
            "same prompts with one token prepended ("
            + ("default: each prompt's last token" if token is None else f"token {self.token}")
            + "); the value at position p is that run's activation at position p+1, i.e. the same "
            "token one place later, so P0 receives what its token computes when it is not at "
            "position 0"
        )

    def params(self) -> dict[str, Any]:
        return {"prepended_token": self.token}

    def values(self, model, tokens, clean, hook_names):
        names = list(hook_names)
        if tokens.shape[1] + 1 > model.cfg.n_ctx:
            raise UsageError(
                f"the shift counterfactual needs {tokens.shape[1] + 1} positions but the model's "
                f"context is {model.cfg.n_ctx}; use fewer tokens"
            )
        if self.token is not None:
            _check_token(self.token, model, "shift token")
        cache = _run(model, shifted_tokens(tokens, self.token), names)
        return {n: cache[n][:, 1:].contiguous() for n in names}


class MeanAblation(Counterfactual):
    kind = spec = "mean"
    definition = (
        "mean of the clean activation over all prompts and all positions >= 1 (mean ablation)"
    )

    def values(self, model, tokens, clean, hook_names):
        if tokens.shape[1] < 2:
            raise UsageError("mean ablation averages positions >= 1: give at least 2 tokens")
        out = {}
        for n in hook_names:
            mean = clean[n][:, 1:].float().mean(dim=(0, 1), keepdim=True)  # summed in float32
            out[n] = mean.to(clean[n].dtype).expand_as(clean[n]).contiguous()
        return out


class ZeroAblation(Counterfactual):
    kind = spec = "zero"
    definition = "all zeros (zero ablation)"

    def values(self, model, tokens, clean, hook_names):
        return {n: torch.zeros_like(clean[n]) for n in hook_names}


class PromptSet(Counterfactual):
    """Counterfactual prompts of the clean prompts' shape: values from the model run on them."""

    @checked
    def __init__(self, tokens: Int[Tensor, "batch pos"], name: str = "prompts") -> None:
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
            raise UsageError(
                "a counterfactual prompt set is an integer token tensor [batch, pos] of the "
                "clean prompts' shape"
            )
        self.tokens = tokens
        self.spec = name
        self.definition = (
            f"the model's activations on a counterfactual prompt set of shape "
            f"{list(tokens.shape)}, position for position"
        )

    def params(self) -> dict[str, Any]:
        return {"tokens_sha256_16": _tokens_digest(self.tokens), "shape": list(self.tokens.shape)}

    def counterfactual_tokens(self, tokens: Tensor) -> Tensor:
        if tuple(self.tokens.shape) != tuple(tokens.shape):
            raise UsageError(
                f"counterfactual prompts have shape {list(self.tokens.shape)} but the clean "
                f"prompts {list(tokens.shape)}: give one counterfactual prompt per clean prompt, "
                "of the same length"
            )
        return self.tokens.to(tokens.device)

    def values(self, model, tokens, clean, hook_names):
        cf = self.counterfactual_tokens(tokens)
        if int(cf.min()) < 0 or int(cf.max()) >= model.cfg.d_vocab:
            raise UsageError(
                f"counterfactual prompts hold token ids outside the vocabulary "
                f"(0..{model.cfg.d_vocab - 1})"
            )
        return _run(model, cf, list(hook_names))


class FirstToken(PromptSet):
    """The clean prompts with position 0 holding ``token`` (an id, or a name resolved by
    ``resolve_token``)."""

    kind = "token"

    @classmethod
    def from_spec(cls, arg: str | None, shift_token: int | None) -> Counterfactual:
        return cls(arg)  # type: ignore[arg-type]  # a name, resolved against the model

    @checked
    def __init__(self, token: Index | str) -> None:
        self.token = token
        self.spec = f"token:{token}"
        self.definition = (
            f"same prompts with position 0 holding token {token}; values at every position come "
            "from that run"
        )
        self.tokens = None  # type: ignore[assignment]

    def params(self) -> dict[str, Any]:
        return {"first_token": self.token}

    def counterfactual_tokens(self, tokens: Tensor) -> Tensor:
        if not isinstance(self.token, int):
            raise UsageError(
                f"token {self.token!r} is not resolved to an id: use resolve_counterfactual"
            )
        cf = tokens.clone()
        cf[:, 0] = self.token
        return cf

    def values(self, model, tokens, clean, hook_names):
        _check_token(self.token, model, "first token")  # type: ignore[arg-type]
        return super().values(model, tokens, clean, hook_names)


class CachedActivations(Counterfactual):
    """Counterfactual values the caller computed: hook name -> tensor of the clean shape."""

    @checked
    def __init__(
        self, values: Annotated[Mapping[str, Tensor], Field(min_length=1)], name: str = "cached"
    ) -> None:
        self._values = dict(values)
        self.spec = name
        self.definition = "activations given by the caller (a cached activation set)"

    def params(self) -> dict[str, Any]:
        return {"hooks_given": len(self._values)}

    def values(self, model, tokens, clean, hook_names):
        out = {}
        for n in hook_names:
            if n not in self._values:
                raise UsageError(
                    f"the cached counterfactual has no values for hook {n}: give every hook the "
                    "engine caches (circuits.patching.engine.cached_hooks)"
                )
            v = self._values[n].to(clean[n].device, clean[n].dtype)
            if v.shape != clean[n].shape:
                raise UsageError(
                    f"cached counterfactual {n} has shape {list(v.shape)}, the clean run "
                    f"{list(clean[n].shape)}"
                )
            out[n] = v
        return out


class MassiveDims(Counterfactual):
    kind = "dims"

    @classmethod
    def from_spec(cls, arg: str | None, shift_token: int | None) -> Counterfactual:
        dims, _, base = (arg or "").partition("@")
        bases = {"shift": Shift(shift_token), "mean": MeanAblation(), "zero": ZeroAblation()}
        return cls([int(d) for d in dims.split(",")], bases[base.strip() or "shift"])

    @checked
    def __init__(self, dims: NonEmpty[Index], base: Counterfactual | None = None) -> None:
        self.dims = tuple(sorted({int(d) for d in dims}))
        self.base = base if base is not None else Shift()
        if isinstance(self.base, MassiveDims):
            raise UsageError("MassiveDims takes a plain counterfactual as its base, not another")
        listed = ",".join(str(d) for d in self.dims)
        self.spec = f"dims:{listed}" + ("" if self.base.spec == "shift" else f"@{self.base.spec}")
        self.definition = (
            f"residual coordinates {listed} take the {self.base.spec} counterfactual's value "
            f"({self.base.definition}); every other coordinate, and every hook that is not "
            "residual-width, keeps its clean value"
        )

    def params(self) -> dict[str, Any]:
        return {"dims": list(self.dims), "base": self.base.describe()}

    def values(self, model, tokens, clean, hook_names):
        names = list(hook_names)
        width = model.cfg.d_model
        if max(self.dims) >= width:
            raise UsageError(
                f"dims:{max(self.dims)} is outside the residual stream (d_model = {width}): "
                f"name coordinates 0..{width - 1}"
            )
        wide = [n for n in names if clean[n].shape[-1] == width and clean[n].dim() == 3]
        base = self.base.values(model, tokens, clean, wide) if wide else {}
        out = {}
        for n in names:
            value = clean[n].clone()
            if n in base:
                dims = list(self.dims)
                value[..., dims] = base[n][..., dims].to(value.dtype)
            out[n] = value
        return out


def resolve_token(token: str | int, model: HookedModel) -> int:
    """A token named on a command line as an id: ``42``, ``<bos>``, ``<eos>``, or a string the
    tokenizer maps to exactly one token."""
    if isinstance(token, int):
        return _check_token(token, model, "token")
    text = str(token)
    if text.isdigit():
        return _check_token(int(text), model, "token")
    tok = model.tokenizer
    if tok is None:
        raise UsageError(
            f"token {text!r}: this model has no tokenizer, so name the token by its id (token:42)"
        )
    special = {"<bos>": tok.bos_token_id, "<eos>": tok.eos_token_id}
    if text.lower() in special:
        found = special[text.lower()]
        if found is None:
            raise UsageError(f"this model's tokenizer has no {text} token: name a token id instead")
        return _check_token(int(found), model, "token")
    ids = tok.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise UsageError(
            f"{text!r} is {len(ids)} tokens for this tokenizer, not one: name a token id "
            "(token:42) or a single-token word"
        )
    return _check_token(int(ids[0]), model, "token")


@checked
def resolve_counterfactual(
    counterfactual: str | Counterfactual,
    model: HookedModel | None = None,
    *,
    shift_token: Index | None = None,
) -> Counterfactual:
    """A counterfactual object from a spec (``shift``, ``shift:1``, ``mean``, ``zero``,
    ``token:<bos>``) or an object as given; token names are resolved against ``model``."""
    if isinstance(counterfactual, Counterfactual):
        if shift_token is not None:
            raise UsageError("shift_token applies to the 'shift' spec only")
        cf = counterfactual
    else:
        kind, arg = parse_counterfactual_spec(counterfactual)
        if shift_token is not None and (kind != "shift" or arg is not None):
            raise UsageError(
                "shift_token applies to the plain 'shift' spec only (or write shift:ID)"
            )
        cf = Counterfactual.registry[kind].from_spec(arg, shift_token)
    if isinstance(cf, FirstToken) and not isinstance(cf.token, int):
        if model is None:
            raise UsageError(f"{cf.spec}: a model is needed to resolve the token")
        named = cf.token
        cf = FirstToken(resolve_token(named, model))
        cf.definition += f" ({named!r})"
        cf.spec = f"token:{named}"
    return cf
