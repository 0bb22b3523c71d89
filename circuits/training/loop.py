"""The training loop: train (or resume) a run to ``config.steps``, with checkpoints and exact resume.

The point of training here is to watch the P0 sink circuit form (see ``circuits.emergence``), so
a run is built for exact replay:

* **One config dataclass** (``TrainConfig``) holds everything that changes a number. It is
  written to ``RUN_DIR/run.json`` (with provenance) before the first step.
* **Batches are pure functions of (seed, step)** (``circuits.training.data``): the data position of a
  run is its step counter, nothing else.
* **Checkpoints at log-spaced steps** (``checkpoint_steps``): ``RUN_DIR/checkpoints/
  step_0000000.pt`` hold the model weights only (what a trace reads). Alongside,
  ``RUN_DIR/state/state_XXXXXXX.pt`` hold the full training state (weights, AdamW state, torch
  RNG state, step, loss history); the newest two are kept. Every file is written to a temporary
  name and renamed (atomic on POSIX), so a kill leaves no half-written file (a hidden temporary
  one at most, removed when the run resumes), and every file loads with
  ``torch.load(..., weights_only=True)``. ``metrics.json`` (the training loss every 10 steps) is
  rewritten atomically with each state file.
* **Resume**: ``train(config, out)`` on a directory that already holds a run with the same config
  continues from the newest readable state file; one that fails to load (truncated, corrupted) is
  skipped with a warning and the previous one is used. On CPU the continuation is bitwise
  identical to an uninterrupted run (no dropout; deterministic batches; same thread count).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuits.backend import HookedModel
from circuits.core.atomic import write_json
from circuits.core.conventions import RECORD_FORMATS, RUN_FILE
from circuits.core.errors import UsageError
from circuits.core.manifest import SIDECAR, write_sidecar
from circuits.training.checkpoints import (
    CKPT_DIR,
    KEEP_STATES,
    METRICS_FILE,
    STATE_DIR,
    device_of,
    listed,
    load_latest_state,
    move_model,
    read_run,
    rng_state,
    save_torch,
    set_rng_state,
)
from circuits.training.config import TrainConfig
from circuits.training.data import DataSource
from circuits.training.model import build_model, checkpoint_steps, lr_at, make_optimizer


@dataclass
class TrainResult:
    run_dir: Path
    model: HookedModel
    step: int
    resumed_from: int | None
    losses: list[tuple[int, float]]


def _prepare_run_dir(
    run_dir: Path, config: TrainConfig, data: DataSource, provenance: dict
) -> None:
    """Create the folders, drop temporary files a kill left behind, and write ``run.json`` (or
    check that the one there has the same config: a run resumes only with its own config). A
    folder whose run never saved a state (it failed before its first step) holds nothing to
    lose: its ``run.json`` is replaced by the new config's."""
    for folder in (run_dir, run_dir / CKPT_DIR, run_dir / STATE_DIR):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    run_file = run_dir / RUN_FILE
    started = bool(listed(run_dir / STATE_DIR, "state_") or listed(run_dir / CKPT_DIR, "step_"))
    if run_file.exists() and started:
        saved, _ = read_run(run_dir)
        if saved.to_dict() != config.to_dict():
            raise UsageError(
                f"{run_dir} already holds a run with a different config; use the same config to "
                "resume, a new --out, or --overwrite to start it again"
            )
        return
    write_json(
        run_file,
        {
            "format": RECORD_FORMATS["run"],
            "config": config.to_dict(),
            "vocab_size": data.vocab_size,
            "bos_token_id": data.bos_token_id,
            "data_id": data.data_id,
            "provenance": provenance,
        },
    )
    write_sidecar(run_file)


