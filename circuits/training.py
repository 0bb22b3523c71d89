"""Small models trained from scratch: config, model construction, training loop, checkpoints.

The point of training here is to watch the P0 sink circuit form (see ``circuits.emergence``), so
a run is built for exact replay:

* **One config dataclass** (``TrainConfig``) holds everything that changes a number. It is
  written to ``RUN_DIR/run.json`` (with provenance) before the first step.
* **Batches are pure functions of (seed, step)** (``circuits.corpus``): the data position of a
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

Model: a ``HookedTransformer`` (TransformerLens) from ``TrainConfig``: pre-norm (RMSNorm or
LayerNorm), rotary or learned absolute positions, plain GELU MLP or llama's gated SiLU MLP. The
defaults (RMSNorm + rotary + gated SiLU: llama-style) are the architecture the paper studies.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuits.corpus import (
    DATA_SOURCES,
    InductTask,
    SyntheticTokenizer,
    TriggerTask,
    load_text_corpus,
    text_batch,
)
from circuits.errors import UsageError
from circuits.io import atomic_path, write_json

TASKS = {"trigger": TriggerTask, "induct": InductTask}
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
CKPT_DIR = "checkpoints"
STATE_DIR = "state"
KEEP_STATES = 2
_STEP_RE = re.compile(r"^(?:step|state)_(\d{7})\.pt$")

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
        self.betas = tuple(self.betas)  # JSON round trip gives a list
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
        if self.task and self.data not in TASKS:
            bad(
                f"task options apply to the synthetic tasks {sorted(TASKS)}, not to data={self.data!r}"
            )
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


# ---------------------------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------------------------


class DataSource:
    """The batches of a run: ``source.batch(step)`` is a pure function of (config, step)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        if config.data in TASKS:
            self.task = TASKS[config.data](**config.task)
            self.corpus = None
            self.vocab_size = self.task.vocab_size
            self.bos_token_id = self.task.bos_token_id
            self.data_id = f"{config.data}:{json.dumps(asdict(self.task), sort_keys=True)}"
        else:
            self.task = None
            self.corpus = load_text_corpus(config.vocab_size)
            self.vocab_size = config.vocab_size
            self.bos_token_id = self.corpus.bos_token_id
            self.data_id = f"stdlib:{self.corpus.text_sha256}"

    def batch(
        self, step: int, *, seed: int | None = None, batch_size: int | None = None
    ) -> Int[Tensor, "batch pos"]:
        c = self.config
        kw = dict(
            batch_size=batch_size or c.batch_size,
            n_ctx=c.n_ctx,
            bos=c.bos,
            seed=c.seed if seed is None else seed,
            step=step,
        )
        if self.task is not None:
            return self.task.batch(**kw)
        return text_batch(self.corpus, **kw)

    def eval_batch(self, batch_size: int = 32) -> Int[Tensor, "batch pos"]:
        """A fixed held-out-style batch (its own seed stream), shared by every checkpoint's trace."""
        return self.batch(0, seed=10_000_019 + self.config.seed, batch_size=batch_size)


def hooked_config(config: TrainConfig, vocab_size: int) -> HookedTransformerConfig:
    """The TransformerLens config of a run's model."""
    return HookedTransformerConfig(
        n_layers=config.n_layers,
        d_model=config.d_model,
        n_ctx=config.n_ctx,
        d_head=config.d_head,
        n_heads=config.n_heads,
        d_mlp=config.d_mlp or 4 * config.d_model,
        d_vocab=vocab_size,
        act_fn="silu" if config.mlp == "gated-silu" else "gelu",
        gated_mlp=config.mlp == "gated-silu",
        normalization_type=NORMS[config.norm],
        final_rms=config.norm == "rms",
        positional_embedding_type=POSITIONALS[config.positional],
        rotary_dim=config.d_head if config.positional == "rotary" else None,
        seed=config.seed,
        init_weights=True,
        default_prepend_bos=False,
        device="cpu",  # built on the CPU; train() moves it
    )


def build_model(config: TrainConfig, vocab_size: int) -> HookedTransformer:
    """A freshly initialised model (TransformerLens' GPT-2 init, seeded by ``config.seed``)."""
    model = HookedTransformer(hooked_config(config, vocab_size))
    model.eval()  # no dropout anywhere; eval/train only matters for bitwise replay
    return model


def make_optimizer(model: HookedTransformer, config: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=config.betas,
        eps=1e-8,
        foreach=False,
    )


