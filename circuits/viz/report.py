"""``report.html``: one self-contained page per result directory, rebuilt from its JSON alone.

The kinds of directory are those of ``circuits.core.records.result_kind`` (measure, discover,
compare). The page embeds everything (figures as SVG data URIs, the circuitsvis bundle inlined
once, tables of the numbers): it opens offline and can be mailed as one file. The static figures
are also written next to it as PNG + SVG. ``views.json`` (``circuits.viz.view_data``), when
present, adds the attention patterns of the sink heads and the per-token residual norms; with a
loaded model, :func:`build_report` computes it from the saved tokens first (one forward pass).

A figure whose data the record lacks (``MissingDataError``) is replaced by a one-line note
saying what is missing; any other error propagates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from circuits.circuit.record import DiscoveryRecord
from circuits.circuit.save import save_discovery
from circuits.core.atomic import write_json, write_text
from circuits.core.conventions import (
    CIRCUIT_GRAPHML,
    CIRCUIT_JSON,
    MEASURE_FILE,
    PATCHING_FILE,
    RECORD_FORMATS,
    REPORT_FILE,
    VIEWS_FILE,
)
from circuits.core.errors import UsageError
from circuits.core.manifest import write_manifest
from circuits.core.records import RECORD_FILES, finite, load_measure, load_result, result_kind
from circuits.viz.discover_page import discover_page
from circuits.viz.files import FigureCollector
from circuits.viz.html import page
from circuits.viz.measure_pages import compare_page, measure_page
from circuits.viz.view_data import view_data_for_ids, write_view_data
from circuits.viz.views import bundle_js


def build_report(
    out_dir: str | os.PathLike,
    *,
    zm=None,
    write_figures: bool = True,
    top_k: int = 6,
    view_tokens: int = 32,
) -> Path:
    """Write ``out_dir/report.html`` (atomically) from the JSON in ``out_dir``; return its path.

    ``zm`` (a loaded ``ZooModel`` of the model that made the result): compute ``views.json``
    first from the saved tokens (one forward pass), so the page holds the sink heads' attention
    patterns. Without it, an existing ``views.json`` is used and the model is never run.
    ``write_figures``: also write the static figures next to the report as PNG + SVG.
    """
    path = Path(out_dir)
    kind = result_kind(path)
    if kind != "compare":  # every file read below is checked against the manifest first
        load_result(path, kind, CIRCUIT_JSON, CIRCUIT_GRAPHML, VIEWS_FILE)
    if zm is not None and kind != "compare":
        from circuits.zoo.model import as_zoo_model  # torch only when views are computed

        zm = as_zoo_model(zm)
        write_views(path, zm, top_k=top_k, view_tokens=view_tokens)
        write_manifest(path)
    figs = FigureCollector(path, write_figures)
    make_page = {"measure": measure_page, "discover": discover_page, "compare": compare_page}[kind]
    title, sections, views = make_page(path, figs)
    script = bundle_js() if views else None
    report = write_text(path / REPORT_FILE, page(title, sections, script=script))
    if kind != "compare":  # the folder's checksums now cover the files just written too
        write_manifest(path)
    return report


def write_result(
    out_dir: str | os.PathLike,
    kind: str,
    record: dict[str, Any] | DiscoveryRecord,
    *,
    graph=None,
    zm=None,
    overwrite: bool = False,
) -> Path:
    """Write a ``measure`` or ``discover`` result folder: the record (with its ``format``, NaN as
    null), for a discovery the circuit graph files, the manifest of checksums, and the report
    (with ``zm``: views too). The one way results are saved, by the CLI and in notebooks.

    All or nothing (``circuits.core.outputs``): everything is written into a hidden sibling and
    renamed onto ``out_dir`` at the end, so a failure (a prompt that does not tokenize for the
    views, say) leaves no ``out_dir``; an existing non-empty ``out_dir`` is refused unless
    ``overwrite``, then replaced whole. Returns the path of ``out_dir/report.html``."""
    from circuits.core.outputs import output_dir

    with output_dir(out_dir, overwrite=overwrite) as tmp:
        write_result_files(tmp, kind, record, graph=graph, zm=zm)
    return Path(out_dir) / REPORT_FILE


def write_result_files(
    folder: str | os.PathLike,
    kind: str,
    record: dict[str, Any] | DiscoveryRecord,
    *,
    graph=None,
    zm=None,
) -> Path:
    """What :func:`write_result` writes, into ``folder`` as it is (for a caller that stages its
    own output folder, as the CLI does); returns the report's path."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    if graph is not None:
        save_discovery(path, record, graph)
    else:
        data = record.to_json() if isinstance(record, DiscoveryRecord) else record
        write_json(path / RECORD_FILES[kind], finite({"format": RECORD_FORMATS[kind], **data}))
        write_manifest(path)
    return build_report(path, zm=zm)


def saved_prompt(out_dir: str | os.PathLike, zm) -> tuple[Any, bool]:
    """The first prompt of a result directory as token ids ``[1, pos]`` and its BOS flag,
    re-tokenized from the saved arguments (measure) or read from ``patching.json`` (discover)."""
    import torch

    from circuits.prompts import read_text

    path = Path(out_dir)
    kind = result_kind(path)
    if kind == "discover":
        found = DiscoveryRecord.of(load_result(path, "discover"), str(path / PATCHING_FILE))
        if not found.tokens:
            raise UsageError(
                f"{path / PATCHING_FILE} holds no prompt tokens; rerun p0-circuits discover"
            )
        return torch.tensor([found.tokens[0]], dtype=torch.long), bool(found.bos)
    if kind != "measure":
        raise UsageError(f"{path} holds several runs; compute views in each sub-directory")
    m = load_measure(path)
    args = m.get("args") or {}
    bos = bool(m.get("bos"))
    if m.get("token_ids"):  # a record made in Python may carry the measured prompt's ids
        return torch.tensor([m["token_ids"]], dtype=torch.long), bos
    try:
        ids = zm.encode(read_text(args.get("text")), bos=bos)[:, : m.get("n_tokens")]
    except UsageError as err:
        raise UsageError(
            f"the views re-tokenize the measured text ({MEASURE_FILE}'s args.text), which model "
            f"{zm.name} cannot tokenize ({err}); put the measured prompt's ids in the record as "
            "'token_ids', or save it without a model (no views)"
        ) from None
    saved = m.get("tokens") or []
    if saved and zm.str_tokens(ids[0])[: len(saved)] != saved[: ids.shape[1]]:
        raise UsageError(
            f"the text of {path / MEASURE_FILE} no longer tokenizes to its saved tokens "
            f"(model {zm.name}); rerun p0-circuits measure"
        )
    return ids, bos


def write_views(out_dir: str | os.PathLike, zm, *, top_k: int = 6, view_tokens: int = 32) -> Path:
    """Compute ``views.json`` for a measure or discover directory (one forward pass)."""
    ids, bos = saved_prompt(out_dir, zm)
    data = view_data_for_ids(zm, ids, bos=bos, top_k=top_k, max_tokens=view_tokens)
    return write_view_data(out_dir, data)


def model_name_of(out_dir: str | os.PathLike) -> str:
    """The model a result directory was made with (its record's ``model``)."""
    path = Path(out_dir)
    kind = result_kind(path)
    if kind == "measure":
        return str(load_measure(path)["model"])
    if kind == "discover":
        return str(DiscoveryRecord.of(load_result(path, "discover")).model)
    raise UsageError(f"{path} holds several runs; give one of its sub-directories")
