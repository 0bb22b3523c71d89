"""The report page of a sweep: its figure and a table of every job."""

from __future__ import annotations

from typing import Any

from circuits.core.errors import MissingDataError
from circuits.viz.files import figure_bytes
from circuits.viz.html import esc, fmt, img, page, table
from circuits.viz.sweep_figure import sweep_figure

_STATUS_COLOURS = {"done": "#1a7f37", "failed": "#cf222e", "skipped": "#57606a"}


def _row(r: dict[str, Any]) -> list[str]:
    colour = _STATUS_COLOURS.get(str(r.get("status")), "#57606a")
    return [
        esc(r["id"]),
        f"<b style='color:{colour}'>{esc(str(r.get('status')))}</b>"
        + (f"<br><small>{esc(str(r['reason']))}</small>" if r.get("reason") else ""),
        esc(str(r.get("command"))),
        esc(str(r.get("model")).rsplit("/", 1)[-1]),
        esc("last" if r.get("checkpoint") is None else str(r["checkpoint"])),
        esc(str(r.get("counterfactual") or "")),
        fmt(r.get("sink"), ".3f"),
        esc(", ".join(r.get("circuit") or [])),
        fmt(r.get("kept"), ".0%"),
        fmt(r.get("ablated"), ".0%"),
        fmt(r.get("wall_s"), ".1f"),
        fmt(r.get("peak_rss_mb"), ".0f"),
    ]


def sweep_page(rows: list[dict[str, Any]], spec: dict[str, Any]) -> str:
    """One self-contained page: the figure (when a job finished), every job's row."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    sections = [
        "<p>"
        + esc(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        + f" of {len(rows)} jobs</p>"
    ]
    try:
        svg = figure_bytes(sweep_figure(rows))
        sections.append(
            img(
                svg,
                "image/svg+xml",
                "sweep",
                "Per model and counterfactual: the clean sink and the circuit's kept / ablated "
                "sink per checkpoint (top); each circuit component's exact effect, sink change / "
                "clean sink (blue: patching it lowers the sink), a dot where it is in the circuit.",
            )
        )
    except MissingDataError as err:
        sections.append(f"<p>(no figure: {esc(str(err))})</p>")
    header = ["job", "status", "command", "model", "checkpoint", "counterfactual", "sink",
              "circuit", "kept", "ablated", "wall s", "peak MB"]  # fmt: skip
    sections.append(table(header, [_row(r) for r in rows], left=6))
    sections.append("<details><summary>spec</summary><pre>" + esc(str(spec)) + "</pre></details>")
    footer = (
        "<p class=caption>Made by p0-circuits from the jobs' folders; re-running "
        "<code>p0-circuits sweep SPEC --out DIR</code> rewrites it (finished jobs are skipped). "
        "Self-contained: no network access needed.</p>"
    )
    return page("P0 sink circuit sweep", sections, footer=footer)
