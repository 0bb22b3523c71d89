"""Where position 0 is routed, as a readout a patch can change (mixture-of-experts models).

``P0Routing(layer, expert)`` reads block ``layer``'s router (``mlp.hook_router_probs``, the
softmax over all experts before top-k, ``circuits.backend.experts``) at position 0: the
probability of ``expert``, or (``expert=None``) the entropy of P0's routing, each averaged over
prompts; the detail is P0's routing distribution averaged over prompts. "Does patching attn0 at
P0 change where P0 is routed in block 1?" is ``patcher.patch([Site("attn", 0)],
P0Routing(1, e))`` with ``e`` P0's expert there (``circuits.metrics.routing``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from circuits.backend import HookedModel
from circuits.backend.experts import ROUTER_PROBS, experts_unavailable, expose_experts
from circuits.core.arguments import Index, checked
from circuits.core.errors import UsageError
from circuits.metrics.routing import routing_entropy
from circuits.patching.readouts import Readout


class P0Routing(Readout):
    """P0's routing in MoE block ``layer``: the router's probability of ``expert`` at position
    0, or its entropy (``expert=None``), averaged over prompts (module docstring)."""

    name = "p0_routing"
    label = ""

    @checked
    def __init__(self, layer: Index, expert: Index | None = None) -> None:
        self.layer = int(layer)
        self.expert = None if expert is None else int(expert)

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        expose_experts(model)
        if why := experts_unavailable(model):
            raise UsageError(f"P0Routing: {why}")
        if not 0 <= self.layer < model.cfg.n_layers:
            raise UsageError(
                f"routing layer {self.layer} out of range: the model has layers "
                f"0..{model.cfg.n_layers - 1}"
            )
        n = model.cfg.num_experts
        if self.expert is not None and not 0 <= self.expert < n:
            raise UsageError(
                f"expert {self.expert} out of range: the blocks have experts 0..{n - 1}"
            )

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        return (f"blocks.{self.layer}.{ROUTER_PROBS}",)

    def reduce(self, name: str, acts: Tensor) -> Tensor:
        p0 = acts[:, :, 0].float()  # [n_present, batch, n_experts]
        return torch.cat([p0.mean(1), routing_entropy(p0).mean(1, keepdim=True)], dim=-1)

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        r = reduced[f"blocks.{self.layer}.{ROUTER_PROBS}"]
        probs, entropy = r[:, :-1], r[:, -1]
        return (entropy if self.expert is None else probs[:, self.expert]), probs

    def describe(self) -> dict[str, Any]:
        what = (
            "entropy (nats) of the router's distribution over experts at position 0"
            if self.expert is None
            else f"router probability of expert {self.expert} at position 0"
        )
        return {
            "name": self.name,
            "definition": f"{what} in block {self.layer} (blocks.{self.layer}.{ROUTER_PROBS}: "
            "softmax over all experts, before top-k), averaged over prompts; detail: P0's "
            "routing distribution averaged over prompts",
            "layer": self.layer,
            "expert": self.expert,
        }
