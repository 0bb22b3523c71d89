"""Readouts of P0's key and value at the receivers: what separates the competing sink accounts.

The sink score says how much later queries attend to P0; these say why, and what it costs:

``SinkKeySplit(receivers, part="norm" | "direction")``
    The attention of queries ``q >= 1`` to P0, ``A[q, 0] = sigmoid(s[q, 0] - lse_{k>0} s[q,
    k])``, split exactly into what P0's key **norm** and its **direction** add over an ordinary
    key. With ``s_typ[q]`` the mean score of the query's other keys, and P0's key rescaled to
    the mean norm of the other keys (same direction) scoring ``s_match[q, 0]``:

    * ``norm`` = ``A[q, 0] - sigmoid(s_match[q, 0] - lse)``: what the excess norm adds
      (Sun et al.'s massive activations, "Attention Sinks and Compression Valleys");
    * ``direction`` = ``sigmoid(s_match[q, 0] - lse) - sigmoid(s_typ[q] - lse)``: what an
      ordinary-norm key pointing P0's way adds over a typical key (Gu et al.'s key-bias account:
      the q.k cosine, not the norm).

    ``norm + direction`` is the attention to P0 above what a typical key would get. Scores are
    recomputed from the hooks the model scores (``rot_q`` / ``rot_k`` on rotary models), with the
    model's scale and softcap; the other keys' log-sum-exp comes from its masked scores.
``P0ValueNorm(receivers)``
    How much a sink head writes: ``||v_0|| / mean_{j>=1} ||v_j||`` per key/value head (1: P0's
    value as large as an ordinary token's; near 0: a "no-op" sink, "A Unifying View of Attention
    Sinks"), averaged over prompts, heads, then receiver layers.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from circuits.backend import HookedModel, attention_scale, get_act_name
from circuits.core.arguments import Index, NonEmpty, checked
from circuits.core.conventions import default_receiver_layers
from circuits.core.errors import UsageError
from circuits.patching.readouts import Readout


def _receiver_layers(receivers: tuple[int, ...] | None, model: HookedModel) -> tuple[int, ...]:
    n = model.cfg.n_layers
    layers = receivers or tuple(default_receiver_layers(n))
    bad = [r for r in layers if not 0 <= r < n]
    if bad:
        raise UsageError(f"receiver layer(s) {bad} out of range: the model has layers 0..{n - 1}")
    return layers


def scored_hooks(model: HookedModel, layer: int) -> tuple[str, str]:
    """The hooks holding a layer's queries and keys as they are scored (after rotary)."""
    rot = model.cfg.positional_embedding_type == "rotary"
    return get_act_name("rot_q" if rot else "q", layer), get_act_name(
        "rot_k" if rot else "k", layer
    )


def softcap(scores: Tensor, cap: float | None) -> Tensor:
    """TransformerLens' attention score softcap (``attn_scores_soft_cap``; off when <= 0)."""
    return cap * torch.tanh(scores / cap) if cap and cap > 0 else scores


def p0_key_scores(q: Tensor, k0: Tensor, scale: float) -> Tensor:
    """``q . k_0 / scale`` for every query and head: ``q`` ``[*, batch, query, head, d]``, P0's
    key ``k0`` ``[*, batch, kv_head, d]`` (shared by grouped query heads) -> ``[*, batch, head,
    query]``."""
    rep = q.shape[-2] // k0.shape[-2]
    k0 = k0.repeat_interleave(rep, dim=-2) if rep > 1 else k0
    return torch.einsum("...bqhd,...bhd->...bhq", q, k0) / scale


def key_split(
    q: Tensor, k: Tensor, scores: Tensor, scale: float, cap: float | None
) -> tuple[Tensor, Tensor]:
    """``(norm, direction)`` parts of the attention to P0 (module docstring), per head, mean
    over queries ``q >= 1``; ``q`` ``[batch, pos, head, d]``, ``k`` ``[batch, pos, kv_head,
    d]``, ``scores`` the masked pre-softmax scores ``[batch, head, query, key]``."""
    rep = q.shape[-2] // k.shape[-2]
    norms = k.norm(dim=-1)  # [batch, pos, kv_head]
    ratio = norms[:, 1:].mean(dim=1) / norms[:, 0].clamp_min(1e-12)  # [batch, kv_head]
    ratio = ratio.repeat_interleave(rep, dim=-1) if rep > 1 else ratio  # [batch, head]
    raw0 = p0_key_scores(q, k[:, 0], scale)
    s0 = scores[..., 0]
    matched = softcap(raw0 * ratio[..., None], cap)
    others = scores[..., 1:]
    finite = torch.isfinite(others)
    lse = torch.logsumexp(others, dim=-1)
    typical = torch.where(finite, others, 0.0).sum(-1) / finite.sum(-1).clamp_min(1)
    a, a_match, a_typ = (torch.sigmoid(s - lse)[..., 1:] for s in (s0, matched, typical))
    return (a - a_match).mean(dim=(0, 2)), (a_match - a_typ).mean(dim=(0, 2))


