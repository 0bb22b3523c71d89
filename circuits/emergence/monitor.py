"""``P0SinkMonitor``: the paper's convergence signal, measured while a model trains.

The paper ends on a use: the P0 Sink Circuit emerges early and concentrates in the first two
blocks, "suggesting a possible signal for tracking pre-training convergence states". ``trace``
reads that signal back from saved checkpoints; the monitor reads it from the model being
trained, where it is, every ``every`` steps, on one fixed batch of prompts:

* everything ``trace`` records of a checkpoint (``circuits.emergence.checkpoint_metrics``), by
  the same function on the live model: the sink score per layer, ``sink_strength`` (the largest
  sink score of the downstream layers), P0's norm ratio and ``norm_growth_share_l01`` (the share
  of P0's norm growth made in blocks 0-1), where the sink sits, the eval loss;
* ``share_l01_estimate``: the share of the downstream sink carried by blocks 0-1, estimated with
  the P0-stream first pass (``circuits.patching.stream``: one one-token forward per block
  instead of a patched run per component) of the mean-ablation ``trace`` patches exactly; every
  ``exact_every``-th evaluation also runs the exact patching (``ablation_share_l01``, as
  ``trace``), so the estimate is checked as the run goes;
* ``converged``: over the last ``patience`` evaluations (default 5) each part of the signal
  (``sink_strength``, ``share_l01_estimate``, ``norm_growth_share_l01``) has moved within a band
  of ``tolerance`` (default 0.1: these are scores and shares in [0, 1], measured on 32
  sequences, whose evaluation-to-evaluation noise is a few hundredths), *and* there is a sink
  (``sink_strength`` at least ``SINK_FACTOR`` times uniform attention's, as ``discover``
  decides): a run that never forms a sink never converges. ``converged_step`` is the first step
  at which it held. Looking back on a finished run, ``settling_step`` (``circuits.metrics.convergence``) gives the step from which
  a curve stays within 10% of its total change of its final value, the same definition for the
  loss and for the signal.

Each evaluation is one JSON line (``path``) and a flat dict of scalars handed to ``logger`` (the
trainer's own logger: ``Trainer.log``, Lightning's ``log_dict``, TensorBoard, W&B, a print).

On TransformerLens 3 the toolkit's own training run (``p0-circuits train --monitor-every N``)
trains a ``HookedTransformer``: the monitor reads it in place, no copy. A Hugging Face model in
a ``transformers.Trainer`` (``attach``) is converted to a ``HookedTransformer`` at each
evaluation (a second copy of the weights while it is measured: ``benchmarks/bench_monitor.py``
says what that costs); on TransformerLens 4 the bridge wraps the live model instead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxtyping import Int
from torch import Tensor

from circuits.backend import HookedModel
from circuits.circuit.config import DiscoverConfig
from circuits.circuit.steps import SINK_FACTOR
from circuits.core.arguments import Count, Fraction, checked
from circuits.emergence.checkpoint_metrics import measure_checkpoint
from circuits.patching.allocator import keep_freed_memory
from circuits.patching.patcher import Patcher
from circuits.patching.readouts import SinkScore
from circuits.patching.sites import Site
from circuits.patching.stream import EstimateUnavailable, p0_stream_estimate

MONITOR_FILE = "monitor.jsonl"
"""The monitor's file in a training run's folder (``p0-circuits train --monitor-every N``)."""
SIGNAL = ("sink_strength", "share_l01_estimate", "norm_growth_share_l01")
"""The values whose stability is the convergence signal."""
MIN_TOTAL = 0.01
"""Total |effect| below which no share is computed (as ``trace``'s ablation share)."""


def share_l01_estimate(model: HookedModel, patcher: Patcher) -> float | None:
    """The share of the downstream attention to P0 that blocks 0-1 carry: each block's
    attention and MLP output at P0 mean-ablated, estimated by the P0-stream first pass; sum of
    |effect| of blocks 0-1 over the sum of all (None below ``MIN_TOTAL`` or for one layer)."""
    n = model.cfg.n_layers
    if n < 2:
        return None
    kinds = ("attn",) if model.cfg.attn_only else ("attn", "mlp")
    sites = [Site(kind, layer) for layer in range(n) for kind in kinds]
    # the sink score of the same receivers: its effects are attention-to-P0's times (T-1)/T
    # (P0's own query always attends to P0), so the shares are the same
    readout = SinkScore(DiscoverConfig().receiver_layers(n))
    try:
        result = p0_stream_estimate(patcher, sites, readout)
    except EstimateUnavailable:
        return None
    effects = result.effects.abs().tolist()
    total = sum(effects)
    early = sum(e for s, e in zip(sites, effects, strict=True) if s.layer <= 1)
    return early / total if total >= MIN_TOTAL else None


def signal_converged(
    rows: list[dict[str, Any]], patience: int, tolerance: float, n_pos: int
) -> bool:
    """Whether the last row of ``rows`` is converged: there is a sink (its ``sink_strength`` is
    at least ``SINK_FACTOR`` times the sink score of uniform causal attention over ``n_pos``
    positions) and, over the last ``patience`` rows, each value of ``SIGNAL`` moves within a
    band of ``tolerance`` (max - min). A value that is None in some of those rows (a share with
    nothing to share, P0 that never outgrows the rest) is left out of the judgement."""
    recent = rows[-patience:]
    if len(recent) < patience:
        return False
    uniform = sum(1.0 / (q + 1) for q in range(n_pos)) / n_pos
    if recent[-1]["sink_strength"] < SINK_FACTOR * uniform:
        return False
    for key in SIGNAL:
        values = [r.get(key) for r in recent]
        if any(v is None for v in values):
            continue
        if max(values) - min(values) > tolerance:  # type: ignore[type-var, operator]
            return False
    return True


def read_monitor(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a monitor's JSON Lines file (``RUN/monitor.jsonl``), in step order."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["step"])


class P0SinkMonitor:
    """Measure the P0 sink signal of a model while it trains (module docstring).

    ``monitor(model, step, loss)`` in a hand-written loop (it measures when ``step`` is a
    multiple of ``every`` and returns the row, else None); ``monitor.attach(trainer)`` on a
    ``transformers.Trainer``; ``monitor.lightning_callback()`` for PyTorch Lightning."""

    @checked
    def __init__(
        self,
        prompts: Int[Tensor, "batch pos"],
        every: Count = 100,
        *,
        path: str | os.PathLike | None = None,
        bos: bool = False,
        exact_every: Count = 10,
        patience: Count = 5,
        tolerance: Fraction = 0.1,
        logger: Callable[[dict[str, float], int], None] | None = None,
    ) -> None:
        if prompts.ndim != 2 or prompts.shape[1] < 2:
            from circuits.core.errors import UsageError

            raise UsageError(
                f"prompts must be [batch, pos] token ids with pos >= 2, got {tuple(prompts.shape)}"
            )
        keep_freed_memory()  # else glibc's moving mmap threshold slows the training after each
        # evaluation frees its buffers (benchmarks/bench_monitor.py: +10% wall time without it)
        self.prompts, self.every, self.bos = prompts, every, bos
        self.exact_every, self.patience, self.tolerance = exact_every, patience, tolerance
        self.path = None if path is None else Path(path)
        self.logger = logger
        self.history: list[dict[str, Any]] = self._read_back()
        self.converged_step: int | None = next(
            (r["step"] for r in self.history if r.get("converged")), None
        )

    def _read_back(self) -> list[dict[str, Any]]:
        """The rows a resumed run already wrote (a monitor continues the file, never rewrites
        it)."""
        return [] if self.path is None or not self.path.is_file() else read_monitor(self.path)

    def __call__(
        self, model: HookedModel, step: int, loss: float | None = None
    ) -> dict[str, Any] | None:
        if step % self.every or (self.history and step <= self.history[-1]["step"]):
            return None  # not due, or measured before a resume
        return self.measure(model, step, loss)

    def measure(self, model: HookedModel, step: int, loss: float | None = None) -> dict[str, Any]:
        """Measure now (whatever the step), append the row to the history, the file and the
        logger, and return it."""
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            tokens = self.prompts.to(model.cfg.device)
            exact = len(self.history) % self.exact_every == 0
            patcher = Patcher(model, tokens, "mean", progress=False)
            row = measure_checkpoint(model, tokens, bos=self.bos, ablation=exact, patcher=patcher)
            row["share_l01_estimate"] = share_l01_estimate(model, patcher)
        finally:
            model.train(was_training)
        row = {"step": int(step), "train_loss": loss, **row}
        row["converged"] = signal_converged(
            [*self.history, row], self.patience, self.tolerance, int(self.prompts.shape[1])
        )
        if row["converged"] and self.converged_step is None:
            self.converged_step = int(step)
        row["converged_step"] = self.converged_step
        row["seconds"] = round(time.perf_counter() - started, 4)
        self.history.append(row)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(row, allow_nan=False) + "\n")
        if self.logger is not None:
            self.logger(self.scalars(row), int(step))
        return row

    @staticmethod
    def scalars(row: dict[str, Any]) -> dict[str, float]:
        """The row as flat scalars a logger takes (``p0/...``; None left out)."""
        out = {f"p0/{k}": float(row[k]) for k in (*SIGNAL, "eval_loss") if row.get(k) is not None}
        for layer in row["layers"]:
            out[f"p0/sink_score/L{layer['layer']}"] = float(layer["sink_score"])
        if row.get("ablation_share_l01") is not None:
            out["p0/ablation_share_l01"] = float(row["ablation_share_l01"])
        out["p0/converged"] = float(bool(row["converged"]))
        return out

    def attach(self, trainer: Any) -> Any:
        """Add the monitor to a ``transformers.Trainer``: every ``every`` steps it measures the
        trainer's model and logs through ``trainer.log`` (its TensorBoard / W&B / ...)."""
        from circuits.emergence.monitor_callbacks import trainer_callback

        callback = trainer_callback(self, trainer)
        trainer.add_callback(callback)
        return callback

    def lightning_callback(self, get_model: Callable[[Any], Any] | None = None) -> Any:
        """A PyTorch Lightning ``Callback`` (``pip install lightning``); ``get_model(module)``
        gives the model to measure (default: ``module.model``)."""
        from circuits.emergence.monitor_callbacks import lightning_callback

        return lightning_callback(self, get_model)
