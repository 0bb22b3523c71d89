"""The data behind the circuitsvis views: one forward pass on one prompt, saved as ``views.json``
(so a report can be rebuilt later without the model)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.backend import get_act_name
from circuits.core.atomic import write_json
from circuits.core.conventions import RECORD_FORMATS, VIEWS_FILE
from circuits.core.errors import UsageError
from circuits.core.manifest import verify_files
from circuits.core.model_lock import exclusive
from circuits.core.records import read_record
from circuits.metrics.attention import attn_to_p0
from circuits.zoo.model import as_zoo_model


def _rounded(x: Tensor, digits: int) -> list:
    """A tensor as nested lists of floats, rounded; a non-finite value is an error, never 0."""
    if not torch.isfinite(x).all():
        raise UsageError(
            "the model produced non-finite activations for the views; check its weights"
        )

    def rnd(v: Any) -> Any:
        return [rnd(w) for w in v] if isinstance(v, list) else round(v, digits)

    return rnd(x.detach().float().tolist())


def compute_view_data(
    model,
    tokens: Int[Tensor, "... pos"],
    str_tokens: list[str],
    *,
    top_k: int = 6,
    max_tokens: int = 32,
    model_name: str | None = None,
    bos: bool | None = None,
) -> dict[str, Any]:
    """Run ``model`` once on one prompt and keep what the views need (the ``views.json`` schema).

    Keys: ``model``, ``bos``, ``n_tokens``, ``tokens`` (strings, first ``max_tokens``),
    ``token_ids``; ``heads``: the ``top_k`` heads with the largest attention to P0 on this
    prompt (``layer``, ``head``, ``attn_to_p0`` = mean over queries q >= 1 of A[q, 0]), sorted
    by layer; ``patterns``: their post-softmax patterns ``[top_k, T, T]``; ``norm_labels`` and
    ``norms``: l2 norm per position of ``blocks.0.hook_resid_pre`` (``embed``) and of each
    ``blocks.{l}.hook_resid_post`` (``L{l}``), ``[n_layers + 1, T]``.
    """
    ids = tokens.reshape(-1)[:max_tokens].unsqueeze(0) if tokens.dim() > 0 else tokens
    n = ids.shape[1]
    if n < 2:
        raise UsageError("a view needs a prompt of at least 2 tokens")
    if len(str_tokens) < n:
        raise UsageError(f"{len(str_tokens)} token strings for {n} tokens")
    n_layers = model.cfg.n_layers
    patterns: dict[int, Tensor] = {}
    scores: dict[int, Tensor] = {}
    norms: dict[str, Tensor] = {}

    def on_pattern(pattern: Tensor, hook, layer: int) -> None:
        patterns[layer] = pattern[0].detach().float()
        scores[layer] = attn_to_p0(pattern[:1].float())

    def on_resid(resid: Tensor, hook, key: str) -> None:  # keyed here: a bridge names hooks its way
        norms[key] = resid[0].detach().float().norm(dim=-1)

    hooks: list[tuple[str, Callable]] = [
        (get_act_name("pattern", layer), partial(on_pattern, layer=layer))
        for layer in range(n_layers)
    ]
    hooks += [
        (get_act_name("resid_post", layer), partial(on_resid, key=f"L{layer}"))
        for layer in range(n_layers)
    ]
    hooks.append((get_act_name("resid_pre", 0), partial(on_resid, key="embed")))
    with exclusive(model), torch.inference_mode():
        model.run_with_hooks(ids, return_type=None, fwd_hooks=hooks)

    grid = torch.stack([scores[layer] for layer in range(n_layers)])  # [layer, head]
    k = min(top_k, grid.numel())
    flat = torch.topk(grid.flatten(), k).indices.tolist()
    picked = sorted((i // grid.shape[1], i % grid.shape[1]) for i in flat)
    labels = ["embed"] + [f"L{layer}" for layer in range(n_layers)]
    return {
        "format": RECORD_FORMATS["views"],
        "model": model_name,
        "bos": bos,
        "n_tokens": n,
        "tokens": list(str_tokens[:n]),
        "token_ids": ids[0].tolist(),
        "heads": [
            {"layer": la, "head": h, "attn_to_p0": round(float(grid[la, h]), 4)} for la, h in picked
        ],
        "patterns": [_rounded(patterns[la][h], 4) for la, h in picked],
        "norm_labels": labels,
        "norms": [_rounded(norms[label], 2) for label in labels],
    }


def write_view_data(out_dir: str | os.PathLike, data: dict[str, Any]) -> Path:
    return write_json(Path(out_dir) / VIEWS_FILE, data)


def load_view_data(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's ``views.json`` (checked against its manifest and format), or None."""
    path = Path(out_dir) / VIEWS_FILE
    if not path.exists():
        return None
    verify_files(out_dir, [VIEWS_FILE], what=" (or delete it and rerun render --views)")
    data = read_record(path, "views")
    if "patterns" not in data or "tokens" not in data:
        raise UsageError(
            f"{path} is not a p0-circuits views file; delete it or rerun render --views"
        )
    return data


def view_data_for_text(
    zm, text: str, *, bos: bool | None = None, top_k: int = 6, max_tokens: int = 32
) -> dict[str, Any]:
    """``view_data_for_ids`` for a text (``zm``: a ``ZooModel`` or a HookedTransformer with a
    tokenizer)."""
    zm = as_zoo_model(zm)
    bos = zm.natural_bos if bos is None else bos
    return view_data_for_ids(
        zm, zm.encode(text, bos=bos), bos=bos, top_k=top_k, max_tokens=max_tokens
    )


def view_data_for_ids(
    zm, ids, *, bos: bool, top_k: int = 6, max_tokens: int = 32
) -> dict[str, Any]:
    """``compute_view_data`` for a model's token ids ``[1, pos]`` (first ``max_tokens``;
    ``zm``: a ``ZooModel`` or any HookedTransformer)."""
    zm = as_zoo_model(zm)
    ids = ids[:, :max_tokens]
    return compute_view_data(
        zm.model,
        ids,
        zm.str_tokens(ids[0]),
        top_k=top_k,
        max_tokens=max_tokens,
        model_name=zm.name,
        bos=bos,
    )
