"""Path patching at position zero. ``Patcher.path_patch`` follows the IOI method (Wang et al. 2022): the sender's
output at P0 takes its counterfactual value, every other component is frozen at its clean
value, so the receiver's input differs from clean by exactly the sender's direct write
``delta`` (its counterfactual output minus its clean output, through any post-norm). That
input is patched into the receiver (the K, Q or V input of heads in a later layer, or an MLP's
input) and everything downstream of the receiver runs freely. Grouped-query attention: we keep
TransformerLens' default ``ungroup_grouped_query_attention=False``, so with
``use_split_qkv_input`` the K and V inputs are per *key/value head*: a ``k``/``v`` receiver's
``heads`` index KV heads (``n_key_value_heads`` of them; each feeds ``n_heads / n_kv`` query
heads); a ``q`` receiver's ``heads`` index query heads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from circuits.backend import (
    POST_NORM_ARCHITECTURES,
    SPLIT_INPUT_HOOKS,
    HookedModel,
    get_act_name,
)
from circuits.core.errors import UsageError
from circuits.core.model_lock import exclusive
from circuits.patching.forward import PatchEngine, last_read
from circuits.patching.readouts import Readout, SinkScore
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Receiver, Site, check_receiver

SENDER_KINDS = ("embed", "attn", "head", "expert", "mlp")


@contextmanager
def model_flags(
    model: HookedModel, *, split_qkv: bool = False, mlp_in: bool = False
) -> Iterator[None]:
    """Temporarily turn on ``use_split_qkv_input`` / ``use_hook_mlp_in``; always restored."""
    with exclusive(model):
        old_split, old_mlp = model.cfg.use_split_qkv_input, model.cfg.use_hook_mlp_in
        try:
            if split_qkv and not old_split:
                model.set_use_split_qkv_input(True)
            if mlp_in and not old_mlp:
                model.set_use_hook_mlp_in(True)
            yield
        finally:
            if model.cfg.use_split_qkv_input != old_split:
                model.set_use_split_qkv_input(old_split)
            if model.cfg.use_hook_mlp_in != old_mlp:
                model.set_use_hook_mlp_in(old_mlp)


def attn_out_from_z(model: HookedModel, layer: int, z: Tensor) -> Tensor:
    """A block's attention output (through any post-attention norm) from its heads' ``z``."""
    block, cfg = model.blocks[layer], model.cfg
    attn = block.attn
    out = torch.einsum("...pnh,nhd->...pd", z, attn.W_O)
    if attn.b_O is not None:
        out = out + attn.b_O
    if getattr(cfg, "use_normalization_before_and_after", False):
        out = block.ln1_post(out)
    if cfg.original_architecture in POST_NORM_ARCHITECTURES:  # OLMo 2/3: norm after attn
        out = block.ln1(out)
    return out


def sender_delta(patcher: PatchEngine, sender: Site) -> Float[Tensor, "batch pos d_model"]:
    """The sender's direct write into the residual stream, counterfactual minus clean, at its
    positions (zero elsewhere), with every other component frozen at its clean value.

    For a head this goes through the attention output (``z @ W_O + b_O``) and any post-
    attention norm (Gemma's ``ln1_post``) with the layer's other heads clean.
    """
    patcher.check_site(sender)
    if sender.kind not in SENDER_KINDS:
        raise UsageError(
            f"a path's sender must be embed, attn, head, expert or mlp, not {sender.kind}"
        )
    pos = slice(None) if sender.positions is None else list(sender.positions)
    delta = torch.zeros_like(patcher.clean[get_act_name("resid_pre", 0)])
    if sender.kind == "head":
        z_clean = patcher.clean[sender.hook_name]
        z_cf = z_clean.clone()
        z_cf[:, pos, sender.head] = patcher.cf[sender.hook_name][:, pos, sender.head]
        with torch.inference_mode():
            out = attn_out_from_z(patcher.model, sender.layer, torch.stack([z_clean, z_cf]))
        delta[:, pos] = (out[1] - out[0])[:, pos]
    elif sender.kind == "expert":  # its routed contribution is its direct write (no post-norm)
        if getattr(patcher.model.cfg, "use_normalization_before_and_after", False):
            raise UsageError(
                f"{sender.name}: this model normalises the MoE output after the experts sum, so "
                "one expert has no direct write of its own; patch it as a site (Patcher.patch)"
            )
        name, e = sender.hook_name, sender.expert
        delta[:, pos] = patcher.cf[name][:, pos, e] - patcher.clean[name][:, pos, e]
    else:
        name = sender.hook_name
        delta[:, pos] = patcher.cf[name][:, pos] - patcher.clean[name][:, pos]
    return delta


def default_receiver_layers(receiver: Receiver, n_layers: int) -> tuple[int, ...]:
    """The default metric's layers for a path: the receiver's own layer for ``q``/``k`` (the
    direct effect on its attention to P0), every later layer for ``v`` and ``mlp_in``."""
    if receiver.kind in ("q", "k"):
        return (receiver.layer,)
    layers = tuple(range(receiver.layer + 1, n_layers))
    if not layers:
        raise UsageError(
            f"receiver {receiver.name} is in the last layer: no later layer to measure"
        )
    return layers


def path_patch(
    patcher: PatchEngine,
    paths: Sequence[tuple[Site, Receiver]],
    readout: Readout | Callable | None = None,
    *,
    desc: str = "path patching",
) -> PatchingResult:
    """IOI-style path patching: one readout value per (sender, receiver) path.

    Default readout (``readout=None``): ``default_receiver_layers`` of each path; each path then
    gets its own receiver layers, so pass one explicit readout when the values must be comparable.
    """
    paths = list(paths)
    if not paths:
        raise UsageError("no paths given")
    for sender, receiver in paths:
        if not isinstance(sender, Site) or not isinstance(receiver, Receiver):
            raise UsageError("each path must be a (Site, Receiver) pair")
        patcher.check_site(sender)
        check_receiver(receiver, sender, patcher.model.cfg)
    if readout is None:
        return _per_path_default_metric(patcher, paths, desc)
    last = max(r.layer for _, r in paths)
    readout = patcher.prepare(readout, last)
    read = last_read(readout, patcher.model)
    for s, r in paths:
        if r.order >= read:
            raise UsageError(
                f"path {s.name}->{r.name} cannot change the readout: it reads layer "
                f"{read[0]} at the latest, not after receiver {r.name}; choose later receiver layers"
            )
    clean, _ = patcher.clean_value(readout)
    values, details = _run_paths(patcher, paths, readout, desc)
    return PatchingResult(
        names=[f"{s.name}->{r.name}" for s, r in paths],
        patches=[[s.to_dict(), r.to_dict()] for s, r in paths],
        values=values,
        clean=clean,
        metric=readout.describe(),
        counterfactual=patcher.counterfactual.describe(),
        detail=None if details[0] is None else torch.stack(details),  # type: ignore[arg-type]
        kind="path",
    )


def _per_path_default_metric(
    patcher: PatchEngine, paths: list[tuple[Site, Receiver]], desc: str
) -> PatchingResult:
    """Path patching with each path's default metric, grouped so each group shares a forward."""
    n_layers = patcher.model.cfg.n_layers
    by_metric: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, (_, r) in enumerate(paths):
        by_metric[default_receiver_layers(r, n_layers)].append(i)
    values = torch.empty(len(paths))
    cleans: list[float] = [0.0] * len(paths)
    metrics: list[dict[str, Any]] = [{}] * len(paths)
    groups = tqdm(by_metric.items(), desc=desc, disable=not patcher.progress, leave=False)
    for layers, idx in groups:  # one bar over the groups; none per group
        sub = path_patch(patcher, [paths[i] for i in idx], SinkScore(layers), desc="")
        for j, i in enumerate(idx):
            values[i] = sub.values[j]
            cleans[i] = sub.clean
            metrics[i] = sub.metric
    res = PatchingResult(
        names=[f"{s.name}->{r.name}" for s, r in paths],
        patches=[[s.to_dict(), r.to_dict()] for s, r in paths],
        values=values,
        clean=float("nan"),
        metric={
            "name": "sink_score",
            "definition": "per path: receiver layer (q/k) or later layers (v/mlp_in)",
        },
        counterfactual=patcher.counterfactual.describe(),
        kind="path",
    )
    res.extra["per_path_clean"] = cleans
    res.extra["per_path_metric"] = metrics
    return res


def _adder_hooks(
    paths: list[tuple[Site, Receiver]], idx: list[int], deltas: dict[Site, Tensor], batch: int
) -> list[tuple[str, Callable]]:
    """One hook per receiver input, adding each path's sender delta to its rows."""
    by_hook: dict[str, list[tuple[int, Receiver, Tensor]]] = defaultdict(list)
    for k, i in enumerate(idx):
        s, r = paths[i]
        by_hook[r.hook_name].append((k, r, deltas[s]))
    hooks = []
    for name, items in by_hook.items():

        def adder(act: Tensor, hook, items=items) -> Tensor:
            for k, r, d in items:
                rows = slice(k * batch, (k + 1) * batch)
                if r.kind == "mlp_in":
                    act[rows] = act[rows] + d
                elif r.heads is None:
                    act[rows] = act[rows] + d[:, :, None, :]
                else:
                    hs = list(r.heads)
                    act[rows, :, hs] = act[rows, :, hs] + d[:, :, None, :]
            return act

        hooks.append((name, adder))
    return hooks


def _recomputed_receiver_hooks(
    patcher: PatchEngine, paths: list[tuple[Site, Receiver]], idx: list[int], deltas: dict
) -> list[tuple[str, Callable]]:
    """Hooks that patch each path's receiver input without split input hooks (module
    docstring): one capture forward computes the receiver's q / k / v (or MLP output) from its
    input plus the sender's delta; the hooks write them over the receiver's heads (or MLP)."""
    model, b = patcher.model, patcher.batch
    add: dict[str, list[tuple[int, Tensor]]] = defaultdict(list)
    writes: dict[str, list[tuple[int, Receiver]]] = defaultdict(list)
    for k, i in enumerate(idx):
        s, r = paths[i]
        if r.kind == "mlp_in":
            at = "resid_pre" if model.cfg.parallel_attn_mlp else "resid_mid"
            out = get_act_name("mlp_out", r.layer)
        else:
            at, out = "resid_pre", get_act_name(r.kind, r.layer)
        add[get_act_name(at, r.layer)].append((k, deltas[s]))
        writes[out].append((k, r))
    captured: dict[str, Tensor] = {}

    def adder(act: Tensor, hook, items) -> Tensor:
        act = act.clone()
        for k, d in items:
            act[k * b : (k + 1) * b] += d
        return act

    def capture(act: Tensor, hook, name: str) -> None:
        captured[name] = act.clone()

    hooks = [(name, partial(adder, items=items)) for name, items in add.items()]
    hooks += [(name, partial(capture, name=name)) for name in writes]
    with exclusive(model), torch.inference_mode():
        model.run_with_hooks(
            patcher.tokens.repeat(len(idx), 1),
            return_type=None,
            fwd_hooks=hooks,
            stop_at_layer=max(paths[i][1].layer for i in idx) + 1,
        )

    def writer(act: Tensor, hook, items, src: Tensor) -> Tensor:
        for k, r in items:
            rows = slice(k * b, (k + 1) * b)
            if r.kind == "mlp_in" or r.heads is None:
                act[rows] = src[rows]
            else:
                hs = list(r.heads)
                act[rows, :, hs] = src[rows][:, :, hs]
        return act

    return [
        (name, partial(writer, items=items, src=captured[name])) for name, items in writes.items()
    ]


def _run_paths(
    patcher: PatchEngine, paths: list[tuple[Site, Receiver]], metric: Readout, desc: str
) -> tuple[Tensor, list[Tensor | None]]:
    deltas = {s: sender_delta(patcher, s) for s in {s for s, _ in paths}}
    starts: dict[int, int | None] = {i: r.layer for i, (_, r) in enumerate(paths)}
    values = torch.empty(len(paths))
    details: list[Tensor | None] = [None] * len(paths)
    need_split = any(r.kind in ("q", "k", "v") for _, r in paths)
    need_mlp = any(r.kind == "mlp_in" for _, r in paths)
    flags = (
        model_flags(patcher.model, split_qkv=need_split, mlp_in=need_mlp)
        if SPLIT_INPUT_HOOKS
        else nullcontext()
    )
    with flags:
        for idx in tqdm(
            patcher.forward_groups(starts),
            desc=desc,
            disable=not (patcher.progress and desc),
            leave=False,
        ):
            if SPLIT_INPUT_HOOKS:
                hooks = _adder_hooks(paths, idx, deltas, patcher.batch)
            else:
                hooks = _recomputed_receiver_hooks(patcher, paths, idx, deltas)
            vals, detail = patcher.run(metric, starts=[starts[i] for i in idx], patch_hooks=hooks)
            for j, i in enumerate(idx):
                values[i] = vals[j]
                if detail is not None:
                    details[i] = detail[j]
    return values, details
