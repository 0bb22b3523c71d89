"""Run folders: ``run.json``, weight checkpoints and full training states, written atomically and
read with ``torch.load(..., weights_only=True)``.

``RUN_DIR/checkpoints/step_0000000.pt`` hold the model weights only (what a trace reads);
``RUN_DIR/state/state_XXXXXXX.pt`` hold the full training state (weights, AdamW state, torch RNG
state, step, loss history); the newest ``KEEP_STATES`` are kept.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuits.backend import HookedModel
from circuits.core.atomic import atomic_path
from circuits.core.conventions import RECORD_FORMATS, RUN_FILE
from circuits.core.errors import ChecksumError, UsageError
from circuits.core.manifest import SIDECAR, sidecar_matches, write_sidecar
from circuits.core.records import RECORD_KEYS, check_keys
from circuits.training.config import TrainConfig
from circuits.training.model import build_model

METRICS_FILE = "metrics.json"
CKPT_DIR = "checkpoints"
STATE_DIR = "state"
KEEP_STATES = 2
_STEP_RE = re.compile(r"^(?:step|state)_(\d{7})\.pt$")


def save_torch(obj: Any, target: Path) -> None:
    """``torch.save`` atomically, flushed to disk, with a ``.sha256`` sidecar recorded after it."""
    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
    write_sidecar(target)


def load_verified(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of a file whose bytes match its sidecar; otherwise a
    ``ChecksumError`` naming it (a damaged file is never unpickled)."""
    if not sidecar_matches(path):
        raise ChecksumError(f"{path} does not match the checksum recorded when it was written")
    return torch.load(path, map_location="cpu", weights_only=True)


def set_aside(path: Path, reason: str) -> None:
    """Rename a damaged file (and its sidecar) to ``*.corrupt``, with a warning naming it."""
    warnings.warn(
        f"{path} is damaged ({reason}); it is set aside as {path.name}.corrupt and the previous "
        "one is used",
        stacklevel=3,
    )
    for p in (path, path.with_name(path.name + SIDECAR)):
        if p.exists():
            os.replace(p, p.with_name(p.name + ".corrupt"))


def listed(folder: Path, prefix: str) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.name.startswith(prefix):
            found.append((int(m.group(1)), p))
    return sorted(found)


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the weight checkpoints of a run, by step."""
    return listed(Path(run_dir) / CKPT_DIR, "step_")


def load_checkpoint_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """Model weights of one checkpoint, verified (``ChecksumError`` if damaged)."""
    return load_verified(Path(path))["model"]


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_latest_state(run_dir: Path) -> dict[str, Any] | None:
    """The newest intact full-state file of a run; a damaged one (checksum, unreadable, wrong
    step) is set aside with a warning and the previous one is used."""
    for step, path in reversed(listed(run_dir / STATE_DIR, "state_")):
        try:
            state = load_verified(path)
            if state.get("step") != step or "model" not in state or "optimizer" not in state:
                raise ValueError("missing keys or wrong step")
            return state
        except Exception as err:  # noqa: BLE001 - any failure means "not usable"
            set_aside(path, f"{type(err).__name__}: {err}")
    return None


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


def device_of(name: str | None) -> torch.device:
    """``cpu``, ``cuda[:N]``, or ``auto`` (a GPU when torch sees one); a GPU torch cannot see
    is a ``UsageError`` naming the fix."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} asked for, but torch sees no GPU; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s), "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    return dev


def move_model(model: HookedModel, dev: torch.device) -> HookedModel:
    """Move to ``dev`` (silently: TransformerLens prints on every move, even to the CPU)."""
    return model if dev.type == "cpu" else model.to(dev, print_details=False)


def cast_model(model: HookedModel, dtype: str) -> HookedModel:
    """``model`` in ``dtype`` (``float32``, ``bfloat16``, ``float16``): its weights and buffers
    cast (round to nearest), ``cfg.dtype`` set, as TransformerLens builds a model loaded in that
    dtype. A no-op for a model already in it."""
    target = getattr(torch, dtype)
    if model.cfg.dtype == target:
        return model
    try:
        model = model.to(target, print_details=False)  # HookedTransformer: no print
    except TypeError:  # a TransformerLens 4 bridge
        model = model.to(target)
    model.cfg.dtype = target
    return model


def read_run(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict[str, Any]]:
    """A run's config and ``run.json``, verified against the checksum written with it."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.exists():
        raise UsageError(
            f"{run_dir} is not a training run (no {RUN_FILE}); train one with `p0-circuits train`"
        )
    if not sidecar_matches(path):
        raise ChecksumError(f"{path} does not match the checksum recorded when it was written")
    try:
        meta = json.loads(path.read_text())
    except ValueError as err:
        raise UsageError(f"{path} is not valid JSON ({err})") from None
    if (
        not isinstance(meta, dict)
        or meta.get("format") != RECORD_FORMATS["run"]
        or "config" not in meta
    ):
        raise UsageError(f"{path} is not a p0-circuits run of this version; train a new run")
    check_keys(path, meta, *RECORD_KEYS["run"])
    return TrainConfig.from_dict(meta["config"]), meta


def load_run_model(
    run_dir: str | os.PathLike, step: int | None = None, device: str | None = "cpu"
) -> tuple[HookedModel, TrainConfig, dict[str, Any]]:
    """The model of a run at checkpoint ``step`` (default: the newest intact one), verified."""
    config, meta = read_run(run_dir)
    ckpts = dict(list_checkpoints(run_dir))
    if not ckpts:
        raise UsageError(f"{run_dir} holds no checkpoints yet")
    if step is not None and step not in ckpts:
        raise UsageError(f"{run_dir} has no checkpoint at step {step}; it has {sorted(ckpts)}")
    model = build_model(config, meta["vocab_size"])
    for candidate in [step] if step is not None else sorted(ckpts, reverse=True):
        try:
            weights = load_checkpoint_weights(ckpts[candidate])
        except ChecksumError as err:
            if step is not None:
                raise
            set_aside(ckpts[candidate], str(err))
            continue
        model.load_state_dict(weights)
        return move_model(model, device_of(device)), config, meta
    raise UsageError(f"{run_dir} holds no intact checkpoint")
