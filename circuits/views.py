"""circuitsvis views of the P0 sink, inline in Jupyter and saved as offline HTML.

Three views, each built from plain data (lists of numbers) so that a report can be rebuilt from
saved JSON without rerunning the model:

* :func:`sink_heads_view` -- ``AttentionHeads``: the attention patterns of the heads that attend
  most to position 0 on one prompt (data from :func:`compute_view_data`, saved as
  ``views.json``);
* :func:`p0_norm_view` -- ``ColoredTokensMulti``: the residual-stream norm of every token after
  the embedding and after each block; P0 outgrows every other position within two blocks;
* :func:`recognition_view` -- ``ColoredTokensMulti`` from ``sink_metrics.json`` alone: layer-0
  sum_i p_i^2 (exactly 1 at P0) and the layer-0 attention-output norm per token.

Position 0 is marked in every view by prefixing its token with ``[P0]``.

Offline: circuitsvis's default ``str()`` of a view loads its JavaScript from a CDN (unpkg).
Here the bundle shipped inside the circuitsvis wheel (``circuitsvis/dist/cdn/iife.js``, ~1.3 MB)
is inlined instead: once per page in a report (:func:`page_html`), once per view in Jupyter and
in :meth:`View.save`. No page written by this module fetches anything.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.errors import UsageError
from circuits.io import write_json, write_text

P0_MARK = "[P0]"
VIEWS_FILE = "views.json"
VIEW_ELEMENTS = ("AttentionHeads", "AttentionPatterns", "ColoredTokens", "ColoredTokensMulti")
_ids = itertools.count()


# ---------------------------------------------------------------------------------------------
# The circuitsvis bundle, inlined
# ---------------------------------------------------------------------------------------------


def bundle_path() -> Path:
    """The browser bundle shipped in the circuitsvis wheel."""
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.exists():
        raise UsageError(
            f"circuitsvis has no browser bundle at {path}; reinstall circuitsvis (>=1.43,<2)"
        )
    return path


@lru_cache(maxsize=1)
def bundle_js() -> str:
    """The circuitsvis bundle, safe to place inside an HTML ``<script>`` element.

    ``</script`` inside the bundle (one string literal) is escaped as ``<\\/script`` (the same
    string in JavaScript), and the source-map comment is dropped so that no tool fetches it.
    """
    js = bundle_path().read_text(encoding="utf-8")
    js = js.replace("</script", "<\\/script").replace("<!--", "<\\!--")
    lines = [ln for ln in js.splitlines() if not ln.startswith("//# sourceMappingURL=")]
    return "\n".join(lines)


def _js_json(value: Any) -> str:
    """JSON that can sit inside ``<script>``: every ``<`` escaped, NaN refused."""
    return json.dumps(value, allow_nan=False).replace("<", "\\u003c")


def _round(value: Any, digits: int = 4) -> Any:
    """Nested lists of floats rounded (keeps views.json and pages small); NaN/inf -> 0."""
    if isinstance(value, Tensor):
        value = value.detach().float().tolist()
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else 0.0
    if isinstance(value, (list, tuple)):
        return [_round(v, digits) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# A view
# ---------------------------------------------------------------------------------------------


@dataclass
class View:
    """One circuitsvis element with its props; displays inline in Jupyter (offline)."""

    element: str
    props: dict[str, Any]
    title: str = ""
    caption: str = ""
    dom_id: str = field(default_factory=lambda: f"p0-view-{next(_ids)}-{os.getpid()}")

    def __post_init__(self) -> None:
        if self.element not in VIEW_ELEMENTS:
            raise UsageError(f"unknown circuitsvis element {self.element!r}")

    def render_call(self) -> str:
        """The JavaScript that draws this view into its ``<div>`` (needs the bundle loaded)."""
        return (
            f"CircuitsVis.render({_js_json(self.dom_id)}, CircuitsVis.{self.element}, "
            f"{_js_json(self.props)});"
        )

    def fragment(self) -> str:
        """``<div>`` + a classic ``<script>``: for a page that already loaded the bundle once."""
        return (
            f'<div class="p0-view" id="{html.escape(self.dom_id)}" '
            f'data-element="{self.element}"></div>\n'
            f"<script>{self.render_call()}</script>"
        )

    def standalone(self) -> str:
        """``<div>`` + a module script holding the bundle itself (Jupyter cells, lone views)."""
        return (
            f'<div class="p0-view" id="{html.escape(self.dom_id)}" '
            f'data-element="{self.element}" style="margin: 10px 0;"></div>\n'
            f'<script type="module">\n{bundle_js()}\n{self.render_call()}\n</script>'
        )

    def _repr_html_(self) -> str:  # Jupyter: always the offline version
        head = f"<h4>{html.escape(self.title)}</h4>" if self.title else ""
        tail = f"<p><small>{html.escape(self.caption)}</small></p>" if self.caption else ""
        return head + self.standalone() + tail

    def save(self, path: str | os.PathLike) -> Path:
        """A complete HTML page with this view that opens offline (written atomically)."""
        return write_text(path, page_html([self], title=self.title or self.element))


def page_html(views: list[View], title: str = "p0-circuits views", body_html: str = "") -> str:
    """A whole offline page: the bundle once, then each view with its title and caption."""
    parts = []
    for v in views:
        parts.append(f"<h3>{html.escape(v.title)}</h3>" if v.title else "")
        if v.caption:
            parts.append(f"<p class=caption>{html.escape(v.caption)}</p>")
        parts.append(v.fragment())
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>\n<script>\n{bundle_js()}\n</script>\n"
        '</head><body style="font-family: sans-serif; max-width: 1100px; margin: 1em auto">\n'
        f"<h1>{html.escape(title)}</h1>\n{body_html}\n" + "\n".join(parts) + "\n</body></html>\n"
    )


# ---------------------------------------------------------------------------------------------
# Data for the views (one forward pass), saved as views.json
# ---------------------------------------------------------------------------------------------


def mark_p0(str_tokens: list[str]) -> list[str]:
    """Token strings for display, with position 0 marked ``[P0]``."""
    out = [t if t != "" else "\u2205" for t in str_tokens]
    if out:
        out[0] = P0_MARK + out[0]
    return out


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
    from transformer_lens.utilities import get_act_name

    ids = tokens.reshape(-1)[:max_tokens].unsqueeze(0) if tokens.dim() > 0 else tokens
    n = ids.shape[1]
    if n < 2:
        raise UsageError("a view needs a prompt of at least 2 tokens")
    if len(str_tokens) < n:
        raise UsageError(f"{len(str_tokens)} token strings for {n} tokens")
    n_layers = model.cfg.n_layers
    patterns: dict[int, Tensor] = {}
    norms: dict[str, Tensor] = {}

    def on_pattern(pattern: Tensor, hook) -> None:
        patterns[hook.layer()] = pattern[0].detach().float()

    def on_resid(resid: Tensor, hook) -> None:
        key = "embed" if hook.name.endswith("hook_resid_pre") else f"L{hook.layer()}"
        norms[key] = resid[0].detach().float().norm(dim=-1)

    hooks = [(get_act_name("pattern", layer), on_pattern) for layer in range(n_layers)]
    hooks += [(get_act_name("resid_post", layer), on_resid) for layer in range(n_layers)]
    hooks.append((get_act_name("resid_pre", 0), on_resid))
    with torch.inference_mode():
        model.run_with_hooks(ids, return_type=None, fwd_hooks=hooks)

    scores = torch.stack([patterns[layer][:, 1:, 0].mean(dim=-1) for layer in range(n_layers)])
    k = min(top_k, scores.numel())
    flat = torch.topk(scores.flatten(), k).indices.tolist()
    picked = sorted((i // scores.shape[1], i % scores.shape[1]) for i in flat)
    labels = ["embed"] + [f"L{layer}" for layer in range(n_layers)]
    return {
        "schema": "p0-circuits views/1",
        "model": model_name,
        "bos": bos,
        "n_tokens": n,
        "tokens": list(str_tokens[:n]),
        "token_ids": ids[0].tolist(),
        "heads": [
            {"layer": la, "head": h, "attn_to_p0": round(float(scores[la, h]), 4)}
            for la, h in picked
        ],
        "patterns": [_round(patterns[la][h]) for la, h in picked],
        "norm_labels": labels,
        "norms": [_round(norms[label], 2) for label in labels],
    }


def write_view_data(out_dir: str | os.PathLike, data: dict[str, Any]) -> Path:
    return write_json(Path(out_dir) / VIEWS_FILE, data)


def load_view_data(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(out_dir) / VIEWS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(
            f"{path} is not valid JSON ({err.msg}); delete it or rerun render --views"
        ) from None
    if not isinstance(data, dict) or "patterns" not in data or "tokens" not in data:
        raise UsageError(
            f"{path} is not a p0-circuits views file; delete it or rerun render --views"
        )
    return data


# ---------------------------------------------------------------------------------------------
# The views
# ---------------------------------------------------------------------------------------------


def sink_heads_view(data: dict[str, Any]) -> View:
    """``AttentionHeads``: the patterns of the strongest sink heads, P0 marked ``[P0]``."""
    names = [f"L{h['layer']}H{h['head']} (to P0 {h['attn_to_p0']:.2f})" for h in data["heads"]]
    return View(
        "AttentionHeads",
        {
            "attention": data["patterns"],
            "tokens": mark_p0(data["tokens"]),
            "attentionHeadNames": names,
            "maxValue": 1.0,
            "minValue": 0.0,
            "maskUpperTri": True,
        },
        title=f"Sink heads on one prompt ({data.get('model') or 'model'}, "
        f"{'BOS' if data.get('bos') else 'no BOS'}, {data['n_tokens']} tokens)",
        caption="Attention patterns (query rows, key columns) of the heads that attend most to "
        "position 0; the first column is P0. Click a head to enlarge it.",
    )


def p0_norm_view(data: dict[str, Any]) -> View:
    """``ColoredTokensMulti``: residual norm per token after the embedding and each block."""
    values = [list(col) for col in zip(*data["norms"], strict=True)]  # [T, n_layers + 1]
    return View(
        "ColoredTokensMulti",
        {"tokens": mark_p0(data["tokens"]), "values": values, "labels": data["norm_labels"]},
        title="Residual-stream norm per token (P0 is marked [P0])",
        caption="Hover a layer label to colour the tokens by their l2 norm after that block "
        "(embed = before block 0); hover a token for all its values.",
    )


def recognition_view(metrics: dict[str, Any], max_tokens: int = 64) -> View | None:
    """``ColoredTokensMulti`` from ``sink_metrics.json``: the layer-0 recognition signal."""
    rec = metrics.get("recognition") or {}
    tokens = metrics.get("tokens")
    sp = rec.get("layer0_sum_p_squared")
    an = rec.get("layer0_attn_out_norm")
    if not tokens or sp is None or an is None:
        return None
    n = min(len(tokens), len(sp), len(an), max_tokens)
    values = [[_round(float(sp[i])), _round(float(an[i]))] for i in range(n)]
    return View(
        "ColoredTokensMulti",
        {
            "tokens": mark_p0(tokens[:n]),
            "values": values,
            "labels": ["layer-0 sum p^2", "layer-0 attn-out norm"],
        },
        title=f"Recognition signal, first {n} tokens",
        caption="Layer 0: sum_i p_i^2 of each query (mean over heads; exactly 1 at P0, which can "
        "only attend to itself) and the norm of the attention output at each position.",
    )


def attention_view(
    zm, text: str, *, bos: bool | None = None, top_k: int = 6, max_tokens: int = 32
) -> View:
    """Notebook shortcut: the sink-head view of ``text`` on a ``ZooModel``."""
    data = view_data_for_text(zm, text, bos=bos, top_k=top_k, max_tokens=max_tokens)
    return sink_heads_view(data)


def view_data_for_text(
    zm, text: str, *, bos: bool | None = None, top_k: int = 6, max_tokens: int = 32
) -> dict[str, Any]:
    bos = zm.natural_bos if bos is None else bos
    return view_data_for_ids(zm, zm.encode(text, bos=bos), bos=bos, top_k=top_k, max_tokens=max_tokens)


def view_data_for_ids(
    zm, ids, *, bos: bool, top_k: int = 6, max_tokens: int = 32
) -> dict[str, Any]:
    """``compute_view_data`` for a zoo model's token ids ``[1, pos]`` (first ``max_tokens``)."""
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


__all__ = [
    "view_data_for_ids",
    "View",
    "attention_view",
    "bundle_js",
    "compute_view_data",
    "load_view_data",
    "mark_p0",
    "p0_norm_view",
    "page_html",
    "recognition_view",
    "sink_heads_view",
    "view_data_for_text",
    "write_view_data",
]
