"""The calibration check of the issue, independent of TransformerLens: a plain PyTorch pre-LN
transformer (1 head per layer, learned positions, ReLU MLP, AdamW) trained on the toolkit's own
Bigram-Backcopy batches (``BigramBackcopyTask``, same seed stream as ``p0-circuits train``), with
the attention to key 0 measured on the same evaluation batch as ``p0-circuits trace``.

``--init torch`` keeps PyTorch's defaults (``nn.Embedding``: N(0, 1); ``nn.Linear``: Kaiming
uniform); ``--init tl`` draws every weight from N(0, 0.8 / sqrt(d_model)) and zeroes biases, as
TransformerLens' default initialisation does. Everything else is equal, so a difference between
the two is the initialisation's.

    python results/emergence/calibration/plain_pytorch_bb.py --init torch --layers 1 --steps 2000
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn

from circuits.training.config import TrainConfig
from circuits.training.data import DataSource


class Block(nn.Module):
    def __init__(self, d: int, d_mlp: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, d_mlp), nn.ReLU(), nn.Linear(d_mlp, d))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
        mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        pattern = scores.masked_fill(mask, float("-inf")).softmax(-1)
        x = x + self.out(pattern @ v)
        return x + self.mlp(self.ln2(x)), pattern


class Model(nn.Module):
    def __init__(self, vocab: int, n_ctx: int, d: int, layers: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.blocks = nn.ModuleList(Block(d, 4 * d) for _ in range(layers))
        self.ln, self.unembed = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]))
        patterns = []
        for block in self.blocks:
            x, p = block(x)
            patterns.append(p)
        return self.unembed(self.ln(x)), patterns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", choices=["torch", "tl"], default="torch")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--bos", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = TrainConfig(
        n_layers=args.layers,
        d_model=128,
        n_heads=1,
        n_ctx=64,
        norm="ln",
        positional="learned",
        mlp="relu",
        data="bigram-backcopy",
        bos=args.bos,
        steps=args.steps,
        batch_size=64,
        lr=args.lr,
        weight_decay=0.01,
        seed=0,
    )
    data = DataSource(config)
    torch.manual_seed(0)
    model = Model(data.vocab_size, 64, 128, args.layers)
    if args.init == "tl":
        std = 0.8 / math.sqrt(128)
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                nn.init.normal_(p, std=std)
            elif "ln" not in name:
                nn.init.zeros_(p)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    evals = data.eval_batch(32)
    start, rows = time.perf_counter(), []
    for step in range(args.steps + 1):
        if step in (0, 100, 200, 500, 1000, 2000, 4000) or step == args.steps:
            with torch.no_grad():
                _, patterns = model(evals)
            rows.append(
                {
                    "step": step,
                    "attn_to_key0": [round(p[:, 1:, 0].mean().item(), 3) for p in patterns],
                    "attn_to_self": [
                        round(p[:, 2:].diagonal(offset=2, dim1=1, dim2=2).mean().item(), 3)
                        for p in patterns
                    ],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        if step == args.steps:
            break
        tokens = data.batch(step)
        logits, _ = model(tokens)
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(
        json.dumps(
            {
                "init": args.init,
                "layers": args.layers,
                "lr": args.lr,
                "bos": args.bos,
                "final_loss": round(loss.item(), 3),
                "seconds": round(time.perf_counter() - start),
            }
        )
    )


if __name__ == "__main__":
    main()
