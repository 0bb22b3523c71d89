"""Where a mixture-of-experts model routes position 0, against the other positions.

Per MoE block, from its router (``blocks.L.mlp.hook_router_probs``: the softmax over all
experts before top-k, ``circuits.backend.experts``):

* ``p0_distribution`` / ``others_distribution``: the router's distribution at P0 (mean over
  prompts) and at positions >= 1 (mean over prompts and positions);
* ``p0_top`` / ``others_top``: the ``experts_per_token`` experts with the largest mean
  probability there; ``p0_entropy`` / ``others_entropy``: the mean entropy (nats) of one
  position's routing (``log(n_experts)``: uniform);
* ``p0_expert``: the expert P0 is routed to most (largest mean probability at P0);
  ``p0_expert_share``: its probability at P0 (P0's share of routing it takes);
  ``p0_chosen_rate`` / ``others_chosen_rate``: the fraction of prompts whose P0 routes to it
  (it is among P0's top-k) and of other tokens routed to it;
* ``p0_has_own_expert``: P0 routes to ``p0_expert`` in at least ``OWN_EXPERT_RATE`` of the
  prompts, and other tokens at most ``1 / OWN_EXPERT_CONTRAST`` as often: an expert P0 gets
  nearly always and the rest of the text rarely.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.backend import HookedModel
from circuits.backend.experts import ROUTER_PROBS, experts_unavailable, expose_experts
from circuits.core.errors import UsageError
from circuits.core.model_lock import exclusive

OWN_EXPERT_RATE = 0.9
OWN_EXPERT_CONTRAST = 2.0


def routing_entropy(probs: Tensor) -> Tensor:
    """Entropy (nats) of routing distributions over the last axis, in float32."""
    p = probs.float()
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def layer_routing(probs: Tensor, experts_per_token: int) -> dict[str, Any]:
    """The module docstring's numbers for one block, from its router ``[batch, pos, experts]``."""
    probs = probs.float()
    p0, others = probs[:, 0], probs[:, 1:].reshape(-1, probs.shape[-1])
    p0_mean, others_mean = p0.mean(0), others.mean(0)
    k = experts_per_token
    expert = int(p0_mean.argmax())
    p0_rate = float((p0.topk(k, dim=-1).indices == expert).any(-1).float().mean())
    others_rate = (
        float((others.topk(k, dim=-1).indices == expert).any(-1).float().mean())
        if others.shape[0]
        else 0.0
    )
    return {
        "p0_distribution": [round(float(x), 6) for x in p0_mean],
        "others_distribution": [round(float(x), 6) for x in others_mean],
        "p0_top": [int(i) for i in p0_mean.topk(k).indices],
        "others_top": [int(i) for i in others_mean.topk(k).indices],
        "p0_entropy": float(routing_entropy(p0).mean()),
        "others_entropy": float(routing_entropy(others).mean()) if others.shape[0] else None,
        "p0_expert": expert,
        "p0_expert_share": float(p0_mean[expert]),
        "p0_chosen_rate": p0_rate,
        "others_chosen_rate": others_rate,
        "p0_has_own_expert": p0_rate >= OWN_EXPERT_RATE
        and others_rate * OWN_EXPERT_CONTRAST <= p0_rate,
    }


class RoutingReducer:
    """Hooks that keep each MoE block's P0 routing numbers as the forward runs."""

    def __init__(self, model: HookedModel) -> None:
        self.k = int(model.cfg.experts_per_token)
        self.layers: dict[int, dict[str, Any]] = {}
        self.n_layers = model.cfg.n_layers

    def on_router(self, probs: Tensor, hook) -> None:
        self.layers[int(hook.name.split(".")[1])] = layer_routing(probs, self.k)

    def hooks(self) -> list[tuple[str, Any]]:
        return [(f"blocks.{la}.{ROUTER_PROBS}", self.on_router) for la in range(self.n_layers)]

    def report(self, model: HookedModel) -> dict[str, Any]:
        return {
            "n_experts": int(model.cfg.num_experts),
            "experts_per_token": self.k,
            "layers": [{"layer": la, **self.layers[la]} for la in sorted(self.layers)],
            "definition": (
                "router softmax over all experts before top-k (blocks.L.mlp.hook_router_probs) "
                "at position 0 against positions >= 1; p0_has_own_expert: P0 routes to its "
                f"most likely expert in >= {OWN_EXPERT_RATE:.0%} of prompts and other tokens "
                f"at most 1/{OWN_EXPERT_CONTRAST:g} as often"
            ),
        }


def routing_hooks(model: HookedModel) -> RoutingReducer | None:
    """A reducer for ``measure`` on an MoE model whose experts are exposed (None: no router)."""
    expose_experts(model)
    return RoutingReducer(model) if experts_unavailable(model) is None else None


def routing_profile(model: HookedModel, tokens: Int[Tensor, "batch pos"]) -> dict[str, Any]:
    """P0's routing in every MoE block against the other positions' (module docstring)."""
    reducer = routing_hooks(model)
    if reducer is None:
        raise UsageError(f"no routing to measure: {experts_unavailable(model)}")
    with exclusive(model), torch.inference_mode():
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=reducer.hooks())
    return reducer.report(model)
