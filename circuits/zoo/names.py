"""What a model name means, decided before any model library is imported.

``resolve_model(name)`` says which loader a name needs (a zoo entry, a local ``.gguf`` file, a
training run folder, a Hugging Face model folder, or a TransformerLens official name) and fails
at once, with the zoo listed, when it is none of them. ``RUN_DIR@STEP`` names one checkpoint of a
training run. The CLI calls it before importing torch,
so a typo costs a fraction of a second, not the 10-25 s of importing TransformerLens.

TransformerLens' official names (and their aliases) come from a snapshot of its
``make_model_alias_map()`` shipped in ``data/tl_model_names.json``; it is used only when the
installed TransformerLens has the snapshot's version (a test checks the two agree), otherwise
TransformerLens itself is asked.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

from circuits.core.conventions import RUN_FILE
from circuits.core.errors import UnknownModelError, UsageError
from circuits.zoo.pins import ZOO

MODEL_KINDS = ("zoo", "gguf", "run", "hf_folder", "transformer_lens")


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model name: ``kind`` (one of ``MODEL_KINDS``) and what the loader needs."""

    kind: str
    name: str
    path: Path | None = None
    step: int | None = None
    """A training run's checkpoint (``RUN_DIR@STEP``); None: its newest."""


@cache
def tl_alias_map() -> dict[str, str]:
    """Lower-cased TransformerLens official names and aliases -> official name."""
    snapshot = json.loads(files("circuits.zoo").joinpath("data/tl_model_names.json").read_text())
    try:
        installed = importlib.metadata.version("transformer-lens")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed == snapshot["transformer_lens"]:
        return dict(snapshot["aliases"])
    from transformer_lens.loading_from_pretrained import make_model_alias_map

    return make_model_alias_map()


def unknown_model_message(name: str) -> str:
    return (
        f"unknown model '{name}': not a zoo name ({', '.join(ZOO)}), not an existing local "
        "path (.gguf file, Hugging Face folder or training run), nor a TransformerLens "
        "official model name; `p0-circuits models` lists the zoo"
    )


def _run_checkpoint(name: str) -> ModelSpec | None:
    """``RUN_DIR@STEP``: a training run at one checkpoint (checked when it is loaded)."""
    base, sep, step = name.rpartition("@")
    if not sep or not base:
        return None
    path = Path(base).expanduser()
    if not (path.is_dir() and (path / RUN_FILE).exists()):
        return None
    if not step.isdigit():
        raise UsageError(f"'{name}': a checkpoint is RUN_DIR@STEP with a whole step, got '{step}'")
    return ModelSpec("run", str(path), path, int(step))


def resolve_model(name: str) -> ModelSpec:
    """Which loader ``name`` needs; ``UnknownModelError`` (a usage error) when none fits."""
    if name in ZOO:
        return ModelSpec("zoo", name)
    checkpoint = _run_checkpoint(name)
    if checkpoint is not None:
        return checkpoint
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSpec("gguf", str(path), path)
    if path.is_dir() and (path / RUN_FILE).exists():
        return ModelSpec("run", str(path), path)
    if path.is_dir() and (path / "config.json").exists():
        return ModelSpec("hf_folder", str(path), path)
    if path.exists():
        raise UsageError(
            f"{path} is neither a .gguf file, a Hugging Face model folder (with config.json) "
            "nor a training run (with run.json)"
        )
    official = tl_alias_map().get(name.lower())
    if official is None:
        raise UnknownModelError(unknown_model_message(name))
    return ModelSpec("transformer_lens", official)
