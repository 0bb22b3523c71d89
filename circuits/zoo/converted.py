"""The float32 cache of converted models: a HookedTransformer saved once per source file, so later
loads skip the slow GGUF dequantization (SmolLM2 ~30 s, Gemma 3 ~90 s).

An entry, ``ENTRY_DIR/hooked-<source sha256>-tl<TransformerLens version>/``, holds the config,
the weights (safetensors) and the tokenizer, plus a ``manifest.json`` of every file's sha256,
written with it and checked before every load: any changed, missing or truncated file (the
config and tokenizer included, which could otherwise change numbers silently) makes the entry
damaged, and a damaged entry is removed and converted again (``load_or_convert``). Entries are
written into a temporary sibling and renamed into place; callers hold the entry's cache lock
(``circuits.core.cache.cache_lock``), so two processes convert once, and temporary folders
left by a killed conversion are removed by the next one.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from circuits.backend import HookedModel, ModelConfig
from circuits.core.errors import ChecksumError
from circuits.core.manifest import verify_folder, write_manifest

_TMP_PREFIX = ".hooked-"


def _cfg_to_json(cfg: ModelConfig) -> dict[str, Any]:
    data = cfg.to_dict()
    data["dtype"] = str(data["dtype"]).removeprefix("torch.")
    return data


def _cfg_from_json(data: dict[str, Any]) -> ModelConfig:
    data = dict(data)
    data["dtype"] = getattr(torch, data["dtype"])
    return ModelConfig.from_dict(data)


def converted_cache_dir(entry_dir: Path, source_sha256: str) -> Path:
    tl_version = importlib.metadata.version("transformer-lens")
    return entry_dir / f"hooked-{source_sha256[:16]}-tl{tl_version}"


def save_converted(model: HookedModel, tokenizer_dir: Path, target: Path) -> None:
    """Write config, weights, tokenizer and manifest into ``target`` (via a temporary sibling)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=target.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(_cfg_to_json(model.cfg), indent=1))
        weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        write_manifest(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_converted(target: Path, dtype: str = "float32") -> HookedModel:
    """Load a model written by ``save_converted`` in ``dtype``, after checking every file against
    its manifest. Each float32 tensor is cast as it is read, so a half-precision load never
    holds the whole float32 model."""
    from safetensors import safe_open
    from transformers import AutoTokenizer

    verify_folder(target)
    cfg = _cfg_from_json(json.loads((target / "config.json").read_text()))
    cfg.init_weights = False  # every weight is overwritten by the state dict below
    cfg.dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(target / "tokenizer"))
    model = HookedModel(
        cfg, tokenizer=tokenizer, move_to_device=False, default_padding_side="right"
    )
    # assign: the model takes the loaded tensors instead of copying them into fresh ones
    weights = {}
    with safe_open(str(target / "model.safetensors"), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open has keys(), not iteration)
            tensor = f.get_tensor(key)
            # a tensor kept as read would keep the whole file mapped (and its float32 pages
            # resident): the boolean masks are copied, the floats cast (a copy in a half dtype)
            weights[key] = tensor.to(cfg.dtype) if tensor.is_floating_point() else tensor.clone()
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def remove_stale(entry_dir: Path) -> None:
    """Temporary folders of conversions that were killed (call with the entry's lock held)."""
    for stale in entry_dir.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def load_or_convert(
    target: Path,
    convert: Callable[[Path], HookedModel],
    say: Callable[[str], None],
    dtype: str = "float32",
) -> HookedModel:
    """The cached model at ``target``; converted with ``convert(tokenizer_dir)`` and cached when
    missing, and again when the cached entry is damaged (with a warning)."""
    remove_stale(target.parent)
    if target.exists():
        try:
            say(f"loading cached float32 weights from {target}")
            return load_converted(target, dtype)
        except ChecksumError as err:
            print(f"p0-circuits: warning: {err}; converting it again", file=sys.stderr)
            shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tok_dir:
        model = convert(Path(tok_dir))
        save_converted(model, Path(tok_dir), target)
    # reload so the tokenizer points at the cache folder (the temporary one is gone)
    return load_converted(target, dtype)
