"""The P0 Sink Circuit over training: ``discover`` at every checkpoint of a series.

At each checkpoint, on the same prompts (the first ``n_prompts`` rows of the series' evaluation
batch; with the ``shift`` counterfactual cut to ``n_ctx - 1`` tokens so that it fits), the full
discovery pipeline (``circuits.circuit.discover``) runs with every component
patched exactly; the summary per checkpoint is

* ``clean_sink``: the sink score over the receiver layers (Gu et al.'s alpha_0, the discover
  metric);
* ``effects``: every component's exact patching effect at P0, sink change / clean sink
  (negative: the component carries the sink);
* ``circuit``: the components discover kept (core and backups), ``kept`` / ``ablated`` /
  ``floor``: the sink with only the circuit kept, with it ablated, and with every P0 component
  ablated, as fractions of the clean sink;
* ``sufficient``: whether ``kept`` reaches the discover config's ``sufficiency`` (0.8).

``summary`` (over the checkpoints with a sink, clean sink > eps): the first such checkpoint and
the component that carries most of the sink there, the first checkpoint at which each component
joins the circuit, and the checkpoints at which the circuit is sufficient.
"""

from __future__ import annotations

from typing import Any

from circuits.circuit.config import DiscoverConfig
from circuits.circuit.discover import discover
from circuits.circuit.record import DiscoveryRecord
from circuits.core.conventions import DEFAULT_EPS
from circuits.emergence.series import CheckpointSeries, each_model

FORMAT = "p0-circuits/circuit-over-training/1"


def _row(step: int, record: DiscoveryRecord, sufficiency: float) -> dict[str, Any]:
    faith = record.faithfulness
    tables = [t for t in (record.components, record.experts) if t is not None]
    effects = {  # components, and the experts of the MoE blocks discover descended into
        r.name: float(r.relative) for t in tables for r in t.effects if r.relative is not None
    }
    kept = None if faith is None else faith.kept
    return {
        "step": step,
        "clean_sink": record.clean_sink(),
        "effects": effects,
        "circuit": list(record.circuit or []),
        "kept": kept,
        "ablated": None if faith is None else faith.ablated,
        "floor": None if faith is None else faith.floor,
        "sufficient": kept is not None and bool(record.circuit) and kept >= sufficiency,
        "verdict": record.verdict,
    }


def summarize(rows: list[dict[str, Any]], eps: float) -> dict[str, Any]:
    """When each component joins the circuit, when the circuit becomes sufficient, and when a
    sink is first present. Only checkpoints with a sink (clean sink > ``eps``) count for the
    circuit: before that, "keeping" a near-uniform attention is trivially sufficient.
    ``carrier_at_first_sink``: the component whose patch lowers the sink most there."""
    with_sink = [r for r in rows if r["clean_sink"] > eps]
    joins: dict[str, int] = {}
    for row in with_sink:
        for name in row["circuit"]:
            joins.setdefault(name, row["step"])
    first = with_sink[0] if with_sink else None
    carrier = None
    if first is not None and first["effects"]:
        carrier = min(first["effects"], key=lambda n: first["effects"][n])
    return {
        "first_step_with_sink": first["step"] if first else None,
        "carrier_at_first_sink": carrier,
        "first_step_in_circuit": joins,
        "first_step_sufficient": next((r["step"] for r in with_sink if r["sufficient"]), None),
        "sufficient_at": [r["step"] for r in with_sink if r["sufficient"]],
        "final_circuit": rows[-1]["circuit"],
    }


def circuit_over_training(
    series: CheckpointSeries,
    *,
    n_prompts: int = 8,
    config: DiscoverConfig | None = None,
    eps: float = DEFAULT_EPS,
    progress: bool = True,
) -> dict[str, Any]:
    """``discover`` at every checkpoint of ``series`` (see the module docstring)."""
    config = config or DiscoverConfig(exact_top_k=None, progress=False)
    tokens = series.tokens[:n_prompts]
    if config.counterfactual.startswith(
        "shift"
    ):  # it runs the prompt one position later: room for it
        n_ctx = series.load(series.steps[0]).cfg.n_ctx
        tokens = tokens[:, : min(tokens.shape[1], n_ctx - 1)]
    rows: list[dict[str, Any]] = []
    skipped: list[int] = []
    desc = "circuit over training"
    for step, model in each_model(series, desc=desc, progress=progress, skipped=skipped):
        found = discover(model, tokens, config, model_name=f"{series.source}@{step}")
        rows.append(_row(step, found.result, config.sufficiency))
    return {
        "format": FORMAT,
        "source": series.source,
        "bos": series.bos,
        "n_prompts": int(tokens.shape[0]),
        "n_tokens": int(tokens.shape[1]),
        "discover_config": config.to_dict(),
        "eps": eps,
        "summary": summarize(rows, eps) if rows else None,
        "skipped_checkpoints": skipped,
        "checkpoints": rows,
    }
