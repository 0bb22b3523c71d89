"""Prompts: the shipped default text, validated tokenization, and equal-length prompt sets.

BOS is always explicit: ``bos=True`` puts the model's BOS token at position 0, ``bos=False``
makes the text's own first token the position-zero token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.core.errors import UsageError
from circuits.zoo.model import ZooModel, as_zoo_model

if TYPE_CHECKING:
    from circuits.backend import HookedModel


def check_tokens(
    tokens: Any, cfg: Any, *, pad_token_id: int | None = None
) -> Int[Tensor, "batch pos"]:
    """``tokens`` if they are valid input for a model with config ``cfg``: an integer
    ``[batch, pos]`` tensor with 2 <= pos <= n_ctx, every id in [0, d_vocab) and, given the
    tokenizer's ``pad_token_id``, no padding (rows whose runs of pad tokens at either end
    differ: TransformerLens' ``to_tokens`` pads a list of texts silently, and a padded row's
    position 0 or last positions are not its text); otherwise a one-line ``UsageError``."""
    if (
        not isinstance(tokens, Tensor)
        or tokens.ndim != 2
        or tokens.shape[1] < 2
        or tokens.shape[0] < 1
    ):
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise UsageError(
            f"tokens must be a [batch, pos] tensor with at least 2 positions, got {shape}"
        )
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise UsageError(f"token ids must be integers, got dtype {tokens.dtype}")
    if tokens.shape[1] > cfg.n_ctx:
        raise UsageError(f"{tokens.shape[1]} tokens exceed the model's context of {cfg.n_ctx}")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= cfg.d_vocab:
        bad = low if low < 0 else high
        raise UsageError(f"token id {bad} is outside the model's vocabulary (0..{cfg.d_vocab - 1})")
    if pad_token_id is not None and tokens.shape[0] > 1:
        for end, runs in (
            ("end", _pad_runs(tokens.flip(1), pad_token_id)),
            ("start", _pad_runs(tokens, pad_token_id)),
        ):
            if int(runs.min()) != int(runs.max()):
                row = int(runs.argmax())
                raise UsageError(
                    f"prompt {row} is padded at its {end} ({int(runs.max())} pad tokens, id "
                    f"{pad_token_id}): give prompts of equal length without padding, e.g. "
                    "circuits.prompts.prompt_set(...) or texts cut to the same number of tokens"
                )
    return tokens.long()


def _pad_runs(tokens: Tensor, pad: int) -> Tensor:
    """Per row, how many leading tokens are the pad token."""
    is_pad = (tokens == pad).long()
    return is_pad.cumprod(dim=1).sum(dim=1)


def default_text() -> str:
    """The English text shipped with the package (~500 words, ~600 SmolLM2 tokens)."""
    return files("circuits").joinpath("data/default_text.txt").read_text(encoding="utf-8")


def read_text(path: str | Path | None) -> str:
    """``path``'s text, or the default text when ``path`` is None."""
    if path is None:
        return default_text()
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"text file {path} does not exist; pass an existing --text FILE")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"text file {path} is not UTF-8 text") from None


@dataclass(frozen=True)
class TokenizedText:
    tokens: Int[Tensor, "1 pos"]
    n_tokens_in_text: int
    truncated: bool


def tokenize_text(
    zm: ZooModel | HookedModel,
    text: str,
    *,
    bos: bool,
    max_tokens: int | None = None,
    truncate: bool = False,
) -> TokenizedText:
    """Tokenize ``text`` for a sink measurement, checking its length against the context.

    ``max_tokens`` (e.g. Gu et al.'s T = 64) cuts the sequence deliberately. A text longer than
    the model's context is an error unless ``truncate`` is set, in which case the first
    ``n_ctx`` tokens are used and the result says so. ``zm``: a ``ZooModel`` or any
    HookedTransformer with a tokenizer.
    """
    zm = as_zoo_model(zm)
    tokens = zm.encode(text, bos=bos)
    n_total = tokens.shape[1]
    if n_total < 2:
        raise UsageError(
            f"the text is {n_total} token(s) long; attention-sink metrics need at least 2 "
            "(position 0 and one query after it): use a longer text"
        )
    limit = zm.n_ctx if max_tokens is None else min(max_tokens, zm.n_ctx)
    if max_tokens is not None and max_tokens < 2:
        raise UsageError(f"--max-tokens must be at least 2, got {max_tokens}")
    truncated = False
    if n_total > zm.n_ctx and not truncate and (max_tokens is None or max_tokens > zm.n_ctx):
        raise UsageError(
            f"the text is {n_total} tokens, longer than {zm.name}'s context of {zm.n_ctx}; "
            f"pass --truncate to use the first {zm.n_ctx} tokens, or --max-tokens N"
        )
    if n_total > limit:
        tokens = tokens[:, :limit]
        truncated = True
    return TokenizedText(tokens=tokens, n_tokens_in_text=n_total, truncated=truncated)


def sentence_starts(text: str) -> list[int]:
    """Character offsets where a sentence or line begins (used to vary the first token)."""
    starts = [0]
    starts += [m.end() for m in re.finditer(r"(?<=[.!?])\s+|\n+", text)]
    return sorted({s for s in starts if s < len(text) and not text[s].isspace()})


def prompt_set(
    zm: ZooModel | HookedModel,
    *,
    n_prompts: int = 8,
    n_tokens: int = 64,
    bos: bool,
    text: str | None = None,
) -> Int[Tensor, "n_prompts n_tokens"]:
    """``n_prompts`` windows of ``n_tokens`` tokens from ``text`` (default text), each starting at
    a different sentence, so the position-zero token varies across prompts. Windows are distinct
    in their first 4 tokens; their first tokens can repeat (on the default text, 8 windows
    start with 6 different tokens: two begin "The", two "A").

    With ``bos`` each window is BOS followed by ``n_tokens - 1`` text tokens. ``zm``: a
    ``ZooModel`` or any HookedTransformer with a tokenizer.
    """
    zm = as_zoo_model(zm)
    text = default_text() if text is None else text
    if n_tokens < 2:
        raise UsageError(f"prompts need at least 2 tokens, got n_tokens={n_tokens}")
    if n_tokens > zm.n_ctx:
        raise UsageError(f"n_tokens={n_tokens} exceeds {zm.name}'s context of {zm.n_ctx}")
    body = n_tokens - 1 if bos else n_tokens
    rows: list[Tensor] = []
    for start in sentence_starts(text):
        ids = zm.encode(text[start:], bos=False)[0]
        if ids.shape[0] < body:
            continue
        ids = ids[:body]
        if bos:
            ids = torch.cat([torch.tensor([zm.bos_token_id]), ids])
        if any(torch.equal(ids[:4], row[:4]) for row in rows):
            continue
        rows.append(ids)
        if len(rows) == n_prompts:
            break
    if len(rows) < n_prompts:
        raise UsageError(
            f"the text yields only {len(rows)} distinct windows of {n_tokens} tokens; "
            f"ask for fewer prompts or shorter ones, or give a longer text"
        )
    return torch.stack(rows)
