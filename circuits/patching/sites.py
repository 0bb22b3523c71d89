"""What a patch touches (``Site``: a component's output or a residual stream at some positions)
and where a path ends (``Receiver``: the Q/K/V input of a later layer's heads, or an MLP input).

Names are stable and readable and are the circuit graph's node names: ``embed@p0``,
``attn0@p0``, ``attn0.h3@p0``, ``mlp1@p0``, ``mlp1.e3@p0`` (expert 3 of MoE block 1: its routed
contribution, ``circuits.backend.experts``), ``resid_pre5@p0``; ``attn5.k``, ``attn5.kv1.k``,
``mlp2.in``. Grouped-query attention: ``k``/``v`` receivers index *key/value* heads (TransformerLens'
``ungroup_grouped_query_attention=False``), ``q`` receivers index query heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from circuits.backend import HookedModel, ModelConfig, get_act_name, kv_inputs_grouped
from circuits.backend.experts import EXPERT_OUT, experts_unavailable
from circuits.core.arguments import Count, Index, NonEmpty, Positions, check_fields, checked
from circuits.core.conventions import RECEIVER_KINDS, SITE_KINDS
from circuits.core.errors import UsageError

_ACT = {
    "embed": "embed",
    "pos_embed": "pos_embed",
    "resid_pre": "resid_pre",
    "attn": "attn_out",
    "head": "z",
    "resid_mid": "resid_mid",
    "mlp": "mlp_out",
    "expert": "mlp_out",  # inside it: hook_name names the per-expert hook
    "resid_post": "resid_post",
}
# Order of sites inside one block (embed comes before block 0).
_STAGE = {
    "embed": -1,
    "pos_embed": -1,
    "resid_pre": 0,
    "attn": 1,
    "head": 1,
    "resid_mid": 2,
    "expert": 2.75,  # an expert's routed contribution, summed into the MoE block's output
    "mlp": 3,
    "resid_post": 4,
}


def _positions_label(positions: tuple[int, ...] | None) -> str:
    if positions is None:
        return "all"
    return "p" + ",".join(str(p) for p in positions)


@dataclass(frozen=True)
class Site:
    """One patchable place: ``kind`` in layer ``layer`` (head ``head``) at ``positions``.

    ``positions=None`` means every position (TransformerLens' ``*_all_pos`` functions).
    Names are stable and readable: ``embed@p0``, ``attn0@p0``, ``attn0.h3@p0``, ``mlp1@p0``,
    ``mlp1.e3@p0`` (``Site("expert", 1, expert=3)``: expert 3's routed contribution in MoE
    block 1), ``resid_pre5@p0``.
    """

    kind: Literal[SITE_KINDS]  # type: ignore[valid-type]
    layer: Index = 0
    head: Index | None = None
    positions: Positions | None = (0,)
    expert: Index | None = None

    def __post_init__(self) -> None:
        check_fields(self)  # kind, ranges and types, before the site is used
        for index, kind in (("head", "head"), ("expert", "expert")):
            given = getattr(self, index)
            if given is not None and self.kind != kind:
                raise UsageError(
                    f"Site(kind={self.kind!r}) takes no {index} index (got {index}={given}); "
                    f"use kind={kind!r}"
                )
            if self.kind == kind and given is None:
                raise UsageError(f"Site(kind={kind!r}) needs {index}=<index>")

    @property
    def unit(self) -> int | None:
        """The index along the hook's third axis (a head of ``hook_z``, an expert of
        ``hook_expert_out``); None: the site is the whole activation at its positions."""
        return self.head if self.kind == "head" else self.expert

    @property
    def act(self) -> str:
        return _ACT[self.kind]

    @property
    def hook_name(self) -> str:
        if self.kind in ("embed", "pos_embed"):
            return f"hook_{self.kind}"
        if self.kind == "expert":
            return f"blocks.{self.layer}.{EXPERT_OUT}"
        return get_act_name(self.act, self.layer)

    @property
    def start_layer(self) -> int | None:
        """The block the patched forward starts at (None: from the tokens, for the embedding)."""
        return None if self.kind in ("embed", "pos_embed") else self.layer

    @property
    def order(self) -> tuple[int, float]:
        """Where the site is written inside the model, for ordering checks."""
        return (-1 if self.kind in ("embed", "pos_embed") else self.layer, float(_STAGE[self.kind]))

    @property
    def name(self) -> str:
        where = _positions_label(self.positions)
        if self.kind in ("embed", "pos_embed"):
            return f"{self.kind}@{where}"
        if self.kind == "head":
            return f"attn{self.layer}.h{self.head}@{where}"
        if self.kind == "expert":
            return f"mlp{self.layer}.e{self.expert}@{where}"
        return f"{self.kind}{self.layer}@{where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "layer": self.layer,
            "head": self.head,
            **({"expert": self.expert} if self.kind == "expert" else {}),
            "positions": None if self.positions is None else list(self.positions),
            "hook": self.hook_name,
        }


Patch = Site | Sequence[Site]
"""One patch: a single site, or several sites patched together in the same run."""


def as_sites(patch: Patch) -> tuple[Site, ...]:
    if isinstance(patch, Site):
        return (patch,)
    sites = tuple(patch)
    if not sites or not all(isinstance(s, Site) for s in sites):
        raise UsageError("a patch must be a Site or a non-empty sequence of Sites")
    return sites


@checked
def patch_name(patch: Patch) -> str:
    return "+".join(s.name for s in as_sites(patch))


@dataclass(frozen=True)
class Receiver:
    """The input a path ends in: the ``q``/``k``/``v`` input of heads in ``layer`` or an MLP's
    input (``mlp_in``).

    ``heads=None`` means all heads of the layer. For ``k``/``v`` on a grouped-query model the
    indices are KV heads (see the module docstring). Names: ``attn5.k``, ``attn5.h3.q``,
    ``attn5.kv1.k``, ``mlp1.in``.
    """

    kind: Literal[RECEIVER_KINDS]  # type: ignore[valid-type]
    layer: Index
    heads: Annotated[tuple[Index, ...], Field(min_length=1)] | None = None

    def __post_init__(self) -> None:
        check_fields(self)  # kind, ranges and types; heads=() is refused (None: all heads)
        if self.heads is not None and self.kind == "mlp_in":
            raise UsageError("Receiver(kind='mlp_in') takes no heads (an MLP has none)")

    @property
    def hook_name(self) -> str:
        return get_act_name("mlp_in" if self.kind == "mlp_in" else f"{self.kind}_input", self.layer)

    @property
    def name(self) -> str:
        if self.kind == "mlp_in":
            return f"mlp{self.layer}.in"
        if self.heads is None:
            return f"attn{self.layer}.{self.kind}"
        label = "h" if self.kind == "q" else "kv"
        return f"attn{self.layer}." + ".".join(f"{label}{h}" for h in self.heads) + f".{self.kind}"

    @property
    def order(self) -> tuple[int, float]:
        """Where the input is read inside the model: q/k before the pattern, v after it."""
        return (self.layer, {"q": 0.5, "k": 0.5, "v": 1.0, "mlp_in": 3.0}[self.kind])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "layer": self.layer,
            "heads": None if self.heads is None else list(self.heads),
            "hook": self.hook_name,
        }


@checked
def component_sites(
    n_layers: Count,
    layers: NonEmpty[Index] | None = None,
    *,
    positions: Positions | None,
    kinds: NonEmpty[str] = ("embed", "attn", "mlp"),
) -> list[Site]:
    """Sites for a component sweep: the embedding and each layer's ``kinds`` at ``positions``
    (no default: ``(0,)`` for P0, ``None`` for every position, as TransformerLens' ``*_all_pos``)."""
    layers = range(n_layers) if layers is None else layers
    sites = [Site("embed", 0, positions=positions)] if "embed" in kinds else []
    for layer in layers:
        for kind in kinds:
            if kind != "embed":
                sites.append(Site(kind, layer, positions=positions))
    return sites


@checked
def head_sites(
    layers: NonEmpty[Index], n_heads: Count, *, positions: Positions | None
) -> list[Site]:
    """Every head of ``layers`` at ``positions`` (no default: ``(0,)`` for P0, ``None`` for
    every position)."""
    return [
        Site("head", layer, head=h, positions=positions) for layer in layers for h in range(n_heads)
    ]


def check_site(site: Site, cfg: ModelConfig, n_pos: int) -> None:
    """A one-line ``UsageError`` unless ``site`` exists on a model with ``cfg`` and ``n_pos`` tokens."""
    if site.kind not in SITE_KINDS:
        raise UsageError(f"unknown site kind {site.kind!r}; choose one of {', '.join(SITE_KINDS)}")
    if site.kind == "pos_embed" and cfg.positional_embedding_type not in ("standard",):
        raise UsageError(
            f"{site.name}: this model's positions are {cfg.positional_embedding_type}, not a "
            "learned embedding added to the residual stream: there is no pos_embed to patch "
            "(embed@p0 is the token embedding)"
        )
    if site.kind not in ("embed", "pos_embed") and not 0 <= site.layer < cfg.n_layers:
        raise UsageError(
            f"layer {site.layer} out of range: the model has layers 0..{cfg.n_layers - 1}"
        )
    if site.kind in ("mlp", "resid_mid") and cfg.attn_only:
        raise UsageError(f"{site.name}: the model is attention-only (no MLPs)")
    if site.kind == "resid_mid" and cfg.parallel_attn_mlp:
        raise UsageError(
            f"{site.name}: the model's blocks are parallel (attention and MLP both read resid_pre "
            "and write resid_post), so there is no resid_mid; patch resid_pre or resid_post"
        )
    if site.kind == "head":
        if site.head is None or not 0 <= site.head < cfg.n_heads:
            raise UsageError(
                f"head index {site.head} out of range in {site.name}: layer {site.layer} has "
                f"heads 0..{cfg.n_heads - 1}"
            )
    elif site.head is not None:
        raise UsageError(
            f"{site.kind} sites take no head index (got head={site.head}); use kind='head'"
        )
    if site.kind == "expert":
        n_experts = getattr(cfg, "num_experts", None) or 0
        if not n_experts:
            raise UsageError(f"{site.name}: the model's MLPs are dense (no experts); patch mlp")
        if site.expert is None or not 0 <= site.expert < n_experts:
            raise UsageError(
                f"expert index {site.expert} out of range in {site.name}: block {site.layer} has "
                f"experts 0..{n_experts - 1}"
            )
    if site.positions is not None:
        if not site.positions:
            raise UsageError("positions must be non-empty (or None for every position)")
        bad = [p for p in site.positions if not 0 <= p < n_pos]
        if bad:
            raise UsageError(
                f"position(s) {bad} outside the prompt: {site.name} must use positions 0..{n_pos - 1}"
            )


def check_receiver(receiver: Receiver, sender: Site, cfg: ModelConfig) -> None:
    """A one-line ``UsageError`` unless ``receiver`` exists and comes after ``sender``."""
    if receiver.kind not in RECEIVER_KINDS:
        raise UsageError(
            f"unknown receiver kind {receiver.kind!r}; choose one of {', '.join(RECEIVER_KINDS)}"
        )
    if not 0 <= receiver.layer < cfg.n_layers:
        raise UsageError(
            f"receiver layer {receiver.layer} out of range: the model has layers 0..{cfg.n_layers - 1}"
        )
    if receiver.kind == "mlp_in" and cfg.attn_only:
        raise UsageError("the model is attention-only: no MLP receiver")
    if receiver.heads is not None:
        if receiver.kind == "mlp_in":
            raise UsageError("an MLP receiver takes no heads")
        n = cfg.n_heads
        grouped = kv_inputs_grouped(cfg)
        if receiver.kind in ("k", "v") and grouped:
            n = cfg.n_key_value_heads
        bad = [h for h in receiver.heads if not 0 <= h < n]
        if bad:
            what = "KV heads" if n != cfg.n_heads else "heads"
            raise UsageError(
                f"receiver head index {bad} out of range: layer {receiver.layer} has {what} 0..{n - 1}"
            )
    if not path_exists(sender, receiver, cfg):
        parallel = (
            " (in a parallel block attention and MLP read the same input: attention cannot "
            "reach the MLP of its own block)"
            if cfg.parallel_attn_mlp and receiver.kind == "mlp_in"
            else ""
        )
        raise UsageError(
            f"receiver {receiver.name} is not after sender {sender.name}: a path must go from an "
            f"earlier component to a later layer's input{parallel}"
        )


def path_exists(sender: Site, receiver: Receiver, cfg: ModelConfig) -> bool:
    """Whether ``sender``'s output can reach ``receiver``'s input directly. In a sequential block
    the MLP reads attention's output (``attn_l -> mlp_l.in`` is a path); in a parallel block
    (``parallel_attn_mlp``: GPT-J, GPT-NeoX/Pythia, Phi) both read ``resid_pre``, so it is not."""
    if not receiver.order > sender.order:
        return False
    same_block_attention = sender.kind in ("attn", "head") and sender.layer == receiver.layer
    return not (cfg.parallel_attn_mlp and receiver.kind == "mlp_in" and same_block_attention)


_CACHED_ACTS = ("resid_pre", "z", "attn_out", "resid_mid", "mlp_out", "resid_post")  # forward order


def cached_hooks(model: HookedModel) -> list[str]:
    """The hooks whose clean and counterfactual values an ``Engine`` keeps (every patchable
    site), in forward order."""
    cfg = model.cfg
    experts = experts_unavailable(model) is None
    names = [get_act_name("embed")]
    if cfg.positional_embedding_type == "standard":  # a learned embedding added to the stream
        names.append("hook_pos_embed")
    for layer in range(cfg.n_layers):
        for act in _CACHED_ACTS:
            if act in ("resid_mid", "mlp_out") and cfg.attn_only:
                continue
            if act == "resid_mid" and cfg.parallel_attn_mlp:  # no resid_mid in such a block
                continue
            if act == "mlp_out" and experts:  # each expert's routed contribution, then their sum
                names.append(f"blocks.{layer}.{EXPERT_OUT}")
            names.append(get_act_name(act, layer))
    return names
