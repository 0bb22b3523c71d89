"""Writing figures: PNG/SVG files (atomically) and SVG bytes to embed in a page.

Figure functions never write; this is the one place that turns a ``Figure`` into files.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from circuits.core.atomic import atomic_path
from circuits.core.errors import MissingDataError
from circuits.viz.html import esc, img


def save_figure(
    fig: Figure,
    stem: str | Path,
    formats: tuple[str, ...] = ("png", "svg"),
    *,
    rendered: dict[str, bytes] | None = None,
) -> list[Path]:
    """Write ``fig`` as ``stem.png`` / ``stem.svg`` (atomically); returns the paths written.
    ``rendered``: bytes already made by ``figure_bytes`` for some formats, written as they are
    (a figure is rendered once per format)."""
    written = []
    for fmt in formats:
        target = Path(f"{stem}.{fmt}")
        data = (rendered or {}).get(fmt) or figure_bytes(fig, fmt)
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(data)
        written.append(target)
    return written


def figure_bytes(fig: Figure, fmt: str = "svg") -> bytes:
    """The figure as SVG (or PNG) bytes, for embedding in a page."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=130, bbox_inches="tight")
    return buf.getvalue()


class FigureCollector:
    """Collects a page's figures: embeds each as SVG and (``write_files``) writes it next to the
    report as PNG + SVG."""

    def __init__(self, out_dir: Path, write_files: bool) -> None:
        self.out_dir, self.write_files = out_dir, write_files
        self.written: list[Path] = []
        self.html: list[str] = []

    def add(self, make: Callable[[], Figure], stem: str | None, caption: str) -> None:
        try:
            fig = make()
        except MissingDataError as err:
            name = esc(caption.split(":")[0])
            self.html.append(f"<p class=caption>({name}: not available: {esc(str(err))})</p>")
            return
        svg = figure_bytes(fig)
        if stem and self.write_files:
            self.written += save_figure(fig, self.out_dir / stem, rendered={"svg": svg})
        self.html.append(img(svg, "image/svg+xml", stem or "figure", caption))
