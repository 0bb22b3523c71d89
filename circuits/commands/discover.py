"""``p0-circuits discover``: find the P0 Sink Circuit by patching, as a graph with a verdict."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from circuits.counterfactuals import COUNTERFACTUALS
from circuits.discover import DiscoverConfig, check_config, clean_sink_per_layer, discover
from circuits.errors import UsageError
from circuits.io import output_dir, provenance, write_json
from circuits.prompts import prompt_set, read_text
from circuits.render import build_report
from circuits.zoo import DEFAULT_MODEL, load_model

NAME = "discover"
HELP = (
    "Find the P0 Sink Circuit: patch P0's components (component sweep, head sweep, path "
    "patching), measure the sink of later layers, and write circuit.json, circuit.graphml, "
    "circuit.dot, patching.json, figures and report.html."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"zoo name, local path or TransformerLens name (default {DEFAULT_MODEL})")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--counterfactual", choices=list(COUNTERFACTUALS), default="shift",
                        help="value patched into P0: shift (the first token one place later; "
                        "default), mean (mean over positions >= 1) or zero")
    bos = parser.add_mutually_exclusive_group()
    bos.add_argument("--bos", dest="bos", action="store_true", default=None,
                     help="BOS at position 0 (default: the model's training regime)")
    bos.add_argument("--no-bos", dest="bos", action="store_false", help="the text's first token at position 0")
    parser.add_argument("--n-prompts", type=int, default=8, help="prompts (default 8)")
    parser.add_argument("--n-tokens", type=int, default=64, help="tokens per prompt (default 64)")
    parser.add_argument("--text", type=Path, default=None, help="UTF-8 text for the prompts (default: shipped text)")
    parser.add_argument("--receivers", type=str, default=None,
                        help="receiver layers of the sink metric, e.g. '2,3,4' (default: --first-receiver .. last)")
    parser.add_argument("--first-receiver", type=int, default=2,
                        help="first receiver layer when --receivers is not given (default 2: Gu et al.'s Sink[2:])")
    parser.add_argument("--threshold", type=float, default=0.05,
                        help="|sink change| / clean sink needed to select a component or head (default 0.05)")
    parser.add_argument("--edge-threshold", type=float, default=0.02,
                        help="|sink change| / clean sink needed to draw a path (default 0.02)")
    parser.add_argument("--exact-top-k", type=int, default=8,
                        help="exact patching for the embedding, the blocks up to --first-receiver and "
                        "the K other components ranked highest by attribution patching (default 8; "
                        "-1: exact patching of every component)")
    parser.add_argument("--sufficiency", type=float, default=0.8,
                        help="kept fraction of the sink at which the backup search stops (default 0.8)")
    parser.add_argument("--max-backups", type=int, default=3,
                        help="most backup nodes the sufficiency search may add (default 3; 0: no search)")
    parser.add_argument("--max-rows", type=int, default=64,
                        help="largest stacked batch per forward (patches x prompts; default 64)")
    parser.add_argument("--seed", type=int, default=0, help="recorded; discovery is deterministic")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _finite(value):
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.n_tokens < 2:
        raise UsageError(f"--n-tokens (n_tokens) must be at least 2, got {args.n_tokens}")
    if args.n_prompts < 1:
        raise UsageError(f"--n-prompts must be at least 1, got {args.n_prompts}")
    receivers = None
    if args.receivers is not None:
        try:
            receivers = [int(x) for x in args.receivers.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--receivers takes layers like '2,3,4', got {args.receivers!r}") from None
        if not receivers:
            raise UsageError("--receivers is empty")
    config = DiscoverConfig(
        counterfactual=args.counterfactual,
        receivers=receivers,
        first_receiver=args.first_receiver,
        component_threshold=args.threshold,
        head_threshold=args.threshold,
        edge_threshold=args.edge_threshold,
        exact_top_k=None if args.exact_top_k < 0 else args.exact_top_k,
        sufficiency=args.sufficiency,
        max_backups=args.max_backups,
        max_rows=args.max_rows,
        progress=not args.quiet,
    )
    check_config(config)  # before any file or model is touched
    text = read_text(args.text)
    with output_dir(args.out) as out:
        torch.manual_seed(args.seed)
        zm = load_model(args.model, progress=not args.quiet)
        bos = zm.natural_bos if args.bos is None else args.bos
        tokens = prompt_set(zm, n_prompts=args.n_prompts, n_tokens=args.n_tokens, bos=bos, text=text)
        loaded = time.perf_counter()
        found = discover(
            zm.model, tokens, config, model_name=zm.name,
            str_tokens=[zm.str_tokens(row) for row in tokens],
        )
    record = found.record
    prov = provenance("discover", vars(args), args.seed, zm.name)
    record["provenance"] = prov
    record["bos"] = bos
    record["natural_bos"] = zm.natural_bos
    record["clean_sink_all_layers"] = clean_sink_per_layer(zm.model, tokens)
    record["timings_s"]["load_model"] = round(loaded - started, 3)
    graph = found.graph
    graph.g.graph.update(bos=bos, n_prompts=args.n_prompts, n_tokens=args.n_tokens,
                         seed=args.seed, provenance=prov)
    record["timings_s"]["total"] = round(time.perf_counter() - started, 3)
    write_json(out / "patching.json", _finite(record))
    graph.write_json(out / "circuit.json")
    graph.write_graphml(out / "circuit.graphml")
    graph.write_dot(out / "circuit.dot")
    build_report(out, zm=zm)
    if not args.quiet:
        print(found.verdict)
        print(f"faithfulness_kept={found.faithfulness_kept:.3f} faithfulness_ablated={found.faithfulness_ablated:.3f}")
        print(f"wrote {out}/circuit.json, circuit.graphml, circuit.dot, patching.json, report.html "
              f"and figures; discovery took {record['timings_s']['total']:.1f}s")
    return 0
