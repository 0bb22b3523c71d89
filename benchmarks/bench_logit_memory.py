"""What the loss and KL readouts hold: the vocabulary unembedded in pieces against all at once.

The prediction step (``circuits.circuit.prediction``) reads every patch by ``LossAndKL``: the
next-token loss and KL(clean || patched) over the whole vocabulary. It unembeds a few prompts at a
time (``circuits.patching.plan.logit_chunks``) and holds only the clean log-probabilities whole;
Three sides: ``pieces`` (``LOGIT_CHUNK_VALUES``: 512 MB a copy), ``small_pieces`` (128 MB a
copy: below the tuned allocator's mapping threshold) and ``whole`` (every prompt at once, as the
readout did before). Each runs in its own child process (a fresh heap) on a model with Gemma 3's
262,144-token vocabulary (d_model 128, 2 layers, random weights: the unembedding, not the
blocks, is what is measured), 16 prompts x 64 tokens (1 GB of logits a copy), four patched
sites, under two allocators:

* ``tuned``: glibc with the thresholds ``discover`` raises (``circuits.patching.allocator``):
  freed blocks stay in the heap for reuse;
* ``live``: glibc's defaults (``P0_CIRCUITS_MALLOC_TUNING=0``): every block this size is its own
  mapping, returned when freed, so RSS follows the live tensors (what a GPU's caching allocator,
  reusing blocks of one size, comes close to).

For each: ``extra_mb`` (peak RSS while the patches are read minus RSS before, sampled every 2 ms),
``seconds`` (the four patches), and ``plan_mb``, the plan's logits term (``logit_bytes``). The
values of every side must agree (max |diff|).
Run it with nothing else on the machine.

    python benchmarks/bench_logit_memory.py --out results/performance/logit_pieces.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

D_VOCAB, D_MODEL, N_PROMPTS, N_TOKENS = 262_144, 128, 16, 64
CHUNK_VALUES = {"whole": 1 << 62, "small_pieces": 1 << 25}


def side(pieces: str) -> dict:
    """One side in this process: the readout's extra memory, its time and its values."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from _sides import PeakRSS

    import circuits.patching.plan as plan_module
    from circuits.patching import LossAndKL, Patcher, Site
    from circuits.patching.allocator import keep_freed_memory
    from circuits.zoo import tiny_model

    keep_freed_memory()  # as discover runs (a no-op under P0_CIRCUITS_MALLOC_TUNING=0)
    plan_module.LOGIT_CHUNK_VALUES = CHUNK_VALUES.get(pieces, plan_module.LOGIT_CHUNK_VALUES)
    torch.set_grad_enabled(False)
    model = tiny_model(seed=0, d_vocab=D_VOCAB, d_model=D_MODEL, n_ctx=2 * N_TOKENS)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, D_VOCAB, (N_PROMPTS, N_TOKENS), generator=gen)
    patcher = Patcher(model, tokens, "shift")
    sites = [Site("mlp", 0), Site("attn", 0), Site("mlp", 1), Site("attn", 1)]
    patcher.patch(sites[:1])  # warm the clean run with the sink score (no unembedding)
    start = time.perf_counter()
    with PeakRSS() as rss:
        res = patcher.patch(sites, LossAndKL())
    seconds = time.perf_counter() - start
    assert res.detail is not None
    return {
        "pieces": len(plan_module.logit_chunks(N_PROMPTS, N_TOKENS, D_VOCAB)),
        "extra_mb": round(rss.peak - rss.start, 1),
        "seconds": round(seconds, 2),
        "detail": res.detail.tolist(),
    }


def plan_mb(chunk_values: int) -> float:
    """The plan's logits term for this benchmark's sizes with pieces of ``chunk_values``."""
    import circuits.patching.plan as plan_module

    kept = plan_module.LOGIT_CHUNK_VALUES
    plan_module.LOGIT_CHUNK_VALUES = chunk_values
    try:
        return round(plan_module.logit_bytes(D_VOCAB, N_PROMPTS, N_TOKENS) / 2**20, 1)
    finally:
        plan_module.LOGIT_CHUNK_VALUES = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the JSON here (default: print only)")
    parser.add_argument(
        "--side", choices=("pieces", "small_pieces", "whole"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side(args.side)))
        return
    from circuits.patching.plan import LOGIT_CHUNK_VALUES

    rows = []
    for allocator in ("tuned", "live"):
        env = dict(os.environ, P0_CIRCUITS_MALLOC_TUNING="1" if allocator == "tuned" else "0")
        for pieces in ("pieces", "small_pieces", "whole"):
            cmd = [sys.executable, __file__, "--side", pieces]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            row = {"allocator": allocator, "side": pieces}
            row |= json.loads(out.stdout.strip().splitlines()[-1])
            row["plan_mb"] = plan_mb(CHUNK_VALUES.get(pieces, LOGIT_CHUNK_VALUES))
            rows.append(row)
            print({k: v for k, v in row.items() if k != "detail"}, file=sys.stderr)
    ref = rows[0]["detail"]
    diff = max(
        abs(a - b)
        for r in rows[1:]
        for ra, rb in zip(ref, r["detail"], strict=True)
        for a, b in zip(ra, rb, strict=True)
    )
    result = {
        "sizes": {"d_vocab": D_VOCAB, "d_model": D_MODEL, "prompts": N_PROMPTS, "tokens": N_TOKENS},
        "sides": [{k: v for k, v in r.items() if k != "detail"} for r in rows],
        "values_max_abs_diff": diff,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
