"""Emergence traces: how the P0 sink circuit forms over a training run.

``trace_run(run_dir)`` reads every checkpoint of a run made by ``circuits.training`` and measures,
on one fixed evaluation batch drawn from the run's own data source (``DataSource.eval_batch``,
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
    component's output at P0 is mean-ablated (replaced, row by row, by its mean over positions
    >= 1: P0 is made to look like an ordinary position for that component only) and the
    downstream sink D = mean over layers >= 2 of attn_to_p0 is re-measured; effect = D_clean -
    D_ablated. The share is sum over l <= 1 of |effect| / sum over all of |effect| (None when the
    total is < 0.01). This is a per-component activation-patching experiment done with plain
    hooks (``transformer_lens.utils.get_act_name`` names), documented here so traces do not
    depend on the patching engine.
* the evaluation loss (next-token cross-entropy on the eval batch).

Phases (wandering, transition, stable) are not defined numerically in the paper; ours,
``PhaseCriteria``, are:

* sink strength S(t) = max over layers l >= 2 (all layers when fewer than 3) of ``sink_score``;
  a sink is *present* at checkpoint t when S(t) > ``eps`` (0.3, Gu et al.'s threshold);
* the sink's *location* at t is the pair (``sink_position``, ``jump_layer``);
* **stable**: the longest suffix of checkpoints in which the sink is present, its location
  equals the final checkpoint's, and |S(t) - S(final)| <= ``delta`` (0.1); it must span at least
  ``min_stable`` (2) checkpoints, otherwise there is no stable phase;
* **transition**: the longest run of checkpoints just before the stable phase (or, when there
  is none, ending at the final checkpoint) in which the sink is present and already at its final
  location, while its strength still moves by more than delta;
* **wandering**: every earlier checkpoint from the first one with a sink present: the sink is
  present somewhere else (another key position or another jump layer), or comes and goes;
* **absent**: checkpoints before the first sink. When the final checkpoint has no sink, the
  run never settles: checkpoints with a sink are "wandering", the others "absent".
The labels are monotone in time by construction (absent -> wandering -> transition -> stable).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utils import get_act_name

from circuits.errors import UsageError
from circuits.metrics import measure_sinks

PHASES = ("absent", "wandering", "transition", "stable")
COMPONENTS = ("attn_out", "mlp_out")
TRACE_FILE = "trace.json"
FIGURE_FILE = "trace.png"


@dataclass(frozen=True)
class PhaseCriteria:
    """The documented thresholds of the phase detector (see the module docstring)."""

    eps: float = 0.3
    delta: float = 0.1
    min_stable: int = 2


# ---------------------------------------------------------------------------------------------
# Per-checkpoint measurements
# ---------------------------------------------------------------------------------------------


def downstream_layers(n_layers: int) -> list[int]:
    """Layers whose sink is the circuit's output: >= 2, or all when the model has < 3 layers."""
    return list(range(2, n_layers)) if n_layers >= 3 else list(range(n_layers))


def key_attention(
    pattern: Float[Tensor, "batch head query key"], first_k: int
) -> Float[Tensor, " first_k"]:
    """Attention paid by queries q >= first_k to each key k < first_k (mean: queries, heads, batch)."""
    if pattern.shape[-1] <= first_k:
        raise UsageError(f"need more than first_k={first_k} tokens to locate the sink")
    return pattern[:, :, first_k:, :first_k].float().mean(dim=(0, 1, 2))


def norm_growth(ratios: list[float]) -> tuple[list[float], float | None, int | None]:
    """Per-block excess growth g_l of P0's norm, the layers-0-1 share, and the jump layer.

    ``ratios[0]`` is the embedding's P0 norm ratio, ``ratios[l + 1]`` the one after block l.
    """
    logs = [math.log(max(r, 1e-12)) for r in ratios]
    growth = [max(0.0, b - a) for a, b in zip(logs[:-1], logs[1:], strict=False)]
    total = sum(growth)
    if total < math.log(1.5):
        return growth, None, None
    share = sum(growth[:2]) / total
    jump = max(range(len(growth)), key=lambda i: growth[i])
    return growth, share, jump


def _downstream_sink(model: HookedTransformer, tokens: Tensor, fwd_hooks: list) -> float:
    layers = downstream_layers(model.cfg.n_layers)
    got: dict[int, float] = {}

    def on_pattern(pattern: Tensor, hook) -> None:
        got[hook.layer()] = pattern[:, :, 1:, 0].float().mean().item()

    hooks = list(fwd_hooks) + [(get_act_name("pattern", layer), on_pattern) for layer in layers]
    with torch.inference_mode():
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=hooks)
    return sum(got[layer] for layer in layers) / len(layers)


def _mean_ablate_p0(act: Tensor, hook) -> Tensor:
    act = act.clone()
    act[:, 0] = act[:, 1:].mean(dim=1)
    return act


