"""Patches that change one block's output only at the first positions: run that block on the
prefix alone.

A causal model's block computes position ``p`` from positions ``<= p`` only. A patch whose sites
all sit in block ``l`` *after* its attention pattern (a head's ``z``, the attention output,
``resid_mid``, the MLP output or ``resid_post``) at positions ``< n`` therefore leaves block
``l``'s output equal to the clean one at every position ``>= n``: the patched
``resid_pre[l + 1]`` is the cached clean one with its first ``n`` rows replaced by block ``l``
run on the ``n``-token prefix. For a P0 patch that is one token instead of the whole prompt,
and the stacked forward starts at block ``l + 1``: the patch costs one block less.

Exact wherever the readout reads nothing in block ``l`` at or after the patch
(``circuits.patching.forward.prefix_exact``): the sink score reads attention patterns, so block
``l``'s pattern is read before the patch and stays clean; a readout of block ``l``'s own output
keeps the whole-block run.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.backend import ModelConfig, get_act_name
from circuits.core.model_lock import exclusive
from circuits.patching.forward import PatchEngine, prefix_exact
from circuits.patching.readouts import Readout
from circuits.patching.sites import Site

AFTER_PATTERN = ("head", "attn", "resid_mid", "expert", "mlp", "resid_post")


def prefix_patch(sites: tuple[Site, ...], cfg: ModelConfig, n_pos: int) -> tuple[int, int] | None:
    """(block, prefix length) when every site is in one block after its attention pattern at
    positions before ``prefix`` and the prefix is shorter than the prompt; else None."""
    if cfg.attention_dir != "causal":
        return None
    layers = {s.layer for s in sites}
    if len(layers) != 1 or any(s.kind not in AFTER_PATTERN or s.positions is None for s in sites):
        return None
    (layer,) = layers
    if layer + 1 >= cfg.n_layers:
        return None
    prefix = 1 + max(max(s.positions or (0,)) for s in sites)
    return (layer, prefix) if prefix < n_pos else None


def prefix_rows(
    patcher: PatchEngine, layer: int, prefix: int, patches: list[tuple[Site, ...]]
) -> list[Float[Tensor, "batch pos d_model"]]:
    """Each patch's ``resid_pre[layer + 1]``: block ``layer`` run once on the ``prefix``-token
    prompts for all ``patches`` (stacked, each patch's sites set), written over the first
    ``prefix`` rows of the cached clean ``resid_pre[layer + 1]``."""
    b = patcher.batch
    start = patcher.clean[get_act_name("resid_pre", layer)][:, :prefix]
    kwargs = patcher.block_kwargs(prefix)
    with exclusive(patcher.model), torch.inference_mode():
        out = patcher.model.run_with_hooks(
            start.repeat(len(patches), 1, 1),
            fwd_hooks=patcher.counterfactual_hooks(patches),
            start_at_layer=layer,
            stop_at_layer=layer + 1,
            **kwargs,
        )
        clean_next = patcher.clean[get_act_name("resid_pre", layer + 1)]
        rows = []
        for k in range(len(patches)):
            row = clean_next.clone()
            row[:, :prefix] = out[k * b : (k + 1) * b]
            rows.append(row)
    return rows


def plan_prefixes(
    patcher: PatchEngine,
    plist: list[tuple[Site, ...]],
    starts: dict[int, int | None],
    metric: Readout,
) -> dict[int, tuple[int, int]]:
    """The patches (index -> (block, prefix)) that run their block on a prefix; their entry in
    ``starts`` moves to the next block. Only where that is exact for the readout (module
    docstring)."""
    prefixed: dict[int, tuple[int, int]] = {}
    for i in starts:
        found = prefix_patch(plist[i], patcher.model.cfg, patcher.n_pos)
        first = min(s.order for s in plist[i])
        if found is not None and prefix_exact(found[0], first, metric, patcher.model):
            prefixed[i] = found
            starts[i] = found[0] + 1
    return prefixed


def prefix_start_rows(
    patcher: PatchEngine,
    idx: list[int],
    plist: list[tuple[Site, ...]],
    prefixed: dict[int, tuple[int, int]],
) -> dict[int, Tensor]:
    """The starting ``resid_pre`` rows of the prefixed patches among ``idx`` (one forward's
    patches): one prefix run per (block, prefix)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in idx:
        if i in prefixed:
            groups[prefixed[i]].append(i)
    rows: dict[int, Tensor] = {}
    for (layer, prefix), members in groups.items():
        made = prefix_rows(patcher, layer, prefix, [plist[i] for i in members])
        rows.update(zip(members, made, strict=True))
    return rows
