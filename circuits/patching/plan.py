"""What a discovery will need, from the model's shape alone: ``p0-circuits plan``.

Memory (bytes), for ``n_prompts`` x ``n_tokens`` prompts in ``dtype`` (2 bytes for bfloat16 /
float16, 4 for float32):

* **weights**: every parameter the loaded model holds (``ModelShape.resident_params``: tied
  embeddings are two matrices in a ``HookedTransformer``) in ``dtype``. On the CPU a model
  loaded from the converted float32 cache (``cpu_weights``) differs: in float32 its tensors map
  the cache file, so the embedding is resident only in the prompts' rows (left out) and the
  unembedding only once the prediction step reads it; in a half dtype the load reads the whole
  float32 file while it casts, so the process peaks at ``PROCESS_GB`` plus ``4 + b`` bytes per
  parameter before the discovery starts. A zoo shape is built in its dtype and has neither;
* **caches**: the engine keeps the clean and the counterfactual value of six activations per
  block (``resid_pre``, ``z``, ``attn_out``, ``resid_mid``, ``mlp_out``, ``resid_post``) for
  every prompt token: ``2 * n_layers * (5 * d_model + n_heads * d_head)`` values per token; a
  mixture-of-experts model also keeps each expert's routed contribution in the blocks whose
  experts are patched (``hook_expert_out``, ``circuits.backend.experts``; discover: the selected
  MLPs, counted as ``EXPERT_BLOCKS``): ``2 * EXPERT_BLOCKS * n_experts * d_model`` more;
* **a stacked row**: one prompt's activations inside the block being computed (the residual
  and its norms, the MLP's hidden tensors for the experts a token uses, queries and per-head
  keys / values / z, scores and pattern): ``8 d_model + 3 d_mlp_active + 4 n_heads d_head +
  3 n_heads n_tokens`` values per token (an MoE block adds its per-expert contributions,
  ``n_experts * d_model``), with ``SAFETY`` for the allocator's slack;
* **the readout's logits** (``prediction``, default on: the step runs when the discovery finds
  a circuit): the prediction step's loss and KL in float32. The readouts unembed a piece of the
  prompts at a time (``logit_chunks``), so live are ``d_vocab`` values per prompt token for the
  clean log-probabilities and ``LOGIT_COPIES - 1`` more per token of one piece (a patch's
  logits, log-probabilities and KL's temporaries). A piece holds up to ``LOGIT_CHUNK_VALUES``
  logits, the size from which the tuned CPU allocator maps each block on its own and returns it
  when freed (smaller blocks of one size, kept in its heap, were not reliably reused:
  ``benchmarks/bench_logit_memory.py``). On a GPU the step runs after the stacked forwards
  have freed theirs, so the peak holds the larger of the two; on the CPU the allocator keeps
  what the stacked forwards freed (``circuits.patching.allocator``), so it holds their sum;
* **the process** itself (Python, torch, the tokenizer): ``PROCESS_GB``, and on the CPU the
  report's figures (matplotlib): ``REPORT_GB``.

Rows per forward: the most whole patches (``n_prompts`` rows each) that fit what the budget
leaves, at most ``MAX_ROWS`` (discover's default). On several cards the weights and caches
split by layer (TransformerLens' ``n_devices``), so each card holds ``1 / n`` of them and the
stacked rows of the block it computes.

Time: a discovery patches about ``4 n_layers + 2`` components and heads, each a forward of
``n_prompts`` rows over, on average, half the blocks; its FLOPs are that times ``2 *
active_params`` per token plus attention's ``4 n_tokens n_heads d_head`` per token and block.
On this machine's CPU the seconds per FLOP are calibrated on SmolLM2's measured float32
discovery (``CPU_CALIBRATION``); on a GPU class its dense peak is used at ``GPU_UTILISATION``,
plus ``GPU_BLOCK_OVERHEAD_S`` per block of each patched forward.
Both are estimates; ``results/performance/plan.md`` sets them against measured peaks and times.
"""

from __future__ import annotations

from dataclasses import dataclass