class _Run:
    """One run's model, optimiser, loss history and files."""

    def __init__(self, config: TrainConfig, run_dir: Path, vocab_size: int, dev: torch.device):
        self.config, self.run_dir = config, run_dir
        self.model = move_model(build_model(config, vocab_size), dev)
        self.opt = make_optimizer(self.model, config)
        self.ckpt_steps = set(checkpoint_steps(config.steps, config.n_checkpoints))
        self.losses: list[tuple[int, float]] = []
        self.step = 0
        self.resumed_from: int | None = None

    def resume(self) -> None:
        """Continue from the newest readable state file, if any."""
        state = load_latest_state(self.run_dir)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.losses = [(int(s), float(v)) for s, v in state["losses"]]
        self.step = self.resumed_from = int(state["step"])

    def save(self, step: int) -> None:
        """Checkpoint weights (at checkpoint steps), the full state, and ``metrics.json``."""
        weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        if step in self.ckpt_steps:
            save_torch(
                {"model": weights, "step": step}, self.run_dir / CKPT_DIR / f"step_{step:07d}.pt"
            )
        full = {
            "step": step,
            "model": weights,
            "optimizer": self.opt.state_dict(),
            "rng": rng_state(),
            "losses": [[s, v] for s, v in self.losses],
        }
        save_torch(full, self.run_dir / STATE_DIR / f"state_{step:07d}.pt")
        for _, old in listed(self.run_dir / STATE_DIR, "state_")[:-KEEP_STATES]:
            old.unlink(missing_ok=True)
            old.with_name(old.name + SIDECAR).unlink(missing_ok=True)
        write_json(
            self.run_dir / METRICS_FILE,
            {"step": step, "loss": [{"step": s, "loss": v} for s, v in self.losses]},
        )
        write_sidecar(self.run_dir / METRICS_FILE)

    def train_step(self, tokens: torch.Tensor) -> float:
        """One AdamW step at the scheduled learning rate; returns the loss before the step."""
        config = self.config
        for group in self.opt.param_groups:
            group["lr"] = lr_at(config, self.step)
        self.opt.zero_grad(set_to_none=True)
        loss = self._backward(tokens)
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.opt.step()
        self.step += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise UsageError(f"loss became {value} at step {self.step}; lower --lr")
        if self.step % 10 == 0 or self.step in self.ckpt_steps:
            self.losses.append((self.step, value))
        return value

    def _backward(self, tokens: torch.Tensor) -> torch.Tensor:
        """The batch's mean loss, its gradient accumulated slice by slice: each slice's mean
        loss weighted by its share of the batch (every row has the same number of tokens)."""
        size = self.config.micro_batch_size or tokens.shape[0]
        if size >= tokens.shape[0]:
            loss = self.model(tokens, return_type="loss")
            loss.backward()
            return loss
        total = torch.zeros(())
        for part in tokens.split(size):
            loss = self.model(part, return_type="loss") * (part.shape[0] / tokens.shape[0])
            loss.backward()
            total = total + loss.detach().cpu()
        return total

    def due(self, end: int) -> bool:
        """Whether the state is saved after the current step."""
        every = self.config.save_every
        return (
            self.step in self.ckpt_steps or (every and self.step % every == 0) or self.step == end
        )


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    device: str | None = "cpu",
    progress: bool = True,
    stop_at: int | None = None,
    provenance: dict[str, Any] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    overwrite: bool = False,
    monitor: Callable[[Any, int, float | None], Any] | None = None,
) -> TrainResult:
    """Train (or resume) the run in ``out`` up to ``config.steps`` (or ``stop_at``, for tests and
    for simulating a kill: the run stops there as if killed right after saving its state).

    Resuming: if ``out/run.json`` exists, its config must equal ``config``; training continues
    from the newest readable state file (or from scratch when there is none).

    ``monitor(model, step, loss)`` is called with the live model before the first step of a new
    run (step 0, no loss) and after every step (``circuits.emergence.monitor.P0SinkMonitor``
    measures when the step is due).
    """
    run_dir = Path(out)
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    dev = device_of(device)
    if dev.type == "cuda":  # TF32 matmuls: ~2x the float32 rate on Ampere and later
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = DataSource(config)
    _prepare_run_dir(run_dir, config, data, provenance or {})
    run = _Run(config, run_dir, data.vocab_size, dev)
    run.resume()
    start = run.step
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    if start == 0 and not (run_dir / STATE_DIR / "state_0000000.pt").exists():
        run.save(0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=end, initial=start, desc=f"train {run_dir.name}", unit="step")
    t0 = time.time()
    if monitor is not None and start == 0:
        monitor(run.model, 0, None)
    while run.step < end:
        value = run.train_step(data.batch(run.step).to(dev))
        if on_step is not None:
            on_step(run.step, value)
        if monitor is not None:
            monitor(run.model, run.step, value)
        if bar is not None:
            bar.update(1)
            if run.step % 10 == 0:
                per_step = (time.time() - t0) / (run.step - start)
                bar.set_postfix(loss=f"{value:.3f}", s_per_step=f"{per_step:.2f}")
        if run.due(end):
            run.save(run.step)
    if bar is not None:
        bar.close()
    return TrainResult(run_dir, run.model, end, run.resumed_from, run.losses)
