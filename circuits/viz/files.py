"""Writing figures: PNG/SVG files (atomically) and SVG bytes to embed in a page.

Figure functions never write; this is the one place that turns a ``Figure`` into files.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from circuits.core.atomic import atomic_path


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
