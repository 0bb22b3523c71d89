"""``TrainConfig``: everything that defines a training run, in one dataclass (no torch here, so the
CLI can show its defaults instantly)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from circuits.core.errors import UsageError
from circuits.core.schema import check_fields, check_keys, check_range

DATA_SOURCES = ("stdlib", "trigger", "induct", "bigram-backcopy", "token-file")
NORMS = {"rms": "RMS", "ln": "LN"}
POSITIONALS = {"rotary": "rotary", "learned": "standard"}
MLPS = ("gelu", "gated-silu", "relu")


@dataclass
class TrainConfig:
    """Everything that defines a training run (and therefore its trace).

    Architecture: ``n_layers``, ``d_model``, ``n_heads`` (``d_head = d_model // n_heads``),
    ``d_mlp`` (default ``4 * d_model``), ``norm`` (``"rms"`` or ``"ln"``, pre-norm),
    ``positional`` (``"rotary"`` or ``"learned"``), ``mlp`` (``"gelu"``, ``"gated-silu"`` or
    ``"relu"``),
    ``n_ctx`` (tokens per sequence, BOS included when ``bos``); ``n_experts`` > 0: every block's
    MLP is a mixture of ``n_experts`` experts (TransformerLens' ``MoE``: gated experts of width
    ``d_mlp`` with the ``mlp`` activation, a softmax router, top-``experts_per_token``, no
    load-balancing loss).

    Data: ``data`` (``"stdlib"`` text with a BPE of ``vocab_size`` tokens, or one of the synthetic
    tasks ``"trigger"`` / ``"induct"`` / ``"bigram-backcopy"`` with options ``task``, see
    ``circuits.training.tasks``), ``bos`` (prepend the BOS token at position 0),
    ``zero_p0_embedding`` (the control for a content-free first token without BOS: the token
    embedding at position 0 is zeroed in every forward, in training and in every later use of
    the model, so P0 carries only its position).

    Optimisation: AdamW with ``lr``, ``weight_decay`` (on matrices only, not on norms or biases),
    ``betas``, linear ``warmup`` then cosine decay to ``lr * min_lr_ratio`` at ``steps``;
    gradient clipping at ``grad_clip``; ``batch_size`` sequences per step, run as slices of
    ``micro_batch_size`` sequences whose gradients add up to the whole batch's (for batches
    that do not fit in memory; None: one slice); ``seed`` seeds both the initialisation and the
    batches.

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
    n_experts: int = 0
    experts_per_token: int = 2
    n_ctx: int = 64
    # data
    data: str = "stdlib"
    vocab_size: int = 2048
    bos: bool = False
    zero_p0_embedding: bool = False
    task: dict[str, Any] = field(default_factory=dict)
    # optimisation
    steps: int = 2000
    batch_size: int = 32
    micro_batch_size: int | None = None
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
        self.validate()

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        """Types first (``check_fields``), then ranges and combinations; a one-line
        ``UsageError`` for the first problem, before any file is written."""
        check_fields(self)
        for name in (
            "n_layers",
            "d_model",
            "n_heads",
            "n_ctx",
            "steps",
            "batch_size",
            "n_checkpoints",
        ):
            check_range(name, getattr(self, name), 1)
        check_range("n_ctx", self.n_ctx, 4)
        check_range("d_mlp", self.d_mlp if self.d_mlp is not None else 1, 1)
        check_range("n_experts", self.n_experts, 0)
        if self.n_experts:
            check_range("experts_per_token", self.experts_per_token, 1, self.n_experts)
        if self.micro_batch_size is not None:
            check_range("micro_batch_size", self.micro_batch_size, 1, self.batch_size)
        for name in ("warmup", "save_every", "seed", "weight_decay", "grad_clip"):
            check_range(name, getattr(self, name), 0)
        check_range("lr", self.lr, 1e-12)
        check_range("min_lr_ratio", self.min_lr_ratio, 0, 1)
        for beta in self.betas:
            check_range("betas", beta, 0, 0.999999)
        if self.d_model % self.n_heads:
            raise UsageError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.positional == "rotary" and self.d_head % 2:
            raise UsageError(f"rotary needs an even d_head, got {self.d_head}")
        for name, choices in (
            ("norm", NORMS),
            ("positional", POSITIONALS),
            ("mlp", MLPS),
            ("data", DATA_SOURCES),
        ):
            if getattr(self, name) not in choices:
                raise UsageError(
                    f"{name} must be one of {list(choices)}, got {getattr(self, name)!r}"
                )
        if self.data == "stdlib":
            check_range("vocab_size", self.vocab_size, 300, 65535)
            if self.task:
                raise UsageError(
                    f"task options apply to the synthetic tasks, not to data={self.data!r}"
                )
            return
        from circuits.training.tasks import make_task  # the synthetic tasks (imports torch)

        make_task(self.data, self.task)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from a table of keys: unknown keys, wrong types and ranges are refused."""
        check_keys(cls, data)
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
