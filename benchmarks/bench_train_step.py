"""What one training step of a config costs here, and what its whole run would cost: the CPU
estimate behind results/emergence/README.md's GPU recipe.

Experiment: the config (default ``results/emergence/gpu_recipe/gu60m_nobos.toml``) is built with
the toolkit's own model and optimizer (``circuits.training.model``); ``--micro-steps`` forward +
backward passes of ``--micro-batch`` random sequences of the config's context, then one AdamW
step, are timed after one warm-up pass. Tokens per second are extrapolated to the config's
``steps * batch_size * n_ctx`` tokens. The FLOP rate (6 x parameters per token, plus attention)
is printed beside it, so the estimate can be rescaled for another machine.

    python benchmarks/bench_train_step.py [--config FILE] [--micro-batch 1] [--micro-steps 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import tomllib
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=ROOT / "results/emergence/gpu_recipe/gu60m_nobos.toml"
    )
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--micro-steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from circuits.training.config import TrainConfig
    from circuits.training.model import build_model, make_optimizer

    data = tomllib.loads(args.config.read_text())
    data["data"] = "bigram-backcopy"  # the token file is not needed to time a step
    data["task"] = {}
    config = TrainConfig.from_dict(data)
    vocab = int(tomllib.loads(args.config.read_text()).get("vocab_size", config.vocab_size))
    model = build_model(config, vocab)
    opt = make_optimizer(model, config)
    gen = torch.Generator().manual_seed(0)
    shape = (args.micro_batch, config.n_ctx)

    def micro() -> None:
        tokens = torch.randint(0, vocab, shape, generator=gen)
        model(tokens, return_type="loss").backward()

    micro()  # warm-up
    opt.zero_grad()
    start = time.perf_counter()
    for _ in range(args.micro_steps):
        micro()
    opt.step()
    seconds = time.perf_counter() - start
    tokens = args.micro_steps * args.micro_batch * config.n_ctx
    tok_s = tokens / seconds
    cfg = model.cfg
    params = cfg.n_params + cfg.d_model * cfg.d_vocab  # blocks + unembedding (matmul FLOPs)
    attn = 12 * cfg.n_layers * (config.n_ctx / 2) * cfg.d_model
    flop_per_token = 6 * params + attn
    run_tokens = config.steps * config.batch_size * config.n_ctx
    result = {
        "config": str(args.config.relative_to(ROOT))
        if args.config.is_relative_to(ROOT)
        else str(args.config),
        "non_embedding_params": cfg.n_params,
        "micro_batch": args.micro_batch,
        "tokens_timed": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tok_s, 1),
        "gflop_per_token": round(flop_per_token / 1e9, 3),
        "achieved_gflop_s": round(tok_s * flop_per_token / 1e9, 1),
        "run_tokens": run_tokens,
        "run_flop": f"{run_tokens * flop_per_token:.3g}",
        "estimated_run_days_here": round(run_tokens / tok_s / 86400, 1),
        "threads": args.threads,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