def ablation_effects(
    model: HookedTransformer, tokens: Int[Tensor, "batch pos"]
) -> tuple[float, list[dict[str, float]]]:
    """D_clean and, per block, the effect on D of mean-ablating attn_out / mlp_out at P0."""
    clean = _downstream_sink(model, tokens, [])
    effects = []
    for layer in range(model.cfg.n_layers):
        row = {}
        for comp in COMPONENTS:
            name = get_act_name(comp, layer)
            if name not in model.hook_dict:
                raise KeyError(f"hook {name} not found on the model")
            row[comp] = clean - _downstream_sink(model, tokens, [(name, _mean_ablate_p0)])
        effects.append(row)
    return clean, effects


def measure_checkpoint(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    *,
    bos: bool,
    first_k: int = 4,
    eps: float = 0.3,
) -> dict[str, Any]:
    """Everything a trace records about one checkpoint (see the module docstring)."""
    report = measure_sinks(model, tokens, bos=bos, eps=eps)
    n_layers = model.cfg.n_layers
    keys: dict[int, Tensor] = {}

    def on_pattern(pattern: Tensor, hook) -> None:
        keys[hook.layer()] = key_attention(pattern, first_k)

    hooks = [(get_act_name("pattern", layer), on_pattern) for layer in range(n_layers)]
    with torch.inference_mode():
        logits = model.run_with_hooks(tokens, return_type="logits", fwd_hooks=hooks)
        logp = logits[:, :-1].float().log_softmax(-1)
        eval_loss = -logp.gather(-1, tokens[:, 1:, None]).mean().item()

    down = downstream_layers(n_layers)
    overall = torch.stack([keys[layer] for layer in down]).mean(dim=0)
    ratios = [report.embed_p0_norm / max(report.embed_rest_norm_median, 1e-12)] + report.column(
        "p0_norm_ratio"
    )
    growth, share_norm, jump = norm_growth(ratios)
    d_clean, effects = ablation_effects(model, tokens)
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
                "ablation_effect": effects[lm.layer],
                "heads": [asdict(h) for h in lm.heads],
            }
        )
    return {
        "eval_loss": eval_loss,
        "sink_strength": max(layers[layer]["sink_score"] for layer in down),
        "downstream_attn_to_p0": d_clean,
        "sink_position": int(overall.argmax()),
        "key_attention": overall.tolist(),
        "embed_p0_norm_ratio": ratios[0],
        "jump_layer": jump,
        "first_layer_norm_ratio_over_10": report.first_norm_jump_layer,
        "norm_growth_share_l01": share_norm,
        "ablation_share_l01": share_abl,
        "sink_rate_from_layer2": report.sink_rate_from_layer2
        if n_layers >= 3
        else report.sink_rate_all,
        "layers": layers,
    }


# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------


def detect_phases(
    strength: list[float],
    location: list[Any],
    criteria: PhaseCriteria = PhaseCriteria(),
) -> list[str]:
    """Label each checkpoint absent / wandering / transition / stable (module docstring).

    ``strength[t]`` is S(t) (max sink score over the downstream layers), ``location[t]`` any
    comparable description of where the sink is (the trace uses (sink_position, jump_layer)).
    """
    n = len(strength)
    if n != len(location):
        raise ValueError("strength and location must have one entry per checkpoint")
    if n == 0:
        return []
    present = [s > criteria.eps for s in strength]
    first = next((i for i, p in enumerate(present) if p), None)
    if first is None:
        return ["absent"] * n
    if not present[-1]:
        return ["absent" if (i < first or not present[i]) else "wandering" for i in range(n)]
    final_loc, final_s = location[-1], strength[-1]

    def settled(i: int) -> bool:
        return present[i] and location[i] == final_loc

    stable_start = n
    while (
        stable_start > 0
        and settled(stable_start - 1)
        and abs(strength[stable_start - 1] - final_s) <= criteria.delta
    ):
        stable_start -= 1
    if n - stable_start < criteria.min_stable:
        stable_start = n
    trans_start = stable_start
    while trans_start > 0 and settled(trans_start - 1):
        trans_start -= 1
    labels = []
    for i in range(n):
        if i >= stable_start:
            labels.append("stable")
        elif i >= trans_start:
            labels.append("transition")
        elif i >= first:
            labels.append("wandering")
        else:
            labels.append("absent")
    return labels


# ---------------------------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------------------------