from circuits.patching.allocator import MMAP_THRESHOLD_BYTES
from circuits.zoo.shapes import PUBLISHED_SHAPES, ModelShape

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SAFETY = 1.5
PROCESS_GB = 0.55
"""The process before any model: Python, torch, TransformerLens, transformers (527 MB measured)."""
REPORT_GB = 0.3
"""What drawing the report's figures adds to the process (0.29 GB measured after SmolLM2's
discovery, float32 and bfloat16 alike)."""
LOGIT_COPIES = 5
LOGIT_CHUNK_VALUES = MMAP_THRESHOLD_BYTES // 4
"""Float32 logits the full-vocabulary readouts (loss, KL) unembed at once: 512 MB a copy, the
tuned allocator's mapping threshold (module docstring)."""
MAX_ROWS = 64
CPU_CALIBRATION = ("smollm2-135m", 95.0)
"""(model, seconds) of one measured float32 discovery (8 x 64 tokens, every step) on this
project's 2-core CPU machines (docs/discover.md, "Speed and memory")."""
CPU_DTYPE_SPEED = {"float32": 1.0, "bfloat16": 0.52, "float16": 3.1}
"""Time of one SmolLM2 forward (8 x 64) in each dtype over float32's, measured on this CPU."""
GPU_PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0, "a100": 312.0, "l40s": 362.0, "rtx4090": 165.0}
"""Dense bfloat16 / float16 tensor-core peaks (float32: an eighth, TF32 aside)."""
GPU_UTILISATION = 0.3
GPU_BLOCK_OVERHEAD_S = 1e-3
"""Launch and Python overhead of one block of one patched forward on a GPU (small batches are
overhead-bound there)."""


@dataclass(frozen=True)
class Plan:
    """Memory per card and time of one discovery (module docstring); bytes and seconds."""

    shape: ModelShape
    dtype: str
    n_prompts: int
    n_tokens: int
    n_cards: int
    weights: int
    caches: int
    per_row: int
    logits: int
    rows: int
    peak_per_card: int
    fits: bool
    flops: float

    def cpu_seconds(self) -> float:
        ref = PUBLISHED_SHAPES[CPU_CALIBRATION[0]]
        ref_flops = discovery_flops(ref, 8, 64)
        return CPU_CALIBRATION[1] * self.flops / ref_flops * CPU_DTYPE_SPEED[self.dtype]

    def gpu_seconds(self, gpu: str) -> float:
        peak = GPU_PEAK_TFLOPS[gpu] * 1e12 * (1 if self.dtype != "float32" else 0.125)
        compute = self.flops / (peak * GPU_UTILISATION * self.n_cards)
        return compute + discovery_patches(self.shape) * self.shape.n_layers * GPU_BLOCK_OVERHEAD_S


EXPERT_BLOCKS = 2
"""MoE blocks whose experts a discovery patches (the selected MLPs; the paper's circuit has one
or two early MLPs): their per-expert contributions are cached."""


def discovery_patches(shape: ModelShape) -> int:
    """About how many patched forwards one discovery runs (components, heads, curve)."""
    return 4 * shape.n_layers + 2


def discovery_flops(shape: ModelShape, n_prompts: int, n_tokens: int) -> float:
    """The FLOPs of one discovery (module docstring)."""
    patches = discovery_patches(shape)
    per_token = 2 * shape.active_params + 4 * n_tokens * shape.n_heads * shape.d_head * (
        shape.n_layers
    )
    return patches * n_prompts * n_tokens * per_token / 2  # half the blocks on average


def cpu_weights(shape: ModelShape, dtype: str, prediction: bool) -> tuple[int, int]:
    """``(resident weight bytes, load peak bytes)`` of ``shape`` loaded on the CPU (module
    docstring: a float32 cache maps its file; a half dtype reads it whole while it casts)."""
    b = DTYPE_BYTES[dtype]
    if shape.built_in_dtype:
        return shape.resident_params * b, 0
    if b == 4:
        table = shape.d_vocab * shape.d_model
        return 4 * (shape.resident_params - table * (1 if prediction else 2)), 0
    return shape.resident_params * b, int(PROCESS_GB * GIB) + (4 + b) * shape.resident_params


