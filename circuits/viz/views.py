"""circuitsvis views of the P0 sink, inline in Jupyter and saved as offline HTML.

Three views, each built from plain data (lists of numbers; ``circuits.viz.view_data``) so that
a report can be rebuilt from saved JSON without rerunning the model:

* :func:`sink_heads_view` -- ``AttentionHeads``: the attention patterns of the heads that attend
  most to position 0 on one prompt (data from ``compute_view_data``, saved as
  ``views.json``);
* :func:`p0_norm_view` -- ``ColoredTokensMulti``: the residual-stream norm of every token after
  the embedding and after each block; P0 outgrows every other position within two blocks;
* :func:`recognition_view` -- ``ColoredTokensMulti`` from ``sink_metrics.json`` alone: layer-0
  sum_i p_i^2 (exactly 1 at P0) and the layer-0 attention-output norm per token.

Position 0 is marked in every view by prefixing its token with ``[P0]``.

Offline: circuitsvis's default ``str()`` of a view loads its JavaScript from a CDN (unpkg).
Here the bundle shipped inside the circuitsvis wheel (``circuitsvis/dist/cdn/iife.js``, ~1.3 MB)
is inlined instead: once per page (``circuits.viz.html.page``), once per view in Jupyter and
in :meth:`View.save`. No page written by this module fetches anything.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from circuits.core.atomic import write_text
from circuits.core.errors import UsageError
from circuits.viz.html import esc, page

P0_MARK = "[P0]"
NO_VIEWS_NOTE = (
    "No views.json here: run `p0-circuits render DIR --views` (one forward pass of the "
    "model named in the JSON; for a model built in Python, circuits.viz.build_report(DIR, "
    "zm=model)) to add the attention patterns of the sink heads."
)
VIEW_ELEMENTS = ("AttentionHeads", "AttentionPatterns", "ColoredTokens", "ColoredTokensMulti")
# circuitsvis writes the tokens of these elements into the page as HTML (innerHTML); the others
# draw them as text on a canvas, where an escaped token would show its entities.
TOKENS_AS_HTML = frozenset({"ColoredTokens", "ColoredTokensMulti"})
_ids = itertools.count()
# ColoredTokensMulti pads its bottom by 20 px per label to make room for its hover table
# (paddingBottom: 20 * n_labels): ~620 px of blank space for a 30-layer model's norm view. The
# table is absolutely positioned, so it still shows (over what follows) without the padding.
UNPADDED_ELEMENTS = frozenset({"ColoredTokensMulti"})


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
    """Nested lists of floats rounded (keeps views.json and pages small)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, (list, tuple)):
        return [_round(v, digits) for v in value]
    return value


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
            f"{_js_json(self.displayed_props())});"
        )

    def displayed_props(self) -> dict[str, Any]:
        """``props`` as circuitsvis must receive them: token strings escaped for the elements
        that write tokens as HTML, so ``<bos>``, ``</s>`` or ``&amp;`` show as their text instead
        of vanishing into the page as markup."""
        if self.element not in TOKENS_AS_HTML or "tokens" not in self.props:
            return self.props
        return {**self.props, "tokens": [esc(t, quote=False) for t in self.props["tokens"]]}

    def _style(self) -> str:
        """A ``<style>`` for this view's ``<div>`` alone, if its element needs one."""
        if self.element not in UNPADDED_ELEMENTS:
            return ""
        return f"<style>#{self.dom_id} > div {{ padding-bottom: 0 !important; }}</style>\n"

    def fragment(self) -> str:
        """``<div>`` + a classic ``<script>``: for a page that already loaded the bundle once."""
        return (
            f'{self._style()}<div class="p0-view" id="{esc(self.dom_id)}" '
            f'data-element="{self.element}"></div>\n'
            f"<script>{self.render_call()}</script>"
        )

    def standalone(self) -> str:
        """``<div>`` + a module script holding the bundle itself (Jupyter cells, lone views)."""
        return (
            f'{self._style()}<div class="p0-view" id="{esc(self.dom_id)}" '
            f'data-element="{self.element}" style="margin: 10px 0;"></div>\n'
            f'<script type="module">\n{bundle_js()}\n{self.render_call()}\n</script>'
        )

    def _repr_html_(self) -> str:  # Jupyter: always the offline version
        head = f"<h4>{esc(self.title)}</h4>" if self.title else ""
        tail = f"<p><small>{esc(self.caption)}</small></p>" if self.caption else ""
        return head + self.standalone() + tail

    def save(self, path: str | os.PathLike) -> Path:
        """A complete HTML page with this view that opens offline (written atomically): the
        view's title is the page's heading, its caption below it."""
        caption = f"<p class=caption>{esc(self.caption)}</p>" if self.caption else ""
        body = caption + self.fragment()
        return write_text(path, page(self.title or self.element, [body], script=bundle_js()))


def views_section(views: list[View], note: str = "") -> str:
    """A page section holding ``views`` (each with its title and caption) or ``note``."""
    if not views:
        return f"<h2>Interactive views</h2><p class=caption>{esc(note)}</p>" if note else ""
    parts = ["<h2>Interactive views (circuitsvis)</h2>"]
    for v in views:
        parts.append(f"<h3>{esc(v.title)}</h3>")
        if v.caption:
            parts.append(f"<p class=caption>{esc(v.caption)}</p>")
        parts.append(v.fragment())
    return "\n".join(parts)


def mark_p0(str_tokens: list[str]) -> list[str]:
    """Token strings for display, with position 0 marked ``[P0]`` (HTML escaping, where an
    element needs it, is :meth:`View.displayed_props`'s job)."""
    out = [t if t != "" else "\u2205" for t in str_tokens]
    if out:
        out[0] = P0_MARK + out[0]
    return out


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