def trace_run(
    run_dir: str | os.PathLike,
    *,
    batch_size: int = 32,
    first_k: int = 4,
    criteria: PhaseCriteria = PhaseCriteria(),
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Measure every checkpoint of a run and label its phases; returns the trace.json dict."""
    from circuits.training import (
        DataSource,
        _to,
        build_model,
        list_checkpoints,
        load_checkpoint_weights,
        read_run,
    )

    run_dir = Path(run_dir)
    config, meta = read_run(run_dir)
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise UsageError(f"{run_dir} holds no checkpoints; train it first")
    if config.n_ctx <= first_k:
        raise UsageError(f"first_k={first_k} must be below the run's n_ctx={config.n_ctx}")
    tokens = DataSource(config).eval_batch(batch_size).to(device)
    model = _to(build_model(config, meta["vocab_size"]), torch.device(device))
    train_loss = {}
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        import json

        train_loss = {
            row["step"]: row["loss"] for row in json.loads(metrics_path.read_text())["loss"]
        }

    iterator = ckpts
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(ckpts, desc=f"trace {run_dir.name}", unit="ckpt")
    checkpoints = []
    for step, path in iterator:
        model.load_state_dict(load_checkpoint_weights(path))
        row = {"step": step, "phase": None, "train_loss": train_loss.get(step)}
        row.update(
            measure_checkpoint(model, tokens, bos=config.bos, first_k=first_k, eps=criteria.eps)
        )
        checkpoints.append(row)
    phases = detect_phases(
        [c["sink_strength"] for c in checkpoints],
        [(c["sink_position"], c["jump_layer"]) for c in checkpoints],
        criteria,
    )
    for row, phase in zip(checkpoints, phases, strict=True):
        row["phase"] = phase
    final = checkpoints[-1]
    phase_starts = {
        p: next((c["step"] for c in checkpoints if c["phase"] == p), None) for p in PHASES
    }
    summary = {
        "final_step": final["step"],
        "final_phase": final["phase"],
        "phase_start_step": phase_starts,
        "final_sink_score": [layer["sink_score"] for layer in final["layers"]],
        "final_attn_to_p0": [layer["attn_to_p0"] for layer in final["layers"]],
        "final_p0_norm_ratio": [layer["p0_norm_ratio"] for layer in final["layers"]],
        "final_sink_position": final["sink_position"],
        "final_jump_layer": final["jump_layer"],
        "final_norm_growth_share_l01": final["norm_growth_share_l01"],
        "final_ablation_share_l01": final["ablation_share_l01"],
        "sink_layers_over_eps": [
            layer["layer"] for layer in final["layers"] if layer["sink_score"] > criteria.eps
        ],
        "first_step_with_sink": next(
            (c["step"] for c in checkpoints if c["sink_strength"] > criteria.eps), None
        ),
    }
    return {
        "format": "p0-circuits-trace/1",
        "run": str(run_dir),
        "bos": config.bos,
        "config": config.to_dict(),
        "data_id": meta.get("data_id"),
        "eval": {"batch_size": batch_size, "n_tokens": int(tokens.shape[1]), "first_k": first_k},
        "criteria": asdict(criteria),
        "summary": summary,
        "checkpoints": checkpoints,
    }


def plot_trace(trace: dict[str, Any], target: str | os.PathLike) -> Path:
    """Metric vs step (log x): attn_to_p0, sink_score and P0 norm ratio per layer, the layers-0-1
    shares and the loss, with the phases shaded. Written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from circuits.io import atomic_path

    cps = trace["checkpoints"]
    steps = [max(c["step"], 0.5) for c in cps]  # step 0 drawn at 0.5 on the log axis
    n_layers = len(cps[0]["layers"])
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    colors = {
        "absent": "#ffffff",
        "wandering": "#fde0c5",
        "transition": "#fff3b0",
        "stable": "#d6f5d6",
    }
    for ax in axes.flat:
        for i, c in enumerate(cps):
            lo = steps[i] if i == 0 else math.sqrt(steps[i - 1] * steps[i])
            hi = steps[i] if i == len(cps) - 1 else math.sqrt(steps[i] * steps[i + 1])
            ax.axvspan(lo, hi, color=colors[c["phase"]], lw=0)
        ax.set_xscale("log")
        ax.set_xlabel("step")
    cmap = plt.get_cmap("viridis")
    for key, ax, title in [
        ("attn_to_p0", axes[0, 0], "attention to P0 (queries >= 1)"),
        ("sink_score", axes[0, 1], "sink score alpha_0 (Gu et al.)"),
        ("p0_norm_ratio", axes[0, 2], "P0 norm / median other norm"),
    ]:
        for layer in range(n_layers):
            ax.plot(
                steps,
                [c["layers"][layer][key] for c in cps],
                marker=".",
                color=cmap(layer / max(1, n_layers - 1)),
                label=f"L{layer}",
            )
        ax.set_title(title)
        ax.legend(fontsize=7)
    axes[0, 1].axhline(trace["criteria"]["eps"], color="k", ls=":", lw=1)
    axes[0, 2].set_yscale("log")
    ax = axes[1, 0]
    first_k = trace["eval"]["first_k"]
    for k in range(first_k):
        ax.plot(steps, [c["key_attention"][k] for c in cps], marker=".", label=f"key {k}")
    ax.set_title("downstream attention to the first keys")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    for key, label in [
        ("norm_growth_share_l01", "P0 norm growth"),
        ("ablation_share_l01", "ablation effect"),
    ]:
        ax.plot(
            steps,
            [c[key] if c[key] is not None else float("nan") for c in cps],
            marker="o",
            label=label,
        )
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("share in layers 0-1")
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    ax.plot(steps, [c["eval_loss"] for c in cps], marker=".", label="eval loss")
    ax.set_title("loss (nats/token)")
    ax.legend(fontsize=7)
    cfg = trace["config"]
    fig.suptitle(
        f"{Path(trace['run']).name}: {cfg['n_layers']}L d{cfg['d_model']} {cfg['positional']} "
        f"{cfg['data']} bos={trace['bos']}  (shading: wandering / transition / stable)"
    )
    target = Path(target)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return target