def plan(
    shape: ModelShape,
    *,
    dtype: str = "float32",
    n_prompts: int = 8,
    n_tokens: int = 64,
    n_cards: int = 1,
    card_gb: float | None = None,
    memory_gb: float = 24.0,
    prediction: bool = True,
) -> Plan:
    """The plan for one discovery of ``shape`` on ``n_cards`` cards of ``card_gb`` (None: this
    machine's CPU with ``memory_gb``); ``prediction``: whether the prediction step (the
    unembedding of every patch) is counted."""
    b = DTYPE_BYTES[dtype]
    tokens = n_prompts * n_tokens
    on_cpu = card_gb is None
    weights, load_peak = (
        cpu_weights(shape, dtype, prediction) if on_cpu else (shape.resident_params * b, 0)
    )
    per_expert = shape.n_experts * shape.d_model  # each expert's routed contribution (MoE)
    kept = shape.n_layers * (5 * shape.d_model + shape.n_heads * shape.d_head)
    kept += min(EXPERT_BLOCKS, shape.n_layers) * per_expert
    caches = 2 * kept * tokens * b
    d_mlp = shape.experts_per_token * shape.d_mlp if shape.n_experts else shape.d_mlp
    per_token = (
        8 * shape.d_model
        + per_expert
        + 3 * d_mlp
        + 4 * shape.n_heads * shape.d_head
        + 3 * shape.n_heads * n_tokens
    )
    per_row = int(per_token * n_tokens * b * SAFETY)
    logits = logit_bytes(shape.d_vocab, n_prompts, n_tokens) if prediction else 0
    cards = max(1, n_cards) if not on_cpu else 1
    budget = (card_gb if card_gb is not None else memory_gb) * GIB
    fixed = (weights + caches) / cards
    if on_cpu:  # the process, its figures, and the logits the allocator keeps
        fixed += (PROCESS_GB + REPORT_GB) * GIB + logits
    patches = int((budget - fixed) // (per_row * n_prompts)) if budget > fixed else 0
    rows = min(MAX_ROWS // n_prompts, patches) * n_prompts
    stacked = max(rows, n_prompts) * per_row
    peak = int(fixed + (stacked if on_cpu else max(stacked, logits)))
    if on_cpu:
        peak = max(peak, int(load_peak))
    return Plan(
        shape=shape,
        dtype=dtype,
        n_prompts=n_prompts,
        n_tokens=n_tokens,
        n_cards=cards,
        weights=weights,
        caches=caches,
        per_row=per_row,
        logits=logits,
        rows=rows,
        peak_per_card=peak,
        fits=rows >= n_prompts,
        flops=discovery_flops(shape, n_prompts, n_tokens),
    )


def logit_bytes(d_vocab: int, n_prompts: int, n_tokens: int) -> int:
    """What the prediction step's loss and KL hold at their peak (module docstring)."""
    piece = logit_chunks(n_prompts, n_tokens, d_vocab)[0]
    piece_tokens = (piece.stop - piece.start) * n_tokens
    return 4 * d_vocab * (n_prompts * n_tokens + (LOGIT_COPIES - 1) * piece_tokens)


def logit_chunks(n_prompts: int, n_positions: int, d_vocab: int) -> list[slice]:
    """The prompt slices the loss and KL readouts unembed one at a time: as many whole prompts
    as keep one piece's float32 logits within ``LOGIT_CHUNK_VALUES`` (at least one prompt)."""
    per = max(1, LOGIT_CHUNK_VALUES // max(1, n_positions * d_vocab))
    return [slice(i, min(i + per, n_prompts)) for i in range(0, n_prompts, per)]


def smallest_fit(
    shape: ModelShape, *, card_gb: float, n_prompts: int, n_tokens: int
) -> Plan | None:
    """The first plan that fits, trying bfloat16 before float32 and 1, 2, 4, 8 cards."""
    for cards in (1, 2, 4, 8):
        for dtype in ("bfloat16", "float32"):
            p = plan(
                shape, dtype=dtype, n_prompts=n_prompts, n_tokens=n_tokens, n_cards=cards,
                card_gb=card_gb,
            )  # fmt: skip
            if p.fits:
                return p
    return None
