"""The sides the patching benchmarks compare, on one model, prompts, grid and metric (the sink
score, Gu et al. alpha_0, of every layer; ``shift`` counterfactual):

* ``ours``: ``Patcher.patch`` (clean prefix reused, the run stops at the metric's last read,
  many patches stacked per forward);
* ``tl``: TransformerLens' ``patching`` module: one full forward (with unembedding) per patch;
  its metric sees only logits, so it reads the sink through permanent hooks on ``hook_pattern``;
* ``batched_tl``: what an expert who wants speed writes on TransformerLens: stacked patched
  copies of the prompts (as many patches per forward as ours), one
  ``model.run_with_hooks(..., return_type=None)`` per chunk (no unembedding), patch hooks writing
  each copy's rows, metric hooks on ``hook_pattern`` reading each copy's sink;
* ``ideal``: for each patch, the fraction of the model's layers it must recompute (from its
  layer on: ``(n_layers - layer) / n_layers``) times the time of one clean forward of the
  prompts without unembedding (fastest of 5).

``flop_bound``: the FLOP ratio of ``tl`` to ``ideal`` (every layer plus the unembedding per
patch, against the layers from each patch's own), the speedup exact patching can reach.
Each side returns ``(seconds, values, peak_rss_mb, extra_rss_mb)``: peak RSS is sampled every
2 ms while the side runs (resident memory of the whole process, model included); the extra is
that peak minus the RSS when the side started (memory freed by an earlier side and kept by the
allocator is reused, so run the side of interest first to see its full need).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pandas as pd
import torch


class PeakRSS:
    """Peak resident set size (MB) of this process while the ``with`` block runs."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _poll(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20


def layer_macs(cfg, n_tokens: int) -> float:
    """Multiply-accumulates per token of one block (projections, MLP, scores and AV at the
    average causal context ``n_tokens / 2``)."""
    d, dh = cfg.d_model, cfg.d_head
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    proj = d * cfg.n_heads * dh * 2 + d * n_kv * dh * 2
    mlp = (3 if cfg.gated_mlp else 2) * d * (cfg.d_mlp or 0)
    attn = 2 * cfg.n_heads * dh * n_tokens / 2
    return proj + mlp + attn


def flop_bound(cfg, n_tokens: int, start_layers: list[int]) -> float:
    """FLOPs of one full forward with unembedding per patch / FLOPs of the layers each patch
    must recompute (from its start layer on, no unembedding)."""
    per_layer = layer_macs(cfg, n_tokens)
    unembed = cfg.d_model * cfg.d_vocab
    full = len(start_layers) * (cfg.n_layers * per_layer + unembed)
    needed = sum((cfg.n_layers - s) * per_layer for s in start_layers)
    return full / needed


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor, float, float]:
    with PeakRSS() as rss, torch.inference_mode():
        t = time.perf_counter()
        values = fn()
        seconds = time.perf_counter() - t
    return seconds, values.detach().cpu().float(), rss.peak, rss.peak - rss.start


def ours(patcher, sites, metric):
    return _timed(lambda: patcher.patch(sites, metric).values)


def _sink_per_row(pattern: torch.Tensor) -> torch.Tensor:
    return pattern[:, :, :, 0].mean(dim=2)  # [rows, head]: alpha_0 per row and head


def transformer_lens_module(model, tokens, patcher, sites, receivers):
    """TL's ``patching`` functions; heads via ``get_act_patch_attn_head_out_all_pos`` (or
    ``..._by_pos`` at P0), P0 residuals via ``get_act_patch_resid_pre`` (an ``index_df`` picks
    exactly our sites)."""
    import transformer_lens.patching as tlp
    from transformer_lens import ActivationCache
    from transformer_lens.utilities import get_act_name

    store: dict[int, torch.Tensor] = {}

    def record(pattern, hook):
        store[hook.layer()] = _sink_per_row(pattern).mean()

    def metric(logits):
        return torch.stack([store[la] for la in receivers]).mean()

    source = ActivationCache(patcher.cf, model)

    def run() -> torch.Tensor:
        values = []
        heads = [s for s in sites if s.kind == "head"]
        resid = [s for s in sites if s.kind == "resid_pre"]
        if heads and heads[0].positions is None:
            df = pd.DataFrame([(s.layer, s.head) for s in heads], columns=["layer", "head"])
            values.append(
                tlp.get_act_patch_attn_head_out_all_pos(
                    model, tokens, source, metric, index_axis_names=None, index_df=df
                )
            )
        elif heads:  # at P0
            rows = [(s.layer, 0, s.head) for s in heads]
            df = pd.DataFrame(rows, columns=["layer", "pos", "head"])
            values.append(
                tlp.get_act_patch_attn_head_out_by_pos(
                    model, tokens, source, metric, index_axis_names=None, index_df=df
                )
            )
        if resid:
            df = pd.DataFrame([(s.layer, 0) for s in resid], columns=["layer", "pos"])
            values.append(
                tlp.get_act_patch_resid_pre(
                    model, tokens, source, metric, index_axis_names=None, index_df=df
                )
            )
        return torch.cat([v.flatten() for v in values])

    for layer in receivers:
        model.add_hook(get_act_name("pattern", layer), record, is_permanent=True)
    try:
        return _timed(run)
    finally:
        model.reset_hooks(including_permanent=True)


def batched_transformer_lens(model, tokens, patcher, sites, receivers, max_rows):
    """The expert's batched hook loop (see the module docstring)."""
    from transformer_lens.utilities import get_act_name

    b = tokens.shape[0]
    per_forward = max(1, max_rows // b)

    def run() -> torch.Tensor:
        values = []
        for lo in range(0, len(sites), per_forward):
            chunk = sites[lo : lo + per_forward]
            k = len(chunk)
            scores: dict[int, torch.Tensor] = {}

            def read(pattern, hook, k=k, scores=scores):  # per copy: mean over prompts, heads
                scores[hook.layer()] = _sink_per_row(pattern).view(k, b, -1).mean(dim=(1, 2))

            hooks = [(get_act_name("pattern", la), read) for la in receivers]
            for j, site in enumerate(chunk):
                src = patcher.cf[site.hook_name]

                def write(act, hook, j=j, site=site, src=src):
                    rows = slice(j * b, (j + 1) * b)
                    pos = slice(None) if site.positions is None else list(site.positions)
                    if site.head is not None:
                        act[rows, pos, site.head] = src[:, pos, site.head]
                    else:
                        act[rows, pos] = src[:, pos]
                    return act

                hooks.append((site.hook_name, write))
            model.run_with_hooks(tokens.repeat(k, 1), fwd_hooks=hooks, return_type=None)
            values.append(torch.stack([scores[la] for la in receivers]).mean(0))
        return torch.cat(values)

    return _timed(run)


def clean_forward_s(model, tokens) -> float:
    """Fastest of 5 clean forwards of ``tokens`` without unembedding."""
    times = []
    with torch.inference_mode():
        for _ in range(5):
            t = time.perf_counter()
            model(tokens, return_type=None)
            times.append(time.perf_counter() - t)
    return min(times)


def ideal_s(n_layers: int, sites, forward_s: float) -> float:
    return sum((n_layers - s.layer) / n_layers for s in sites) * forward_s
