"""What an emergence trace measures at each checkpoint (``measure_checkpoint``), on one fixed evaluation batch drawn from the run's own data source (``DataSource.eval_batch``,
its own seed stream, identical for every checkpoint):

* per layer, with ``circuits.metrics.measure_sinks``: ``attn_to_p0`` (mean over queries q >= 1
  of A[q, 0], mean over heads), ``sink_score`` (Gu et al.'s alpha_0, P0's own query included),
  ``sink_rate`` (share of heads with sink_score > eps), ``p0_norm``, ``rest_norm_median`` and
  ``p0_norm_ratio`` (l2 norm of ``resid_post`` at P0 over the median at positions >= 1);
* **where the sink sits**: ``key_attention[k]``, the attention that queries q >= ``first_k`` pay
  to key position k < ``first_k`` (mean over those queries, heads and batch; every counted query
  sees all first_k keys, so the positions compete fairly), per layer and averaged over the
  downstream layers (>= 2, or all layers when the model has fewer than 3); ``sink_position`` is
  its argmax;
* **concentration in layers 0-1**, two ways:
  - ``norm_growth_share_l01``: with rho_l the P0 norm ratio after block l (rho_-1: the
    embedding, ``resid_pre`` of block 0) and g_l = max(0, log rho_l - log rho_{l-1}) the growth
    of P0's norm in excess of the other positions in block l, the share (g_0 + g_1) / sum_l g_l
    (None when sum_l g_l < log 1.5, i.e. P0 never outgrows the rest by 1.5x);
    ``jump_layer`` = argmax_l g_l (None in the same case);
  - ``ablation_share_l01``: for every block l and component c in (attn_out, mlp_out), the
    component's output at P0 is mean-ablated with the patching engine's ``mean``
    counterfactual (its mean over every prompt and position >= 1: P0 is made to look like an
    ordinary position for that component only; the one definition ``discover`` uses too) and the
    downstream sink D = attention to P0 (queries q >= 1) of discover's default receiver layers
    (``DiscoverConfig.receiver_layers``: layers >= 2, or the last layer of a 2-layer model) is
    re-measured; effect = D_clean - D_ablated. The share is sum over l <= 1 of |effect| / sum
    over all of |effect| (None when the total is < 0.01, or for a 1-layer model).
* **where the attention goes** (``destinations``, per layer; ``attention_destinations``): for
  queries q >= 2, the attention to P0, to the query itself, to the previous token, the rest, and
  the key token id receiving the most attention with its share -- the sink's substitute in a
  run where P0 is not the sink;
* the evaluation loss (next-token cross-entropy on the eval batch);
* on a mixture-of-experts model, ``routing``: where P0 is routed in each MoE block against the
  other positions (``circuits.metrics.routing``), so a trace shows from which step P0 gets an
  expert of its own; and ``experts`` (``expert_effects``): each expert of blocks 0-1
  mean-ablated at P0, its effect on the downstream sink and on P0's norm after block 1.

The phase detector is in ``circuits.emergence.phases``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.backend import HookedModel, get_act_name
from circuits.backend.experts import experts_unavailable
from circuits.circuit.config import DiscoverConfig
from circuits.core.model_lock import exclusive
from circuits.metrics.attention import attention_destinations, key_attention
from circuits.metrics.measure import measure_sinks
from circuits.patching.patcher import Patcher
from circuits.patching.readouts import AttentionToP0, P0Norm
from circuits.patching.sites import Site

COMPONENTS = ("attn_out", "mlp_out")


def downstream_layers(n_layers: int) -> list[int]:
    """Layers whose sink is the circuit's output: >= 2, or all when the model has < 3 layers."""
    return list(range(2, n_layers)) if n_layers >= 3 else list(range(n_layers))


def ablation_effects(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], *, patcher: Patcher | None = None
) -> tuple[float | None, list[dict[str, float]]]:
    """D_clean and, per block, the effect on D of mean-ablating attn_out / mlp_out at P0 (the
    engine's ``mean`` counterfactual, discover's receiver layers); (None, []) for 1 layer.
    ``patcher``: a ``mean`` Patcher of ``model`` on ``tokens`` to reuse (its clean caches)."""
    n = model.cfg.n_layers
    if n < 2:
        return None, []
    kinds = {"attn_out": "attn", "mlp_out": "mlp"}
    comps = [c for c in COMPONENTS if not (model.cfg.attn_only and c == "mlp_out")]
    sites = [Site(kinds[c], layer) for layer in range(n) for c in comps]
    readout = AttentionToP0(DiscoverConfig().receiver_layers(n))
    patcher = patcher or Patcher(model, tokens, "mean")
    result = patcher.patch(sites, readout, desc="")
    effects = [{c: 0.0 for c in comps} for _ in range(n)]
    for site, effect in zip(sites, result.effects.tolist(), strict=True):
        effects[site.layer][site.act] = -effect  # D_clean - D_ablated
    return result.clean, effects


