"""``trace_run(run_dir)``: every checkpoint of a training run measured on one fixed evaluation
batch drawn from the run's own data source (``DataSource.eval_batch``, its own seed stream,
identical for every checkpoint), with the phases labelled. The result is ``trace.json``.

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

import torch

from circuits.core.conventions import RECORD_FORMATS
from circuits.core.errors import ChecksumError, UsageError
from circuits.core.manifest import sidecar_matches
from circuits.emergence.checkpoint_metrics import measure_checkpoint
from circuits.emergence.phases import PHASES, PhaseCriteria, detect_phases
from circuits.training.checkpoints import (
    METRICS_FILE,
    list_checkpoints,
    load_checkpoint_weights,
    move_model,
    read_run,
)
from circuits.training.data import DataSource
from circuits.training.model import build_model


def _train_losses(run_dir: Path) -> dict[int, float]:
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


def trace_run(
    run_dir: str | os.PathLike,
    *,
    batch_size: int = 32,
    first_k: int = 4,
    criteria: PhaseCriteria | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Measure every checkpoint of a run and label its phases; returns the trace.json dict."""
    criteria = criteria or PhaseCriteria()
    run_dir = Path(run_dir)
    config, meta = read_run(run_dir)
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise UsageError(f"{run_dir} holds no checkpoints; train it first")
    if config.n_ctx <= first_k:
        raise UsageError(f"first_k={first_k} must be below the run's n_ctx={config.n_ctx}")
    tokens = DataSource(config).eval_batch(batch_size).to(device)
    model = move_model(build_model(config, meta["vocab_size"]), torch.device(device))
    train_loss = _train_losses(run_dir)
    iterator = ckpts
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(ckpts, desc=f"trace {run_dir.name}", unit="ckpt")
    checkpoints, skipped = [], []
    for step, path in iterator:
        try:
            model.load_state_dict(load_checkpoint_weights(path))
        except ChecksumError as err:  # never measured: left out, said in the trace and aloud
            warnings.warn(f"{err}; checkpoint {step} is left out of the trace", stacklevel=2)
            skipped.append(step)
            continue
        row: dict[str, Any] = {"step": step, "phase": None, "train_loss": train_loss.get(step)}
        row.update(
            measure_checkpoint(model, tokens, bos=config.bos, first_k=first_k, eps=criteria.eps)
        )
        checkpoints.append(row)
    if not checkpoints:
        raise UsageError(f"{run_dir} holds no intact checkpoint to trace")
    phases = detect_phases(
        [c["sink_strength"] for c in checkpoints],
        [(c["sink_position"], c["jump_layer"]) for c in checkpoints],
        criteria,
    )
    for row, phase in zip(checkpoints, phases, strict=True):
        row["phase"] = phase
    return {
        "format": RECORD_FORMATS["trace"],
        "run": str(run_dir),
        "bos": config.bos,
        "config": config.to_dict(),
        "data_id": meta.get("data_id"),
        "eval": {"batch_size": batch_size, "n_tokens": int(tokens.shape[1]), "first_k": first_k},
        "criteria": asdict(criteria),
        "summary": summarize(checkpoints, criteria),
        "skipped_checkpoints": skipped,
        "checkpoints": checkpoints,
    }
