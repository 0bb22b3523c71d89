"""The model and optimiser of a run: a ``HookedTransformer`` built from ``TrainConfig``, AdamW, the
learning-rate schedule and the log-spaced checkpoint steps.

Model: pre-norm (RMSNorm or LayerNorm), rotary or learned absolute positions, plain GELU MLP or
llama's gated SiLU MLP, or mixture-of-experts MLPs (``n_experts``). The defaults (RMSNorm + rotary + gated SiLU: llama-style) are the
architecture the paper studies. The loss is TransformerLens' own next-token cross-entropy
(``model(tokens, return_type="loss")``).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from circuits.backend import HookedModel, ModelConfig, require_hooked_transformer
from circuits.backend.experts import expose_experts
from circuits.training.config import NORMS, POSITIONALS, TrainConfig


def hooked_config(config: TrainConfig, vocab_size: int) -> ModelConfig:
    """The TransformerLens config of a run's model."""
    return ModelConfig(
        n_layers=config.n_layers,
        d_model=config.d_model,
        n_ctx=config.n_ctx,
        d_head=config.d_head,
        n_heads=config.n_heads,
        d_mlp=config.d_mlp or 4 * config.d_model,
        d_vocab=vocab_size,
        act_fn={"gated-silu": "silu", "gelu": "gelu", "relu": "relu"}[config.mlp],
        gated_mlp=config.mlp == "gated-silu",
        normalization_type=NORMS[config.norm],
        final_rms=config.norm == "rms",
        positional_embedding_type=POSITIONALS[config.positional],
        rotary_dim=config.d_head if config.positional == "rotary" else None,
        seed=config.seed,
        **(
            {"num_experts": config.n_experts, "experts_per_token": config.experts_per_token}
            if config.n_experts
            else {}
        ),
        init_weights=True,
        default_prepend_bos=False,
        device="cpu",  # built on the CPU; train() moves it
    )


def zero_p0_token_embedding(
    embed: Float[Tensor, "batch pos d_model"], hook: HookPoint
) -> Float[Tensor, "batch pos d_model"]:
    """``hook_embed`` hook: position 0's token embedding replaced by zeros (its positional
    embedding, added after this hook, stays): a content-free first token without a BOS id."""
    out = embed.clone()
    out[:, 0] = 0.0
    return out


def build_model(config: TrainConfig, vocab_size: int) -> HookedModel:
    """A freshly initialised model (TransformerLens' GPT-2 init, seeded by ``config.seed``).

    With ``config.zero_p0_embedding`` the model carries a *permanent* ``hook_embed`` hook that
    zeroes P0's token embedding, so every use of it (training, trace, patching) sees the same
    function; ``model.reset_hooks()`` keeps it (``including_permanent=False``)."""
    require_hooked_transformer("training and training runs (p0-circuits train, RUN_DIR models)")
    model = expose_experts(HookedModel(hooked_config(config, vocab_size)))  # MoE: expert hooks
    if config.zero_p0_embedding:
        model.hook_embed.add_hook(zero_p0_token_embedding, is_permanent=True)
    model.eval()  # no dropout anywhere; eval/train only matters for bitwise replay
    return model


def make_optimizer(model: HookedModel, config: TrainConfig) -> torch.optim.AdamW:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _name, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=config.betas,
        eps=1e-8,
        foreach=False,
    )


def lr_at(config: TrainConfig, step: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``lr * min_lr_ratio``."""
    if config.warmup and step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * progress))


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """Step 0 plus ``n`` log-spaced steps in [1, steps] (rounded, unique, ``steps`` included)."""
    points = {0, steps}
    for i in range(n):
        points.add(int(round(math.exp(math.log(steps) * i / max(1, n - 1)))))
    return sorted(p for p in points if 0 <= p <= steps)
