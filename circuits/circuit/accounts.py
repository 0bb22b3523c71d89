"""The competing accounts of the P0 sink, asked of one model: ``p0-circuits accounts``.

Each question is an intervention or readout of ``circuits.patching`` (definitions there), and
its answer is recorded with the account it bears on (``docs/science.md``, "Competing accounts"):

1. **first-ness or position** (``positions``): the sink score ``alpha_s`` of the token at
   ``s`` (``SinkScoreAt``), plain, under a document mask that makes it its segment's first
   token (``DocumentMask(s)``), and with position 0 given to it (``Reposition({s: 0})``); and
   P0's own sink score with P0 moved to position ``s`` (``Reposition({0: s})``). The paper's
   account (the causal mask) predicts a segment sink under the mask and an unchanged P0 when it
   moves; a position account predicts the reverse.
2. **the same components** (``segment_components``): under the mask, each of blocks 0-1's
   attention and MLP patched at ``s`` with its value from the unmasked run (the same token when
   it is not first), as a fraction of the segment's sink above the plain ``alpha_s``; beside
   it, the same components' effect on P0's sink with P0's counterfactual (``ask_accounts``).
3. **massive dimensions** (``massive_dims``): P0's residual before the first receiver layer
   patched with P0's counterfactual in its massive coordinates only (``MassiveDims``), as
   a fraction of patching the whole residual there. The coordinates are the fewest that hold
   80% of P0's squared norm there (at most 4; ``massive_dims_of_p0``): Sun et al.'s 1000x
   ratio finds none in a model whose P0 norm is a few hundred.
4. **key norm or direction** (``key_split``): ``SinkKeySplit`` per receiver layer.
5. **no-op sinks** (``value_norm``): ``P0ValueNorm`` per receiver layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from circuits.backend import HookedModel, get_act_name
from circuits.core.conventions import default_receiver_layers
from circuits.core.errors import UsageError
from circuits.patching import CachedActivations, MassiveDims, Patcher, SinkScore, Site
from circuits.patching.key_value_readouts import P0ValueNorm, SinkKeySplit
from circuits.patching.positions import Condition, DocumentMask, Reposition, SinkScoreAt

EARLY = [("attn", 0), ("mlp", 0), ("attn", 1), ("mlp", 1)]
MAX_MASSIVE_DIMS = 4
MASSIVE_SHARE = 0.8


@dataclass
class Accounts:
    """What ``ask_accounts`` measured (module docstring); every number a float."""

    model: str
    bos: bool
    n_prompts: int
    n_tokens: int
    segment_start: int
    receivers: list[int]
    positions: dict[str, float]
    segment_components: dict[str, dict[str, float]]
    massive_dims: dict[str, Any]
    key_split: dict[str, list[float]]
    value_norm: dict[str, list[float]]
    counterfactual: dict[str, Any]
    definitions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _positions(p0: Patcher, s: int, receivers: list[int]) -> dict[str, float]:
    """The sink scores of question 1: plain from ``p0``'s clean run, the others each from a
    patcher that holds its condition on every forward."""

    def sink_at(key: int, condition: Condition | None = None) -> float:
        patcher = (
            p0
            if condition is None
            else Patcher(p0.model, p0.tokens, "zero", conditions=[condition])
        )
        return patcher.clean_value(SinkScoreAt(key, receivers))[0]

    return {
        "p0_sink": sink_at(0),
        "token_s_plain": sink_at(s),
        "token_s_first_of_segment": sink_at(s, DocumentMask(s)),
        "token_s_at_position_0": sink_at(s, Reposition({s: 0})),
        "p0_at_position_s": sink_at(0, Reposition({0: s})),
    }


def _segment_components(
    p0: Patcher, s: int, receivers: list[int], plain_s: float
) -> dict[str, dict[str, float]]:
    readout = SinkScore(receivers)
    p0_clean = p0.clean_value(readout)[0]
    p0_vals = p0.patch([Site(k, la) for k, la in EARLY], readout).values
    # the unmasked run's activations (p0's clean ones): token s where it is not first
    unmasked = CachedActivations(p0.clean, name="unmasked run")
    seg = Patcher(p0.model, p0.tokens, unmasked, conditions=[DocumentMask(s)])
    seg_readout = SinkScoreAt(s, receivers)
    seg_clean = seg.clean_value(seg_readout)[0]
    seg_vals = seg.patch([Site(k, la, positions=(s,)) for k, la in EARLY], seg_readout).values
    above = seg_clean - plain_s
    out = {}
    for (kind, layer), pv, sv in zip(EARLY, p0_vals.tolist(), seg_vals.tolist(), strict=True):
        out[f"{kind}{layer}"] = {
            "p0_effect": (pv - p0_clean) / p0_clean,
            "segment_effect": (sv - seg_clean) / above if abs(above) > 1e-6 else float("nan"),
        }
    return out


def massive_dims_of_p0(resid: Tensor) -> tuple[list[int], float]:
    """The fewest coordinates of P0's residual (``resid`` ``[batch, pos, d_model]``, averaged
    over prompts) that hold ``MASSIVE_SHARE`` of its squared norm, at most
    ``MAX_MASSIVE_DIMS`` (largest first), and the share they hold per prompt (mean)."""
    p0 = resid[:, 0].float()
    energy = p0.mean(dim=0) ** 2
    order = torch.argsort(energy, descending=True).tolist()
    dims: list[int] = []
    for d in order[:MAX_MASSIVE_DIMS]:
        dims.append(d)
        if energy[dims].sum() >= MASSIVE_SHARE * energy.sum():
            break
    share = float(((p0[:, dims] ** 2).sum(-1) / (p0**2).sum(-1)).mean())
    return dims, share


def _massive_dims(p0: Patcher, layer: int, receivers: list[int]) -> dict[str, Any]:
    resid = p0.clean[get_act_name("resid_pre", layer)]
    dims, share = massive_dims_of_p0(resid)
    out: dict[str, Any] = {
        "layer": layer,
        "counterfactual": p0.counterfactual.spec,
        "dims": dims,
        "share_of_p0_norm_squared": share,
        "p0_norm": float(resid[:, 0].float().norm(dim=-1).mean()),
    }
    readout = SinkScore(receivers)
    site = [Site("resid_pre", layer)]
    model, tokens, base = p0.model, p0.tokens, p0.counterfactual
    clean = p0.clean_value(readout)[0]
    all_effect = float(p0.patch(site, readout).values[0]) - clean
    dims_effect = (
        float(Patcher(model, tokens, MassiveDims(dims, base)).patch(site, readout).values[0])
        - clean
    )
    rest = [d for d in range(model.cfg.d_model) if d not in dims]
    rest_effect = (
        float(Patcher(model, tokens, MassiveDims(rest, base)).patch(site, readout).values[0])
        - clean
    )
    out.update(
        clean=clean,
        whole_residual_effect=all_effect / clean,
        dims_only_effect=dims_effect / clean,
        all_but_dims_effect=rest_effect / clean,
        fraction_of_whole=dims_effect / all_effect if abs(all_effect) > 1e-9 else float("nan"),
    )
    return out


def ask_accounts(
    model: HookedModel,
    tokens: Tensor,
    *,
    model_name: str,
    bos: bool,
    segment_start: int | None = None,
    counterfactual: str | None = None,
) -> Accounts:
    """Every question of the module docstring on ``tokens`` (``[n_prompts, n_tokens]``).
    ``counterfactual`` (shift, mean or zero) is P0's patch in questions 2 and 3; default
    ``shift`` without BOS and ``mean`` with it (shifting a BOS model leaves ``<bos>`` at
    position 1, which keeps its sink: ``results/gemma3-270m/discover``)."""
    n_prompts, n = tokens.shape
    s = n // 2 if segment_start is None else segment_start
    if not 2 <= s < n - 1:
        raise UsageError(f"--segment-start must be in 2..{n - 2} for {n} tokens, got {s}")
    receivers = list(default_receiver_layers(model.cfg.n_layers))
    if model.cfg.n_layers < 3:
        raise UsageError(
            f"the accounts compare blocks 0-1 with later receivers: a model of "
            f"{model.cfg.n_layers} layers has none (use one with at least 3)"
        )
    # one patcher for every clean read (its clean run) and for P0's patches (its counterfactual)
    p0 = Patcher(model, tokens, counterfactual or ("mean" if bos else "shift"))
    positions = _positions(p0, s, receivers)
    norm = p0.clean_value(SinkKeySplit(receivers, part="norm"))[1]
    direction = p0.clean_value(SinkKeySplit(receivers, part="direction"))[1]
    values = p0.clean_value(P0ValueNorm(receivers))[1]
    assert norm is not None and direction is not None and values is not None
    return Accounts(
        model=model_name,
        bos=bos,
        n_prompts=n_prompts,
        n_tokens=n,
        segment_start=s,
        receivers=receivers,
        positions=positions,
        segment_components=_segment_components(p0, s, receivers, positions["token_s_plain"]),
        massive_dims=_massive_dims(p0, receivers[0], receivers),
        counterfactual=p0.counterfactual.describe(),
        key_split={"norm": norm.tolist(), "direction": direction.tolist()},
        value_norm={"ratio": values.tolist()},
        definitions={
            "positions": DocumentMask(s).describe()["definition"],
            "reposition": Reposition({s: 0}).describe()["definition"],
            "key_split_norm": SinkKeySplit(part="norm").describe()["definition"],
            "key_split_direction": SinkKeySplit(part="direction").describe()["definition"],
            "value_norm": P0ValueNorm().describe()["definition"],
            "segment_effect": "(alpha_s with the component at s from the unmasked run - alpha_s "
            "under the mask) / (alpha_s under the mask - alpha_s plain)",
            "p0_effect": "(sink score with the component at P0 at its counterfactual - clean) / "
            "clean",
        },
    )
