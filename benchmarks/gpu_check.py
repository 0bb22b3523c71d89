"""One short check of the GPU paths, ending in one JSON line (``benchmarks/gpu_check.sh`` runs it).

Builds its models on the spot (seeded random weights: the tiny structure and Llama-3.2-1B's
shape), so it needs no network and no download, and compares the GPU with the same machine's
CPU:

1. ``discover`` on cuda against the CPU, float32: max |diff| of the clean sink and of every
   component's relative effect, and whether the circuit is the same;
2. bfloat16 against float32 on cuda: the same numbers;
3. the 1B shape in bfloat16 on cuda: discover's time and peak GPU memory against ``plan``'s;
4. the panel's click-to-exact latency: an exact per-layer curve of one selection
   (``PatchSession.curve``), median of five;
5. where torch sees two GPUs, the tiny structure split over both (``--n-devices 2``) against
   one card: the same numbers (else the line says why it was skipped).

``--small`` (or no GPU) runs every step at small sizes on whatever device there is, so a test
checks it on a CPU (``tests/unit/test_gpu_check.py``) before a GPU is at hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from circuits.backend.devices import split_across_devices  # noqa: E402
from circuits.circuit.config import DiscoverConfig  # noqa: E402
from circuits.circuit.discover import discover  # noqa: E402
from circuits.panel.session import PatchSession  # noqa: E402
from circuits.patching.plan import plan  # noqa: E402
from circuits.training.checkpoints import cast_model, move_model  # noqa: E402
from circuits.zoo.pins import ZOO  # noqa: E402
from circuits.zoo.shapes import PUBLISHED_SHAPES, shape_from_fields  # noqa: E402
from circuits.zoo.tiny import tiny_model  # noqa: E402


def _config() -> DiscoverConfig:
    return DiscoverConfig(receivers=None, progress=False, prediction_random_sets=2, max_backups=1)


def _discovery(model, tokens) -> dict:
    rec = discover(model, tokens, _config(), model_name="check").result
    return {
        "clean": float(rec.clean.sink if hasattr(rec.clean, "sink") else rec.clean),
        "effects": {n: float(r.relative or 0.0) for n, r in rec.exact_effects().items()},
        "circuit": sorted(rec.circuit or []),
    }


def _diff(a: dict, b: dict) -> dict:
    names = sorted(set(a["effects"]) & set(b["effects"]))
    return {
        "clean_abs_diff": abs(a["clean"] - b["clean"]),
        "effect_max_abs_diff": max(abs(a["effects"][n] - b["effects"][n]) for n in names),
        "same_circuit": a["circuit"] == b["circuit"],
    }


def _model(fields: dict, device: torch.device, dtype: str):
    model = tiny_model(seed=0, **fields)
    return move_model(cast_model(model, dtype), device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small sizes (a CPU test)")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    small = args.small or not gpu
    out: dict = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "small": small}
    tiny = dict(n_layers=4)
    tokens = torch.randint(3, 200, (4, 24), generator=torch.Generator().manual_seed(0))

    start = time.perf_counter()
    cpu = _discovery(_model(tiny, torch.device("cpu"), "float32"), tokens)
    on_dev = _discovery(_model(tiny, dev, "float32"), tokens.to(dev))
    out["float32_device_vs_cpu"] = _diff(on_dev, cpu)
    half = _discovery(_model(tiny, dev, "bfloat16"), tokens.to(dev))
    out["bfloat16_vs_float32"] = _diff(half, on_dev)

    shape_fields = dict(ZOO["llama-3.2-1b-shape"].shape or {})
    n_prompts, n_tokens = 4, 32
    if small:  # the 1B shape's structure at a width a CPU test can run
        shape_fields.update(n_layers=2, d_model=64, n_heads=4, n_key_value_heads=2, d_head=16,
                            d_mlp=128, d_vocab=512, rotary_dim=16)  # fmt: skip
        n_prompts, n_tokens = 2, 16
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    big = _model(shape_fields, dev, "bfloat16")
    toks = torch.randint(3, 250, (n_prompts, n_tokens), generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    discover(big, toks.to(dev), _config(), model_name="1b-shape")
    shape = shape_from_fields("1b-shape", shape_fields)
    planned = plan(shape, dtype="bfloat16", n_prompts=n_prompts, n_tokens=n_tokens,
                   card_gb=80.0 if gpu else None)  # fmt: skip
    out["shape_1b_bfloat16"] = {
        "full_shape": not small,
        "discover_s": round(time.perf_counter() - t0, 2),
        "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 2) if gpu else None,
        "plan_peak_gb": round(planned.peak_per_card / 1024**3, 2),
        "plan_s": round(planned.gpu_seconds("h100") if gpu else planned.cpu_seconds(), 2),
    }
    del big
    assert PUBLISHED_SHAPES  # the plan's table is importable where the check runs

    session = PatchSession(_model(tiny, dev, "float32"), tokens.to(dev), receivers=[2, 3])
    latencies = []
    for _ in range(5):
        t0 = time.perf_counter()
        session.curve(["attn0@p0", "mlp1@p0"])
        if gpu:
            torch.cuda.synchronize()
        latencies.append(time.perf_counter() - t0)
    out["panel_click_to_exact_s"] = round(statistics.median(latencies), 4)
    if gpu and torch.cuda.device_count() >= 2:
        split = split_across_devices(cast_model(tiny_model(seed=0, **tiny), "float32"), dev, 2)
        out["two_cards_vs_one"] = _diff(_discovery(split, tokens.to(dev)), on_dev)
    else:
        out["two_cards_vs_one"] = f"skipped: torch sees {torch.cuda.device_count()} GPU(s)"
    out["total_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
