"""A sweep's specification (TOML or JSON) and the grid of jobs it means.

A spec names the axes; the grid is their product, one job per point::

    commands = ["discover"]                      # measure | discover
    models = ["smollm2-135m", "runs/bb_bos"]     # zoo names, .gguf files, HF folders, run folders
    checkpoints = "all"                          # run folders: "all", "last" or a list of steps
    counterfactuals = ["shift", "mean"]          # discover's --counterfactual (measure: ignored)

    [[prompts]]                                  # prompt settings, one table each
    n_prompts = 4
    n_tokens = 32

    [args]                                       # flags for every job: seed = 0, device = "cpu"
    device = "cpu"
    [discover]                                   # flags for one command's jobs only
    first_receiver = 1

Every job is one command line of ``p0-circuits`` (``Job.argv``), whose output is an ordinary
output folder of that command (``DIR/jobs/<job id>``). Relative model and text paths are read
from the spec file's folder. The whole grid is checked before anything runs: every command line is parsed
by the real command's parser and checked by the command's own pre-load checks (the ones ``run``
makes before it loads a model), every model name resolved and every checkpoint found, without
importing a model library. An empty axis, a spec that is not UTF-8 and a NaN or infinite value
are refused too.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from circuits.core.arguments import checked
from circuits.core.errors import UsageError

CHECKPOINT_GLOB = "checkpoints/step_*.pt"
_PROMPT_KEYS = {
    "measure": {"bos", "text", "max_tokens", "truncate"},
    "discover": {"bos", "text", "n_prompts", "n_tokens"},
}


class PromptSetting(BaseModel):
    """One prompt setting: the flags it sets (each command takes the ones it has)."""

    model_config = ConfigDict(extra="forbid")

    n_prompts: int | None = Field(default=None, ge=1)
    n_tokens: int | None = Field(default=None, ge=2)
    max_tokens: int | None = Field(default=None, ge=2)
    bos: bool | None = None
    text: str | None = None
    truncate: bool | None = None

    def flags(self, command: str) -> dict[str, Any]:
        return {
            k: v
            for k, v in self.model_dump(exclude_none=True).items()
            if k in _PROMPT_KEYS[command]
        }


class SweepSpec(BaseModel):
    """The axes of a sweep (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    commands: list[Literal["measure", "discover"]] = Field(min_length=1)
    models: list[str] = Field(min_length=1)
    checkpoints: Literal["all", "last"] | Annotated[list[int], Field(min_length=1)] = "last"
    counterfactuals: list[str] = Field(default_factory=lambda: ["shift"], min_length=1)
    prompts: list[PromptSetting] = Field(default_factory=lambda: [PromptSetting()], min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    measure: dict[str, Any] = Field(default_factory=dict)
    discover: dict[str, Any] = Field(default_factory=dict)

    @field_validator("args", "measure", "discover")
    @classmethod
    def _no_reserved(cls, args: dict[str, Any]) -> dict[str, Any]:
        reserved = {"out", "model", "counterfactual", "overwrite", "quiet"}
        bad = sorted(reserved & {k.replace("-", "_") for k in args})
        if bad:
            raise ValueError(f"{bad} are set by the sweep itself (axes and --out), not as flags")
        return args


@dataclass(frozen=True)
class Job:
    """One grid point: a ``p0-circuits`` command line and what it varies."""

    id: str
    command: str
    model: str
    checkpoint: int | None
    counterfactual: str | None
    prompts: dict[str, Any]
    argv: tuple[str, ...] = field(default=())

    def with_out(self, out: Path) -> list[str]:
        """The full command line, writing into ``out``."""
        return [*self.argv, "--out", str(out), "--quiet"]

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "command": self.command,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "counterfactual": self.counterfactual,
            "prompts": self.prompts,
            "argv": list(self.argv),
        }


@checked
def read_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and check a TOML or JSON spec; ``UsageError`` naming the first bad key."""
    source = Path(path)
    if not source.is_file():
        raise UsageError(f"sweep spec {source} does not exist; give a .toml or .json file")
    kind = "json" if source.suffix == ".json" else "toml"
    try:
        text = source.read_text(encoding="utf-8")
        data = json.loads(text) if kind == "json" else tomllib.loads(text)
    except UnicodeDecodeError as err:
        raise UsageError(
            f"sweep spec {source} is not UTF-8 text ({err.reason} at byte {err.start}); "
            "save it as UTF-8"
        ) from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"sweep spec {source} is not valid {kind}: {err}") from None
    where = _non_finite(data)
    if where is not None:
        raise UsageError(
            f"sweep spec {source}: {where} is not a finite number (the spec is recorded as "
            "JSON, which has no nan or inf); give a finite value"
        )
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UsageError(f"sweep spec {source}: {where}: {first['msg']}") from None


def _non_finite(value: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinite number in ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or '(top level)'} = {value}"
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def _flag(key: str, value: Any) -> list[str]:
    name = "--" + key.replace("_", "-")
    if value is True:
        return [name]
    if value is False:
        return ["--no-" + key.replace("_", "-")] if key == "bos" else []
    if isinstance(value, list):
        return [name, ",".join(str(v) for v in value)]
    return [name, str(value)]


def _model_name(model: str, base: Path) -> str:
    """A relative path is read from the spec's folder; other names pass as they are."""
    local = base / model
    return str(local.resolve()) if not Path(model).is_absolute() and local.exists() else model


def run_checkpoints(run: Path, wanted: str | list[int]) -> list[int | None]:
    """The checkpoints of training run ``run`` a spec asks for (None: its newest)."""
    steps = sorted(int(re.sub(r"\D", "", p.stem)) for p in run.glob(CHECKPOINT_GLOB))
    if not steps:
        raise UsageError(f"training run {run} has no checkpoints yet; train it first")
    if isinstance(wanted, str):
        return [None] if wanted == "last" else list(steps)
    missing = sorted(set(wanted) - set(steps))
    if missing:
        raise UsageError(f"training run {run} has no checkpoint at steps {missing}; it has {steps}")
    return list(wanted)


def _job_id(command: str, model: str, step: int | None, cf: str | None, argv: list[str]) -> str:
    label = "__".join(
        x
        for x in (command, Path(model).name or model, None if step is None else f"step{step}", cf)
        if x
    )
    digest = hashlib.sha256("\0".join(argv).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.@-]+", "-", label) + "-" + digest


@checked
def expand(spec: SweepSpec, base: str | os.PathLike = ".") -> list[Job]:
    """Every job of the grid, checked (module docstring); ids are unique and stable."""
    from circuits.zoo.names import resolve_model

    root = Path(base)
    jobs: list[Job] = []
    for command, model in product(spec.commands, spec.models):
        name = _model_name(model, root)
        kind = resolve_model(name).kind
        steps = run_checkpoints(Path(name), spec.checkpoints) if kind == "run" else [None]
        cfs: list[str | None] = list(spec.counterfactuals) if command == "discover" else [None]
        for step, cf, setting in product(steps, cfs, spec.prompts):
            target = name if step is None else f"{name}@{step}"
            flags = {**spec.args, **getattr(spec, command), **setting.flags(command)}
            if isinstance(flags.get("text"), str):
                flags["text"] = _model_name(flags["text"], root)
            argv = [command, "--model", target]
            if cf is not None:
                argv += ["--counterfactual", cf]
            for key, value in flags.items():
                argv += _flag(key, value)
            jobs.append(
                Job(
                    _job_id(command, name, step, cf, argv),
                    command,
                    name,
                    step,
                    cf,
                    setting.flags(command),
                    tuple(argv),
                )
            )
    if not jobs:
        raise UsageError("the sweep's grid is empty (an axis has no value); give every axis one")
    _check_command_lines(jobs)
    return jobs


def _check_command_lines(jobs: list[Job]) -> None:
    """Parse every job's command line with the real parser and make its command's own checks
    of the flags (its ``check(args)``, everything ``run`` checks before loading a model but
    ``--out``): a spec one of its commands would refuse is refused before any job runs."""
    from circuits.cli import COMMAND_MODULES, build_parser

    parser = build_parser()
    seen: set[str] = set()
    for job in jobs:
        if job.id in seen:
            raise UsageError(f"the sweep has job {job.id} twice; remove the repeated axis value")
        seen.add(job.id)
        fix = f"fix the spec's [args], [{job.command}] or [[prompts]]"
        try:
            args = parser.parse_args(job.with_out(Path("/nonexistent-check")))
        except SystemExit:
            raise UsageError(
                f"job {job.id}: `p0-circuits {' '.join(job.argv)}` is not a valid command line "
                f"(see the message above); {fix}"
            ) from None
        try:
            importlib.import_module(COMMAND_MODULES[job.command]).check(args)
        except UsageError as err:
            raise UsageError(f"job {job.id}: {err}; {fix}") from None