def lr_at(config: TrainConfig, step: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``lr * min_lr_ratio``."""
    if config.warmup and step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * progress))


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """Step 0 plus ``n`` log-spaced steps in [1, steps] (rounded, unique, ``steps`` included)."""
    points = {0, steps}
    for i in range(n):
        points.add(int(round(math.exp(math.log(steps) * i / max(1, n - 1)))))
    return sorted(p for p in points if 0 <= p <= steps)


def lm_loss(model: HookedTransformer, tokens: Tensor, bos: bool) -> Tensor:
    """Mean next-token cross-entropy; with BOS, the prediction of the BOS token is not a target
    (there is none) and the BOS position's own prediction counts like any other."""
    logits = model(tokens, return_type="logits")
    logp = logits[:, :-1].log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None]).mean()


# ---------------------------------------------------------------------------------------------
# Checkpoint files
# ---------------------------------------------------------------------------------------------


def _save_torch(obj: Any, target: Path) -> None:
    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())


def _listed(folder: Path, prefix: str) -> list[tuple[int, Path]]:
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
    return _listed(Path(run_dir) / CKPT_DIR, "step_")


def load_checkpoint_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """Model weights of one checkpoint (``weights_only=True``)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    return data["model"]


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_latest_state(run_dir: Path) -> dict[str, Any] | None:
    """The newest readable full-state file of a run; unreadable ones are skipped with a warning."""
    for step, path in reversed(_listed(run_dir / STATE_DIR, "state_")):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("step") != step or "model" not in state or "optimizer" not in state:
                raise ValueError("missing keys or wrong step")
            return state
        except Exception as err:  # noqa: BLE001 - any failure means "not usable"
            warnings.warn(
                f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); "
                f"falling back to the previous one (the bad file is kept as {path.name}.corrupt)",
                stacklevel=2,
            )
            os.replace(path, path.with_name(path.name + ".corrupt"))
    return None


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_dir: Path
    model: HookedTransformer
    step: int
    resumed_from: int | None
    losses: list[tuple[int, float]]


def _device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to(model: HookedTransformer, dev: torch.device) -> HookedTransformer:
    """Move to ``dev`` (silently: TransformerLens prints on every move, even to the CPU)."""
    return model if dev.type == "cpu" else model.to(dev, print_details=False)


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    device: str | None = "cpu",
    progress: bool = True,
    stop_at: int | None = None,
    provenance: dict[str, Any] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train (or resume) the run in ``out`` up to ``config.steps`` (or ``stop_at``, for tests and
    for simulating a kill: the run stops there as if killed right after saving its state).

    Resuming: if ``out/run.json`` exists, its config must equal ``config``; training continues
    from the newest readable state file (or from scratch when there is none).
    """
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CKPT_DIR).mkdir(exist_ok=True)
    (run_dir / STATE_DIR).mkdir(exist_ok=True)
    dev = _device(device)
    for stale in [
        *run_dir.glob(".*.tmp"),
        *run_dir.glob(f"{CKPT_DIR}/.*.tmp"),
        *run_dir.glob(f"{STATE_DIR}/.*.tmp"),
    ]:
        stale.unlink(missing_ok=True)  # a temporary file left by a kill during a write

    run_file = run_dir / RUN_FILE
    if run_file.exists():
        saved = json.loads(run_file.read_text())
        if saved.get("config") != config.to_dict():
            raise UsageError(
                f"{run_dir} already holds a run with a different config; "
                "use a new --out or the same config to resume"
            )
    data = DataSource(config)
    if not run_file.exists():
        write_json(
            run_file,
            {
                "format": "p0-circuits-run/1",
                "config": config.to_dict(),
                "vocab_size": data.vocab_size,
                "bos_token_id": data.bos_token_id,
                "data_id": data.data_id,
                "provenance": provenance or {},
            },
        )

    model = _to(build_model(config, data.vocab_size), dev)
    opt = make_optimizer(model, config)
    ckpt_steps = set(checkpoint_steps(config.steps, config.n_checkpoints))
    losses: list[tuple[int, float]] = []
    start = 0
    resumed_from = None
    state = load_latest_state(run_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        losses = [(int(s), float(v)) for s, v in state["losses"]]
        start = resumed_from = int(state["step"])
    end = config.steps if stop_at is None else min(stop_at, config.steps)

    def save(step: int) -> None:
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if step in ckpt_steps:
            _save_torch(
                {"model": weights, "step": step}, run_dir / CKPT_DIR / f"step_{step:07d}.pt"
            )
        full = {
            "step": step,
            "model": weights,
            "optimizer": opt.state_dict(),
            "rng": _rng_state(),
            "losses": [[s, v] for s, v in losses],
        }
        _save_torch(full, run_dir / STATE_DIR / f"state_{step:07d}.pt")
        for _, old in _listed(run_dir / STATE_DIR, "state_")[:-KEEP_STATES]:
            old.unlink(missing_ok=True)
        write_json(
            run_dir / METRICS_FILE,
            {"step": step, "loss": [{"step": s, "loss": v} for s, v in losses]},
        )

    if start == 0 and not (run_dir / STATE_DIR / "state_0000000.pt").exists():
        save(0)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=end, initial=start, desc=f"train {run_dir.name}", unit="step")
    model.train(False)
    t0 = time.time()
    for step in range(start, end):
        for group in opt.param_groups:
            group["lr"] = lr_at(config, step)
        tokens = data.batch(step).to(dev)
        loss = lm_loss(model, tokens, config.bos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        done = step + 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise UsageError(f"loss became {value} at step {done}; lower --lr")
        if done % 10 == 0 or done in ckpt_steps:
            losses.append((done, value))
        if on_step is not None:
            on_step(done, value)
        if bar is not None:
            bar.update(1)
            if done % 10 == 0:
                bar.set_postfix(
                    loss=f"{value:.3f}", s_per_step=f"{(time.time() - t0) / (done - start):.2f}"
                )
        if (
            done in ckpt_steps
            or (config.save_every and done % config.save_every == 0)
            or done == end
        ):
            save(done)
    if bar is not None:
        bar.close()
    return TrainResult(
        run_dir=run_dir, model=model, step=end, resumed_from=resumed_from, losses=losses
    )


# ---------------------------------------------------------------------------------------------
# Loading a trained run (the zoo's hook for directories holding run.json)
# ---------------------------------------------------------------------------------------------


def read_run(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict[str, Any]]:
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.exists():
        raise UsageError(
            f"{run_dir} is not a training run (no {RUN_FILE}); train one with `p0-circuits train`"
        )
    meta = json.loads(path.read_text())
    return TrainConfig.from_dict(meta["config"]), meta


def load_run_model(
    run_dir: str | os.PathLike, step: int | None = None, device: str | None = "cpu"
) -> tuple[HookedTransformer, TrainConfig, dict[str, Any]]:
    """The model of a run at checkpoint ``step`` (default: the last one), loaded weights_only."""
    config, meta = read_run(run_dir)
    ckpts = dict(list_checkpoints(run_dir))
    if not ckpts:
        raise UsageError(f"{run_dir} holds no checkpoints yet")
    if step is None:
        step = max(ckpts)
    if step not in ckpts:
        raise UsageError(f"{run_dir} has no checkpoint at step {step}; it has {sorted(ckpts)}")
    model = build_model(config, meta["vocab_size"])
    model.load_state_dict(load_checkpoint_weights(ckpts[step]))
    return _to(model, _device(device)), config, meta


def load_trained_model(path: str | os.PathLike, step: int | None = None):
    """A trained run as a zoo entry (``circuits.zoo.ZooModel``), at its last checkpoint by default.

    ``natural_bos`` is whether the run was trained with BOS; the tokenizer is the corpus BPE for
    ``stdlib`` runs and a ``SyntheticTokenizer`` (ids as words) for the synthetic tasks.
    """
    from circuits.zoo import ZooModel

    model, config, meta = load_run_model(path, step)
    if config.data == "stdlib":
        tokenizer = load_text_corpus(config.vocab_size).hf_tokenizer()
    else:
        task = TASKS[config.data](**config.task)
        tokenizer = SyntheticTokenizer(
            task.vocab_size,
            task.bos_token_id,
            getattr(task, "n_plain", None) if config.data == "trigger" else None,
        )
    name = f"run:{Path(path).name}" + (f"@{step}" if step is not None else "")
    kwargs = dict(
        name=name,
        model=model,
        tokenizer=tokenizer,
        bos_token_id=meta["bos_token_id"],
        natural_bos=config.bos,
        source=str(Path(path).resolve()),
    )
    known = getattr(ZooModel, "__dataclass_fields__", None)
    if known is not None:
        kwargs = {k: v for k, v in kwargs.items() if k in known}
    return ZooModel(**kwargs)
