"""Checkpoint series: the checkpoints a trace (and the circuit over training) walks.

Three sources, one interface (``CheckpointSeries``: its steps, one fixed evaluation batch, and a
loader for the model at each step):

* :func:`run_series` -- a run of ``p0-circuits train``: every saved checkpoint (checksums
  verified; a damaged one is left out and named), evaluated on a batch of the run's own data
  (``DataSource.eval_batch``, its own seed stream);
* :func:`hf_folder_series` -- a folder of Hugging Face checkpoints, one subfolder per checkpoint
  (``step1000/``, ``checkpoint-2000/``, ``global_step300/``...), ordered by the last number in
  each subfolder's name and loaded with the toolkit's local-folder loader (every family
  TransformerLens converts); evaluated on windows of the default text (``prompt_set``);
* :func:`official_series` -- a TransformerLens official model with training checkpoints
  (Pythia, Stanford CRFM GPT-2, NeelNanda's toy models): ``HookedTransformer.from_pretrained``
  with ``checkpoint_index``; the steps are TransformerLens' ``get_checkpoint_labels``. This
  needs the Hugging Face hub.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.backend import HookedModel
from circuits.core.errors import ChecksumError, UsageError

if TYPE_CHECKING:
    from circuits.zoo.model import ZooModel

_NUMBER = re.compile(r"\d+")


@dataclass
class CheckpointSeries:
    """What a trace needs from a series of checkpoints of one model."""

    source: str
    """What the series is (a run folder, an HF folder, an official name), for the record."""
    steps: list[int]
    bos: bool
    """Whether position 0 of ``tokens`` holds the model's BOS token."""
    tokens: Int[Tensor, "batch pos"]
    """The evaluation batch, the same for every checkpoint."""
    load: Callable[[int], HookedModel]
    """The model at a step (``ChecksumError`` when a saved file is damaged)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Config, data id and training losses where the source has them."""
    str_tokens: Callable[[Tensor], list[str]] | None = None


def run_series(
    run_dir: str | Path, *, batch_size: int = 32, device: str = "cpu"
) -> CheckpointSeries:
    """The checkpoints of a ``p0-circuits train`` run, on a batch of the run's own data."""
    from circuits.training.checkpoints import (
        list_checkpoints,
        load_checkpoint_weights,
        move_model,
        read_run,
    )
    from circuits.training.data import DataSource
    from circuits.training.model import build_model

    run_dir = Path(run_dir)
    config, meta = read_run(run_dir)
    ckpts = dict(list_checkpoints(run_dir))
    if not ckpts:
        raise UsageError(f"{run_dir} holds no checkpoints; train it first")
    model = move_model(build_model(config, meta["vocab_size"]), torch.device(device))

    def load(step: int) -> HookedModel:
        model.load_state_dict(load_checkpoint_weights(ckpts[step]))
        return model

    return CheckpointSeries(
        source=str(run_dir),
        steps=sorted(ckpts),
        bos=config.bos,
        tokens=DataSource(config).eval_batch(batch_size).to(device),
        load=load,
        info={"config": config.to_dict(), "data_id": meta.get("data_id")},
    )


def in_dtype(series: CheckpointSeries, dtype: str) -> CheckpointSeries:
    """``series`` with every checkpoint cast to ``dtype`` when loaded (recorded in its info)."""
    from circuits.training.checkpoints import cast_model

    load = series.load
    return replace(
        series,
        load=lambda step: cast_model(load(step), dtype),
        info={**series.info, "dtype": dtype},
    )


def step_of(name: str) -> int | None:
    """The step a checkpoint folder's name gives: its last number (``step1000`` -> 1000,
    ``checkpoint-2000`` -> 2000, ``global_step300`` -> 300), None when it has none."""
    numbers = _NUMBER.findall(name)
    return int(numbers[-1]) if numbers else None


def hf_folder_series(
    folder: str | Path, *, n_prompts: int = 8, n_tokens: int = 64, bos: bool | None = None
) -> CheckpointSeries:
    """A folder of Hugging Face checkpoints (one subfolder with a ``config.json`` each),
    ordered by the step number in the subfolders' names."""
    from circuits.zoo.load import load_model

    folder = Path(folder)
    subs = sorted(p for p in folder.iterdir() if (p / "config.json").is_file())
    if not subs:
        raise UsageError(
            f"{folder} holds no checkpoint subfolders (each needs a config.json, e.g. "
            f"{folder}/step1000/config.json)"
        )
    by_step: dict[int, Path] = {}
    for sub in subs:
        step = step_of(sub.name)
        if step is None:
            raise UsageError(
                f"checkpoint folder {sub.name!r} has no step number in its name; name it like "
                "step1000 or checkpoint-1000"
            )
        if step in by_step:
            raise UsageError(
                f"two checkpoint folders give step {step}: {by_step[step].name!r} and {sub.name!r}"
            )
        by_step[step] = sub
    return _zoo_series(
        f"Hugging Face checkpoint folder {folder}",
        sorted(by_step),
        lambda step: load_model(str(by_step[step]), progress=False),
        bos=bos,
        n_prompts=n_prompts,
        n_tokens=n_tokens,
        info={"checkpoints": {str(s): by_step[s].name for s in sorted(by_step)}},
    )


