"""A mixture-of-experts block's experts and router, as hooks one can patch and read.

TransformerLens 3's ``MoE`` hooks the router (``mlp.hook_expert_weights``: the softmax over all
experts before top-k, flattened to ``[batch * pos, n_experts]``; ``mlp.hook_expert_indices``)
and each expert's hidden activations over the tokens routed to it (a flattened subset whose
shape changes with the routing), but not what an expert *adds* at a position. ``expose_experts``
gives every MoE block of a 3.x model two more hooks, computing the same block output:

* ``blocks.L.mlp.hook_router_probs`` ``[batch, pos, n_experts]``: each position's router
  distribution (the softmax over all experts, before top-k), unflattened;
* ``blocks.L.mlp.hook_expert_out`` ``[batch, pos, n_experts, d_model]``: each expert's *routed
  contribution* at each position: its output times its routing weight where the router chose
  it, zero where it did not. The block's output is their sum over experts.

The experts run on the tokens routed to them, as in TransformerLens (the same FLOPs); only the
contributions are kept per expert (``n_experts * d_model`` numbers per token) before summing.
A TransformerLens 4 bridge runs the experts fused inside transformers' forward: there is no
per-expert output there (``experts_unavailable`` says so by name).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from circuits.backend import ON_BRIDGE

EXPERT_OUT = "mlp.hook_expert_out"
ROUTER_PROBS = "mlp.hook_router_probs"


def is_moe(cfg: Any) -> bool:
    """Whether the model's MLPs are mixtures of experts."""
    return bool(getattr(cfg, "num_experts", None))


def experts_unavailable(model: Any) -> str | None:
    """Why this model has no per-expert hooks (None: it has them)."""
    if not is_moe(model.cfg):
        return "the model's MLPs are dense (no experts)"
    if ON_BRIDGE:
        return (
            "a TransformerLens 4 bridge runs an MoE's experts fused inside transformers' forward "
            "(no per-expert output to patch or read); load the model on TransformerLens 3.x"
        )
    if getattr(model.cfg, "original_architecture", None) == "GptOssForCausalLM":
        return "gpt-oss's MoE (GptOssMoE) is not exposed per expert yet"
    if not hasattr(model.blocks[0].mlp, "hook_expert_out"):
        return "the model's MoE blocks are not exposed (circuits.backend.experts.expose_experts)"
    return None


def _forward_with_expert_outputs(self: Any, x: Tensor) -> Tensor:
    """TransformerLens 3's ``MoE.forward`` (``components/mlps/moe.py``), keeping each expert's
    routed contribution (``hook_expert_out``) and the unflattened router (``hook_router_probs``)."""
    batch, pos, d_model = x.shape
    flat = x.reshape(-1, d_model)
    probs = F.softmax(self.W_gate(flat), dim=1, dtype=torch.float)
    self.hook_router_probs(probs.reshape(batch, pos, -1))
    probs = self.hook_expert_weights(probs)
    weights, chosen = torch.topk(probs, self.experts_per_token, dim=-1)
    if self.cfg.norm_topk_prob:
        weights /= weights.sum(dim=-1, keepdim=True)
    chosen = self.hook_expert_indices(chosen)
    weights = weights.to(x.dtype)
    per_expert = torch.zeros(
        (batch * pos, self.num_experts, d_model), dtype=x.dtype, device=x.device
    )
    mask = F.one_hot(chosen, num_classes=self.num_experts).permute(2, 1, 0)
    for expert in range(self.num_experts):
        slot, token = torch.where(mask[expert])
        out = self.experts[expert](flat[token]) * weights[token, slot, None]
        per_expert[token, expert] = out.to(x.dtype)
    per_expert = self.hook_expert_out(per_expert.reshape(batch, pos, self.num_experts, d_model))
    return per_expert.sum(dim=2)


def expose_experts(model: Any) -> Any:
    """Give every MoE block of a TransformerLens 3 model ``hook_router_probs`` and
    ``hook_expert_out`` (module docstring); the model computes the same outputs. Idempotent; a
    dense model or a bridge is returned unchanged."""
    if ON_BRIDGE or not is_moe(model.cfg):
        return model
    from transformer_lens.components.mlps.moe import MoE
    from transformer_lens.hook_points import HookPoint

    changed = False
    for block in model.blocks:
        mlp = block.mlp
        if type(mlp) is MoE:  # gpt-oss's MoE is another class: left as it is
            mlp.hook_router_probs = HookPoint()
            mlp.hook_expert_out = HookPoint()
            mlp.__class__ = _ExposedMoE(MoE)
            changed = True
    if changed:
        model.setup()  # register the new hook points in hook_dict
    return model


_EXPOSED: dict[type, type] = {}


def _ExposedMoE(base: type) -> type:  # noqa: N802 (a class factory)
    if base not in _EXPOSED:
        _EXPOSED[base] = type("ExposedMoE", (base,), {"forward": _forward_with_expert_outputs})
    return _EXPOSED[base]
