"""How many stacked rows a forward may use within a memory budget (``discover --max-memory``).

The engine stacks patched copies of the prompts into one forward of at most ``max_rows`` rows
(``circuits.patching.engine``). A row is one prompt of ``n_tokens`` tokens; under inference one
block's activations of it are at most, in float32 bytes,

    4 * n_tokens * (8 * d_model + 3 * d_mlp + 4 * n_heads * d_head + 3 * n_heads * n_tokens)

(the residual and its norms, the gated MLP's three d_mlp tensors, queries and per-query-head
keys / values / z, scores and pattern), plus the next-token readouts' rows of logits, 3 * d_vocab
per token (logits, log-softmax, the clean distribution). The fixed part is the weights and the
engine's clean caches (the residual before every block: ``n_layers * n_prompts * n_tokens *
d_model`` floats, twice). ``rows_within`` divides what is left by a row's bytes, with
``SAFETY`` for the allocator's slack; measured peaks are in ``results/performance/``.
"""

from __future__ import annotations

from typing import Any

from circuits.core.errors import UsageError

SAFETY = 1.5
GIB = 1024**3


def row_bytes(cfg: Any, n_tokens: int) -> int:
    """The activation bytes of one stacked row in one block (module docstring), with logits."""
    per_token = (
        8 * cfg.d_model
        + 3 * cfg.d_mlp
        + 4 * cfg.n_heads * cfg.d_head
        + 3 * cfg.n_heads * n_tokens
        + 3 * cfg.d_vocab
    )
    return int(4 * n_tokens * per_token * SAFETY)


def fixed_bytes(model: Any, n_prompts: int, n_tokens: int) -> int:
    """Weights plus the clean caches the engine keeps."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    cfg = model.cfg
    caches = 2 * 4 * cfg.n_layers * n_prompts * n_tokens * cfg.d_model
    return int(weights + caches)


def rows_within(model: Any, n_prompts: int, n_tokens: int, max_memory_gb: float) -> int:
    """The largest ``max_rows`` (a multiple of ``n_prompts``: whole patches) that fits
    ``max_memory_gb``; ``UsageError`` when not even one patch of the prompts fits."""
    budget = max_memory_gb * GIB - fixed_bytes(model, n_prompts, n_tokens)
    per_row = row_bytes(model.cfg, n_tokens)
    patches = int(budget // (per_row * n_prompts)) if budget > 0 else 0
    if patches < 1:
        need = (fixed_bytes(model, n_prompts, n_tokens) + per_row * n_prompts) / GIB
        raise UsageError(
            f"--max-memory {max_memory_gb:g} GB cannot hold the model, its clean caches and one "
            f"patch of {n_prompts} x {n_tokens} tokens (about {need:.1f} GB): raise it, or ask "
            "for fewer prompts or tokens"
        )
    return patches * n_prompts