def _zoo_series(
    source: str,
    steps: list[int],
    load_step: Callable[[int], ZooModel],
    *,
    bos: bool | None,
    n_prompts: int,
    n_tokens: int,
    info: dict[str, Any],
) -> CheckpointSeries:
    """A series of checkpoints that load as zoo models: prompts from the default text with the
    first checkpoint's tokenizer (BOS as it trains, unless ``bos`` says), and that first model
    handed out again, not loaded twice, when its step is traced."""
    from circuits.prompts import prompt_set

    first = load_step(steps[0])
    use_bos = first.natural_bos if bos is None else bos
    tokens = prompt_set(first, n_prompts=n_prompts, n_tokens=n_tokens, bos=use_bos)

    def load(step: int) -> HookedModel:
        return first.model if step == steps[0] else load_step(step).model

    return CheckpointSeries(
        source=source,
        steps=steps,
        bos=use_bos,
        tokens=tokens,
        load=load,
        info=info,
        str_tokens=first.str_tokens,
    )


def log_spaced_indices(n_labels: int, n: int) -> list[int]:
    """``n`` checkpoint indices spread log-uniformly over ``n_labels`` (first and last kept)."""
    if n >= n_labels:
        return list(range(n_labels))
    picks = {0, n_labels - 1}
    for i in range(n):
        picks.add(round(math.exp(math.log(n_labels) * i / max(1, n - 1))) - 1)
    return sorted(p for p in picks if 0 <= p < n_labels)


def official_series(
    name: str,
    *,
    n_checkpoints: int = 20,
    indices: list[int] | None = None,
    n_prompts: int = 8,
    n_tokens: int = 64,
    bos: bool | None = None,
) -> CheckpointSeries:
    """A TransformerLens official model with training checkpoints (needs the hub): the
    checkpoints at ``indices`` (default: ``n_checkpoints`` log-spaced ones)."""
    from transformer_lens.loading_from_pretrained import get_checkpoint_labels

    from circuits.zoo.load import load_official_checkpoint

    try:
        labels, label_type = get_checkpoint_labels(name)
    except ValueError as err:
        raise UsageError(f"{name} has no training checkpoints in TransformerLens: {err}") from None
    chosen = indices if indices is not None else log_spaced_indices(len(labels), n_checkpoints)
    bad = [i for i in chosen if not 0 <= i < len(labels)]
    if bad:
        raise UsageError(f"{name} has checkpoint indices 0..{len(labels) - 1}; got {bad}")
    by_step = {int(labels[i]): i for i in chosen}
    return _zoo_series(
        f"TransformerLens official {name} (checkpoints by {label_type})",
        sorted(by_step),
        lambda step: load_official_checkpoint(name, by_step[step], progress=False),
        bos=bos,
        n_prompts=n_prompts,
        n_tokens=n_tokens,
        info={
            "label_type": label_type,
            "checkpoint_index": {str(s): by_step[s] for s in sorted(by_step)},
        },
    )


def load_or_skip(series: CheckpointSeries, step: int) -> HookedModel | None:
    """The model at ``step``, or None (with a warning) when its saved file is damaged."""
    import warnings

    try:
        return series.load(step)
    except ChecksumError as err:  # never measured: left out, said in the trace and aloud
        warnings.warn(f"{err}; checkpoint {step} is left out of the trace", stacklevel=2)
        return None


def each_model(
    series: CheckpointSeries, *, desc: str, progress: bool, skipped: list[int]
) -> Iterator[tuple[int, HookedModel]]:
    """``(step, model)`` for every checkpoint in step order, with a progress bar when asked; a
    damaged checkpoint is left out (``load_or_skip``) and its step appended to ``skipped``."""
    steps: Any = series.steps
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(series.steps, desc=desc, unit="ckpt")
    for step in steps:
        model = load_or_skip(series, step)
        if model is None:
            skipped.append(step)
        else:
            yield step, model