class SinkKeySplit(Readout):
    """The part of the attention to P0 due to P0's key ``norm`` or its ``direction`` (module
    docstring), averaged over the heads of the receiver layers, then the layers; per-layer
    values as ``detail``."""

    name = "sink_key_split"
    takes_receivers = True
    axis = "attention to P0 above a typical key (queries ≥ 1)"

    @checked
    def __init__(
        self,
        receivers: NonEmpty[Index] | None = None,
        part: Literal["norm", "direction"] = "norm",
    ) -> None:
        self.receivers = None if receivers is None else tuple(sorted({int(r) for r in receivers}))
        self.part = part
        self._layers: tuple[int, ...] = ()
        self._cap: float | None = None
        self._scales: dict[int, float] = {}
        self._names: dict[int, tuple[str, str, str]] = {}

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        if tokens.shape[1] < 2:
            raise UsageError("the key split compares P0 with later keys: give at least 2 tokens")
        self._layers = _receiver_layers(self.receivers, model)
        self._cap = model.cfg.attn_scores_soft_cap
        for layer in self._layers:
            q, k = scored_hooks(model, layer)
            self._names[layer] = (q, k, get_act_name("attn_scores", layer))
            self._scales[layer] = attention_scale(model, layer)
        missing = [h for names in self._names.values() for h in names if h not in model.hook_dict]
        if missing:
            raise UsageError(
                f"the key split reads {missing[0]}, which this model does not have "
                "(TransformerLens 3 models have it)"
            )

    def layer_columns(self) -> tuple[int, ...]:
        return self._layers

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        return tuple(h for layer in self._layers for h in self._names[layer])

    def reduce(self, name: str, acts: Tensor) -> Tensor:
        return acts.float()  # combined across the layer's three hooks in ``combine``

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        cols = []
        index = 0 if self.part == "norm" else 1
        for layer in self._layers:
            q, k, s = (reduced[h] for h in self._names[layer])
            parts = [
                key_split(q[i], k[i], s[i], self._scales[layer], self._cap)[index].mean()
                for i in range(q.shape[0])
            ]
            cols.append(torch.stack(parts))
        detail = torch.stack(cols, dim=1)  # [n, receivers]
        return detail.mean(dim=1), detail

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "part": self.part,
            "definition": (
                "attention of queries q>=1 to P0 minus the same with P0's key rescaled to the "
                "other keys' mean norm (the key norm's part)"
                if self.part == "norm"
                else "attention of queries q>=1 to P0 with its key rescaled to the other keys' "
                "mean norm, minus the attention a key scoring the query's mean score would get "
                "(the key direction's part)"
            ),
            "receiver_layers": list(self._layers or self.receivers or []),
        }


class SinkKeyNorm(SinkKeySplit):
    """``SinkKeySplit(receivers, part="norm")``, as the panel's menu offers it."""

    label = "sink: P0's key-norm part"

    @checked
    def __init__(self, receivers: NonEmpty[Index] | None = None) -> None:
        super().__init__(receivers, part="norm")


class SinkKeyDirection(SinkKeySplit):
    """``SinkKeySplit(receivers, part="direction")``, as the panel's menu offers it."""

    label = "sink: P0's key-direction part"

    @checked
    def __init__(self, receivers: NonEmpty[Index] | None = None) -> None:
        super().__init__(receivers, part="direction")


def value_norm_ratio(v: Tensor) -> Tensor:
    """``||v_0|| / mean_{j>=1} ||v_j||`` per key/value head, mean over prompts; ``v``
    ``[batch, pos, kv_head, d_head]``."""
    norms = v.float().norm(dim=-1)  # [batch, pos, head]
    return (norms[:, 0] / norms[:, 1:].mean(dim=1).clamp_min(1e-12)).mean(dim=0)


class P0ValueNorm(Readout):
    """How much the receivers' heads write from P0 (module docstring): P0's value norm over the
    other positions', averaged over heads and receiver layers; per-layer values as ``detail``."""

    name = "p0_value_norm"
    label = "P0 value norm"
    takes_receivers = True
    axis = "P0's value norm ÷ other positions' (per head)"

    @checked
    def __init__(self, receivers: NonEmpty[Index] | None = None) -> None:
        self.receivers = None if receivers is None else tuple(sorted({int(r) for r in receivers}))
        self._layers: tuple[int, ...] = ()

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        if tokens.shape[1] < 2:
            raise UsageError("the value norm compares P0 with later values: give >= 2 tokens")
        self._layers = _receiver_layers(self.receivers, model)

    def layer_columns(self) -> tuple[int, ...]:
        return self._layers

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        return tuple(get_act_name("v", layer) for layer in self._layers)

    def reduce(self, name: str, acts: Tensor) -> Tensor:
        return torch.stack([value_norm_ratio(c) for c in acts])  # [n, kv_head]

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        cols = [reduced[get_act_name("v", layer)].mean(dim=-1) for layer in self._layers]
        detail = torch.stack(cols, dim=1)
        return detail.mean(dim=1), detail

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": "l2 norm of P0's value vector over the mean norm at positions >= 1, "
            "per key/value head, averaged over prompts, heads and receiver layers",
            "receiver_layers": list(self._layers or self.receivers or []),
        }
