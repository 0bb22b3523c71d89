"""``TrainConfig``: everything that defines a training run, in one dataclass (no torch here, so the
CLI can show its defaults instantly)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from circuits.core.errors import UsageError

DATA_SOURCES = ("stdlib", "trigger", "induct")
NORMS = {"rms": "RMS", "ln": "LN"}
POSITIONALS = {"rotary": "rotary", "learned": "standard"}
MLPS = ("gelu", "gated-silu")


@dataclass
class TrainConfig:
    """Everything that defines a training run (and therefore its trace).

    Architecture: ``n_layers``, ``d_model``, ``n_heads`` (``d_head = d_model // n_heads``),
    ``d_mlp`` (default ``4 * d_model``), ``norm`` (``"rms"`` or ``"ln"``, pre-norm),
    ``positional`` (``"rotary"`` or ``"learned"``), ``mlp`` (``"gelu"`` or ``"gated-silu"``),
    ``n_ctx`` (tokens per sequence, BOS included when ``bos``).

    Data: ``data`` (``"stdlib"`` text with a BPE of ``vocab_size`` tokens, or one of the synthetic
    tasks ``"trigger"`` / ``"induct"`` with options ``task``, see ``circuits.corpus``), ``bos``
    (prepend the BOS token at position 0).

    Optimisation: AdamW with ``lr``, ``weight_decay`` (on matrices only, not on norms or biases),
    ``betas``, linear ``warmup`` then cosine decay to ``lr * min_lr_ratio`` at ``steps``;
    gradient clipping at ``grad_clip``; ``batch_size`` sequences per step; ``seed`` seeds both
    the initialisation and the batches.

    Checkpoints: ``n_checkpoints`` log-spaced steps in [1, steps] plus step 0; full state also
    every ``save_every`` steps (0: only at checkpoint steps).
    """

    # architecture
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int | None = None
    norm: str = "rms"
    positional: str = "rotary"
    mlp: str = "gated-silu"
    n_ctx: int = 64
    # data
    data: str = "stdlib"
    vocab_size: int = 2048
    bos: bool = False
    task: dict[str, Any] = field(default_factory=dict)
    # optimisation
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    # checkpoints
    n_checkpoints: int = 24
    save_every: int = 200

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))  # JSON gives a list
        self.validate()

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise UsageError(msg)

        if self.n_layers < 1 or self.d_model < 2 or self.n_heads < 1:
            bad("n_layers, d_model and n_heads must be positive")
        if self.d_model % self.n_heads:
            bad(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.positional == "rotary" and self.d_head % 2:
            bad(f"rotary needs an even d_head, got {self.d_head}")
        if self.norm not in NORMS:
            bad(f"norm must be one of {sorted(NORMS)}, got {self.norm!r}")
        if self.positional not in POSITIONALS:
            bad(f"positional must be one of {sorted(POSITIONALS)}, got {self.positional!r}")
        if self.mlp not in MLPS:
            bad(f"mlp must be one of {list(MLPS)}, got {self.mlp!r}")
        if self.data not in DATA_SOURCES:
            bad(f"data must be one of {list(DATA_SOURCES)}, got {self.data!r}")
        if self.n_ctx < 4:
            bad(f"n_ctx must be at least 4, got {self.n_ctx}")
        if self.steps < 1 or self.batch_size < 1:
            bad("steps and batch_size must be positive")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.min_lr_ratio <= 1):
            bad("lr must be > 0, weight_decay >= 0, min_lr_ratio in [0, 1]")
        if self.warmup < 0 or self.n_checkpoints < 1 or self.save_every < 0:
            bad("warmup and save_every must be >= 0, n_checkpoints >= 1")
        if self.data == "stdlib":
            if self.task:
                bad(f"task options apply to the synthetic tasks, not to data={self.data!r}")
            return
        from circuits.training.tasks import TASKS  # the synthetic tasks' options (imports torch)

        if self.data in TASKS:
            try:
                TASKS[self.data](**self.task)
            except TypeError as err:
                bad(f"bad {self.data} task option: {err}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a JSON (``.json``) or TOML (``.toml``) config file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise UsageError(f"cannot read config file {path}: {err.strerror or err}") from None
        try:
            if path.suffix == ".toml":
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except ValueError as err:
            raise UsageError(
                f"config file {path} is not valid {path.suffix[1:] or 'JSON'}: {err}"
            ) from None
        if not isinstance(data, dict):
            raise UsageError(f"config file {path} must hold a table/object of keys")
        return cls.from_dict(data)
