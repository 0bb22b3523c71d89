"""A Hugging Face checkpoint series made outside the toolkit, for ``p0-circuits trace FOLDER``.

A Pythia-style model (``transformers``' GPT-NeoX: parallel attention + MLP, partial rotary,
LayerNorm, GELU) is trained by a plain PyTorch loop (no p0-circuits code in the loop) on the
same stdlib-documentation tokens ``p0-circuits train --data stdlib`` uses, with BOS
(``<|endoftext|>``) prepended to every window, and saved with ``save_pretrained`` (plus the
tokenizer) into ``OUT/step{N}`` at log-spaced steps, the way Pythia's revisions are named.

    python results/emergence/hf_series/make_checkpoints.py OUT [--steps 2000]
    p0-circuits trace OUT --bos --out results/emergence/hf_series --n-tokens 64
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import transformers

from circuits.training.corpus import load_text_corpus, text_batch


def log_steps(last: int, n: int) -> list[int]:
    steps = {0, last} | {round(math.exp(i * math.log(last) / (n - 1))) for i in range(n)}
    return sorted(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_text_corpus(2048)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(corpus.tokenizer_path),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
    )
    config = transformers.GPTNeoXConfig(
        vocab_size=corpus.vocab_size,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=128,
        rotary_pct=0.25,
        bos_token_id=corpus.bos_token_id,
        eos_token_id=corpus.bos_token_id,
    )
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    save_at = set(log_steps(args.steps, args.checkpoints))
    start = time.perf_counter()
    for step in range(args.steps + 1):
        if step in save_at:
            folder = args.out / f"step{step}"
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        if step == args.steps:
            break
        batch = text_batch(corpus, batch_size=32, n_ctx=64, bos=True, seed=0, step=step)
        loss = model(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0:
            print(f"step {step} loss {loss.item():.3f} {time.perf_counter() - start:.0f} s", flush=True)
    print(f"{len(save_at)} checkpoints in {args.out}, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