def expert_effects(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], *, patcher: Patcher | None = None
) -> dict[str, Any] | None:
    """On an MoE model: per block l <= 1 (below the receivers), each expert's routed contribution
    at P0 mean-ablated (the engine's ``mean`` counterfactual), its effect on the downstream sink
    D (as ``ablation_effects``: D_clean - D_ablated) and on P0's residual norm after block 1
    (``P0Norm(1)``: P0's amplification; clean - ablated). None on a dense model. ``patcher``:
    as ``ablation_effects``'s."""
    n = model.cfg.n_layers
    if n < 3 or experts_unavailable(model) is not None:
        return None
    blocks = [0, 1]
    sites = [
        Site("expert", la, expert=e) for la in blocks for e in range(int(model.cfg.num_experts))
    ]
    patcher = patcher or Patcher(model, tokens, "mean")
    sink = patcher.patch(sites, AttentionToP0(DiscoverConfig().receiver_layers(n)), desc="")
    norm = patcher.patch(sites, P0Norm(1), desc="")
    rows = []
    for la in blocks:
        idx = [i for i, s in enumerate(sites) if s.layer == la]
        rows.append(
            {
                "layer": la,
                "sink_effect": [-float(sink.effects[i]) for i in idx],
                "p0_norm_effect": [-float(norm.effects[i]) for i in idx],
            }
        )
    return {"clean_p0_norm_1": norm.clean, "layers": rows}


def measure_checkpoint(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    *,
    bos: bool,
    first_k: int = 4,
    eps: float = 0.3,
    ablation: bool = True,
    patcher: Patcher | None = None,
) -> dict[str, Any]:
    """Everything a trace records about one checkpoint (see the module docstring).
    ``ablation=False`` leaves out the patched runs (``ablation_share_l01``, ``ablation_effect``,
    ``experts``: None); ``patcher``: a ``mean`` Patcher of ``model`` on ``tokens`` to reuse."""
    report = measure_sinks(model, tokens, bos=bos, eps=eps)
    n_layers = model.cfg.n_layers
    keys: dict[int, Tensor] = {}
    destinations: dict[int, dict[str, float | int]] = {}

    def on_pattern(pattern: Tensor, hook) -> None:
        keys[hook.layer()] = key_attention(pattern, first_k)
        destinations[hook.layer()] = attention_destinations(pattern, tokens)

    hooks = [(get_act_name("pattern", layer), on_pattern) for layer in range(n_layers)]
    with exclusive(model), torch.inference_mode():
        eval_loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=hooks).item()

    down = downstream_layers(n_layers)
    overall = torch.stack([keys[layer] for layer in down]).mean(dim=0)
    ng = report.norm_growth
    growth, share_norm, jump = ng.growth, ng.share_l01, ng.largest_jump_layer
    # one clean run and one set of mean values for every ablation of this checkpoint
    ablate = (patcher or Patcher(model, tokens, "mean")) if n_layers >= 2 and ablation else None
    d_clean, effects = ablation_effects(model, tokens, patcher=ablate) if ablation else (None, [])
    total = sum(abs(v) for row in effects for v in row.values())
    share_abl = (
        sum(abs(v) for row in effects[:2] for v in row.values()) / total if total >= 0.01 else None
    )
    layers = []
    for lm in report.layers:
        layers.append(
            {
                "layer": lm.layer,
                "attn_to_p0": lm.attn_to_p0,
                "sink_score": lm.sink_score,
                "sink_rate": lm.sink_rate,
                "p0_norm": lm.p0_norm,
                "rest_norm_median": lm.rest_norm_median,
                "p0_norm_ratio": lm.p0_norm_ratio,
                "p0_norm_growth": growth[lm.layer],
                "key_attention": keys[lm.layer].tolist(),
                "destinations": destinations[lm.layer],
                "ablation_effect": effects[lm.layer] if effects else None,
                "heads": [asdict(h) for h in lm.heads],
            }
        )
    return {
        "eval_loss": eval_loss,
        "sink_strength": max(layers[layer]["sink_score"] for layer in down),
        "downstream_attn_to_p0": d_clean,
        "sink_position": int(overall.argmax()),
        "key_attention": overall.tolist(),
        "embed_p0_norm_ratio": report.embed_p0_norm / max(report.embed_rest_norm_median, 1e-12),
        "jump_layer": jump,
        "first_layer_norm_ratio_over_10": report.first_layer_norm_ratio_over_10,
        "norm_growth_share_l01": share_norm,
        "ablation_share_l01": share_abl,
        "sink_rate_from_layer2": report.sink_rate_from_layer2
        if n_layers >= 3
        else report.sink_rate_all,
        "layers": layers,
        **({"routing": report.extra["routing"]} if "routing" in report.extra else {}),
        **(
            {"experts": experts}
            if ablation and (experts := expert_effects(model, tokens, patcher=ablate))
            else {}
        ),
    }
