"""The numbers the TransformerLens 3 / 4 parity compares: what ``measure``, exact patching (every
P0 site under two counterfactuals and four readouts) and ``discover`` report for one model and
one batch of tokens. Computed by the same code on each major version, from the same weights, so
any difference is the backend's."""

from __future__ import annotations

from typing import Any

import torch

from circuits.circuit.config import DiscoverConfig
from circuits.circuit.discover import discover
from circuits.metrics.measure import measure_sinks
from circuits.panel.session import PATH_KINDS, PatchSession
from circuits.patching import Patcher
from circuits.patching.output_readouts import NextTokenLoss
from circuits.patching.readouts import AttentionToP0, P0Norm, SinkScore
from circuits.viz.view_data import compute_view_data
from tests._variants import p0_sites

# discover-record keys that come from the default first pass (the P0-stream estimate on 3.x;
# exact patching on a native TransformerLens 4 bridge, which exposes no pre-softmax scores);
# ``discover_attribution`` (the attribution first pass, the same method on both) covers them
FIRST_PASS_KEYS = (
    "panel.single_estimates",
    "panel.answer.estimate",  # the sum of the selection's single estimates
    "discover.first_pass",
    "discover.faithfulness_curve.rankings.first_pass",
    "discover.faithfulness_curve.summary.first_pass",
    "discover.faithfulness_curve.patched_runs",
)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.0": leaf}`` for nested dicts / lists / tensors; leaves are floats or strings."""
    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().double().tolist()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    elif isinstance(obj, bool) or obj is None or isinstance(obj, str):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, (int, float)):
        out[prefix.rstrip(".")] = float(obj)
    else:
        out[prefix.rstrip(".")] = str(obj)
    return out


def panel_numbers(model: Any, tokens: torch.Tensor) -> dict[str, Any]:
    """What the panel answers for one selection (the embedding, block 0's attention, one head),
    its single effects, and the selection's paths into every receiver kind of block 1."""
    session = PatchSession(model, tokens)
    selection = [session.components[0].name, session.components[1].name, session.heads[0].name]
    out: dict[str, Any] = {
        "answer": session.answer(selection).to_dict(),
        "single_estimates": session.single_estimates(),
    }
    for kind in PATH_KINDS:
        if kind == "mlp_in" and model.cfg.attn_only:
            continue
        out[f"paths.{kind}"] = session.paths(selection, kind, 1)
    return out


def parity_numbers(model: Any, tokens: torch.Tensor, *, run_discover: bool = True) -> dict:
    """Every number the parity compares, flattened (``flatten``)."""
    cfg = model.cfg
    n = cfg.n_layers
    with torch.inference_mode():
        logits = model(tokens)[:, :, :16]
    out: dict[str, Any] = {"logits": logits}
    out["measure"] = measure_sinks(model, tokens, bos=False).to_dict()
    sites = p0_sites(cfg)
    readouts = {
        "sink": SinkScore(),
        "attn_to_p0": AttentionToP0(),
        "p0_norm": P0Norm(n - 1),
        "loss": NextTokenLoss(),
    }
    for cf in ("shift", "mean"):
        patcher = Patcher(model, tokens, cf)
        for rname, readout in readouts.items():
            usable = [s for s in sites if s.order[0] < n - 1 or rname in ("loss", "p0_norm")]
            res = patcher.patch(usable, readout)
            out[f"patch.{cf}.{rname}"] = dict(zip(res.names, res.values.tolist(), strict=True))
            out[f"patch.{cf}.{rname}.clean"] = res.clean
    out["views"] = compute_view_data(model, tokens[0], [str(t) for t in tokens[0].tolist()])
    out["panel"] = panel_numbers(model, tokens)
    if run_discover:
        for key, first_pass in (("discover", "p0-stream"), ("discover_attribution", "attribution")):
            config = DiscoverConfig(progress=False, first_pass=first_pass)
            record = dict(discover(model, tokens, config).record)
            record.pop("timings_s", None)
            out[key] = record
    return flatten(out)
