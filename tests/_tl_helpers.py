"""TransformerLens' own ``patching`` module as the reference: a metric it can use that reads the
same sink score as ours."""

from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from circuits.metrics.attention import sink_score


def tl_sink_metric(model, layers):
    """A TransformerLens patching metric (logits -> scalar) reading the same sink score through
    permanent hooks (TL's metrics only see logits)."""
    store: dict[int, torch.Tensor] = {}

    def record(pattern, hook):
        if pattern.shape[-1] < 2:  # our engine's one-token prefix runs also pass here
            return
        store[hook.layer()] = sink_score(pattern).mean()

    for layer in layers:
        model.add_hook(get_act_name("pattern", layer), record, is_permanent=True)
    return lambda logits: torch.stack([store[layer] for layer in layers]).mean()
