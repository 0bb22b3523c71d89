"""``trace_run(run_dir)`` / ``trace_series(series)``: every checkpoint of a training run (or of
any ``CheckpointSeries``: a folder of Hugging Face checkpoints, a TransformerLens official model
with checkpoints) measured on one fixed evaluation batch, identical for every checkpoint, with
the phases labelled. The result is ``trace.json``.

What is measured per checkpoint: ``circuits.emergence.checkpoint_metrics``; the phases:
``circuits.emergence.phases``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from circuits.core.conventions import RECORD_FORMATS
from circuits.core.errors import UsageError
from circuits.core.manifest import sidecar_matches
from circuits.emergence.checkpoint_metrics import measure_checkpoint
from circuits.emergence.phases import PHASES, PhaseCriteria, detect_phases
from circuits.emergence.series import CheckpointSeries, each_model, run_series
from circuits.training.checkpoints import METRICS_FILE


def train_losses(run_dir: Path) -> dict[int, float]:
    """The training loss by step from ``metrics.json`` (empty, with a warning, if damaged)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return {}
    if not sidecar_matches(path):
        warnings.warn(
            f"{path} does not match its checksum; training losses are left out", stacklevel=2
        )
        return {}
    return {row["step"]: row["loss"] for row in json.loads(path.read_text())["loss"]}


def summarize(checkpoints: list[dict[str, Any]], criteria: PhaseCriteria) -> dict[str, Any]:
    """The trace's summary: the final checkpoint's numbers and where each phase starts."""
    final = checkpoints[-1]
    layers = final["layers"]
    return {
        "final_step": final["step"],
        "final_phase": final["phase"],
        "phase_start_step": {
            p: next((c["step"] for c in checkpoints if c["phase"] == p), None) for p in PHASES
        },
        "final_sink_score": [layer["sink_score"] for layer in layers],
        "final_attn_to_p0": [layer["attn_to_p0"] for layer in layers],
        "final_p0_norm_ratio": [layer["p0_norm_ratio"] for layer in layers],
        "final_sink_position": final["sink_position"],
        "final_jump_layer": final["jump_layer"],
        "final_norm_growth_share_l01": final["norm_growth_share_l01"],
        "final_ablation_share_l01": final["ablation_share_l01"],
        "sink_layers_over_eps": [
            layer["layer"] for layer in layers if layer["sink_score"] > criteria.eps
        ],
        "first_step_with_sink": next(
            (c["step"] for c in checkpoints if c["sink_strength"] > criteria.eps), None
        ),
    }


def trace_series(
    series: CheckpointSeries,
    *,
    first_k: int = 4,
    criteria: PhaseCriteria | None = None,
    progress: bool = True,
    train_loss: dict[int, float] | None = None,
) -> dict[str, Any]:
    """Measure every checkpoint of ``series`` on its evaluation batch and label the phases;
    returns the trace.json dict (without the run-specific keys ``trace_run`` adds)."""
    criteria = criteria or PhaseCriteria()
    if series.tokens.shape[1] <= first_k:
        raise UsageError(
            f"first_k={first_k} must be below the evaluation length {series.tokens.shape[1]}"
        )
    train_loss = train_loss or {}
    checkpoints: list[dict[str, Any]] = []
    skipped: list[int] = []
    for step, model in each_model(series, desc="trace", progress=progress, skipped=skipped):
        row: dict[str, Any] = {"step": step, "phase": None, "train_loss": train_loss.get(step)}
        row.update(
            measure_checkpoint(
                model, series.tokens, bos=series.bos, first_k=first_k, eps=criteria.eps
            )
        )
        checkpoints.append(row)
    if not checkpoints:
        raise UsageError(f"{series.source} holds no intact checkpoint to trace")
    phases = detect_phases(
        [c["sink_strength"] for c in checkpoints],
        [(c["sink_position"], c["jump_layer"]) for c in checkpoints],
        criteria,
    )
    for row, phase in zip(checkpoints, phases, strict=True):
        row["phase"] = phase
    return {
        "format": RECORD_FORMATS["trace"],
        "source": series.source,
        "bos": series.bos,
        **series.info,
        "eval": {
            "batch_size": int(series.tokens.shape[0]),
            "n_tokens": int(series.tokens.shape[1]),
            "first_k": first_k,
        },
        "criteria": asdict(criteria),
        "summary": summarize(checkpoints, criteria),
        "skipped_checkpoints": skipped,
        "checkpoints": checkpoints,
    }


def trace_run(
    run_dir: str | os.PathLike,
    *,
    batch_size: int = 32,
    first_k: int = 4,
    criteria: PhaseCriteria | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Measure every checkpoint of a training run and label its phases (trace.json)."""
    run_dir = Path(run_dir)
    series = run_series(run_dir, batch_size=batch_size, device=device)
    trace = trace_series(
        series,
        first_k=first_k,
        criteria=criteria,
        progress=progress,
        train_loss=train_losses(run_dir),
    )
    return {"run": str(run_dir), **trace}
