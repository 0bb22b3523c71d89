"""Result directories for the render / report / browser tests, built fast and without a real model.

``measure_dir``: ``p0-circuits measure`` on the in-memory ``tiny`` zoo model (seconds).
``discover_dir``: a hand-written ``patching.json`` + ``circuit.json`` / ``circuit.graphml`` with
the shape ``p0-circuits discover`` writes (a P0 circuit attn0 -> mlp0 -> K of layers 2-3).
"""

from __future__ import annotations

import json
from pathlib import Path

from circuits.circuit.graph import CircuitGraph
from circuits.cli import main as cli_main
from circuits.core.conventions import RECORD_FORMATS
from circuits.core.manifest import write_manifest


def measure_dir(root: Path, name: str = "measure", bos: bool = False) -> Path:
    out = root / name
    argv = ["measure", "--model", "tiny", "--max-tokens", "24", "--out", str(out), "--quiet"]
    argv.insert(3, "--bos" if bos else "--no-bos")
    assert cli_main(argv) == 0
    assert (out / "sink_metrics.json").is_file()
    return out


def _row(name: str, kind: str, layer: int, head: int | None, value: float, clean: float) -> dict:
    return {
        "name": name,
        "sites": [
            {
                "name": name,
                "kind": kind,
                "layer": layer,
                "head": head,
                "positions": [0],
                "hook": "x",
            }
        ],
        "value": value,
        "effect": value - clean,
        "relative": (value - clean) / clean,
    }


def discover_dir(root: Path, name: str = "discover") -> Path:
    out = root / name
    out.mkdir(parents=True)
    clean = 0.5
    comps = [_row("embed@p0", "embed", 0, None, 0.49, clean)]
    for layer, (a, m) in enumerate([(0.2, 0.1), (0.45, 0.48), (0.5, 0.5)]):
        comps.append(_row(f"attn{layer}@p0", "attn", layer, None, a, clean))
        comps.append(_row(f"mlp{layer}@p0", "mlp", layer, None, m, clean))
    heads = [
        _row(f"attn0.h{h}@p0", "head", 0, h, v, clean)
        for h, v in enumerate([0.25, 0.48, 0.5, 0.47])
    ]
    attribution = [dict(r, effect=r["effect"] * 0.9) for r in comps + heads]
    attribution += [_row(f"attn1.h{h}@p0", "head", 1, h, 0.49, clean) for h in range(4)]
    record = {
        "format": RECORD_FORMATS["discover"],
        "model": "tiny-synthetic",
        "counterfactual": "shift",
        "counterfactual_definition": "the first token one place later",
        "metric": {
            "name": "sink_score",
            "definition": "mean sink score of receiver layers",
            "receiver_layers": [2, 3],
        },
        "receiver_layers": [2, 3],
        "n_prompts": 2,
        "n_tokens": 8,
        "tokens": [[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18, 19, 20]],
        "str_tokens": [list("abcdefgh"), list("ijklmnop")],
        "clean": {"sink": clean, "per_receiver_layer": {"2": 0.45, "3": 0.55}},
        "first_pass": {"effects": attribution},
        "first_pass_exact_pearson": 0.97,
        "components": {"effects": comps},
        "heads": {"effects": heads},
        "paths_mlp": None,
        "paths_k": None,
        "circuit": ["attn0.h0@p0", "mlp0@p0"],
        "faithfulness": {"kept": 0.91, "ablated": 0.18, "floor": 0.1, "per_receiver": None},
        "verdict": "faithful circuit {attn0.h0@p0, mlp0@p0}: synthetic <test> & 'quotes'",
        "paper_prediction_shape": True,
        "timings_s": {"total": 1.0},
        "bos": False,
        "clean_sink_all_layers": [0.1, 0.05, 0.45, 0.55],
    }
    (out / "patching.json").write_text(json.dumps(record))
    g = CircuitGraph(model="tiny-synthetic", receiver_layers=[2, 3], record="patching.json")
    g.add_node("attn0.h0@p0", layer=0, kind="head", head=0, position=0, effect=-0.25, relative=-0.5)
    g.add_node(
        "mlp0@p0",
        layer=0,
        kind="mlp",
        position=0,
        effect=-0.4,
        relative=-0.8,
        head_relative_effects=[0.1, 0.2],
    )
    g.add_node("attn2.k", layer=2, kind="k", sink_clean=0.45)
    g.add_node("attn3.k", layer=3, kind="k", sink_clean=0.55)
    g.add_edge("attn0.h0@p0", "mlp0@p0", path_type="mlp_in", effect=-0.3, relative=-0.6)
    g.add_edge("mlp0@p0", "attn2.k", path_type="k", effect=-0.35, relative=-0.78)
    g.add_edge("mlp0@p0", "attn3.k", path_type="k", effect=-0.2, relative=-0.36)
    g.add_edge("attn0.h0@p0", "attn3.k", path_type="k", effect=0.02, relative=0.04)
    g.write_json(out / "circuit.json")
    g.write_graphml(out / "circuit.graphml")
    write_manifest(out)
    return out
