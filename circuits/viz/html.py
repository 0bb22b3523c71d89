"""The one page builder: self-contained HTML pages (reports and saved views) that open offline.

A page is a title, sections of HTML, and optionally one inline script (the circuitsvis bundle,
placed once in the head). Every string that came from data (token text, model names, file
names) is escaped with :func:`esc` before it reaches HTML.
"""

from __future__ import annotations

import base64
import html
from typing import Any

esc = html.escape

CSS = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee} th{background:#f0f0f0}
td.l,th.l{text-align:left} figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555} .verdict{background:#f6f8fa;border-left:4px solid #1f77b4;padding:.6em 1em}
code{background:#f3f3f3;padding:0 3px} .caption{font-size:.85em;color:#555} details{margin:.5em 0}
.p0-view{border:1px solid #eee;padding:4px;min-height:40px}
"""

FOOTER = (
    "<p class=caption>Written by p0-circuits; rebuild with <code>p0-circuits render DIR</code>. "
    "Self-contained: no network access needed.</p>"
)


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number formatted for a table cell ("–" for None), anything else escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            return str(value)
    return esc(str(value))


def table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A table; ``rows`` hold HTML (already escaped), the first ``left`` columns left-aligned."""
    head = "".join(
        f"<th{' class=l' if i < left else ''}>{esc(h)}</th>" for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=l' if i < left else ''}>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def img(data: bytes, mime: str, alt: str, caption: str) -> str:
    """A figure embedded as a data URI, with its caption."""
    b64 = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img alt="{esc(alt)}" src="data:{mime};base64,{b64}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def page(
    title: str, sections: list[str], *, script: str | None = None, footer: str | None = None
) -> str:
    """A whole page: ``title`` as its heading, then ``sections``; ``script`` (JavaScript, already
    safe inside ``<script>``) is placed once in the head."""
    head_script = f"<script>\n{script}\n</script>\n" if script else ""
    return (
        '<!doctype html>\n<html lang=en><head><meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n{head_script}</head><body>\n"
        f"<h1>{esc(title)}</h1>\n"
        + "\n".join(s for s in sections if s)
        + f"\n{FOOTER if footer is None else footer}\n</body></html>\n"
    )


def provenance_html(data: dict[str, Any]) -> str:
    """The exact model a result describes, the command line that made it, its seed and library
    versions."""
    prov = data.get("provenance") or data
    versions = prov.get("versions") or {}
    cmd = prov.get("command_line")
    vers = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")
    out = []
    if data.get("model_description"):
        source = f" from {esc(data['model_source'])}" if data.get("model_source") else ""
        out.append(f"<p>Model: <b>{esc(data['model_description'])}</b>{source}</p>")
    if cmd:
        out.append(f"<p>Made by <code>{esc(cmd)}</code></p>")
    if vers:
        out.append(f"<p class=caption>seed {esc(str(prov.get('seed')))}; {esc(vers)}</p>")
    return "\n".join(out)
