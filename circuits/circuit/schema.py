"""What every circuit graph carries: node, edge and graph attributes, and plain values.

Shared by ``CircuitGraph`` (``circuits.circuit.graph``) and the file formats
(``circuits.circuit.export``), so that JSON and GraphML hold the same attributes and a graph read
back equals the one written. The graph attributes make a file self-describing: a GraphML opened in
Gephi or igraph says which model and question it answers, how faithful the circuit is and where it
came from.
"""

from __future__ import annotations

import math
from typing import Any

from circuits.core.conventions import RECEIVER_KINDS, SITE_KINDS

NODE_KINDS = SITE_KINDS + RECEIVER_KINDS
PATH_TYPES = RECEIVER_KINDS
NODE_SCHEMA = (
    "layer",
    "kind",
    "head",
    "expert",
    "position",
    "effect",
    "relative",
    "first_pass",
    "role",
    "sink_clean",
    "head_relative_effects",
)
"""Every node carries these attributes (None where they do not apply)."""
EDGE_SCHEMA = ("path_type", "effect", "relative")
GRAPH_SCHEMA = (
    "model",
    "counterfactual",
    "metric",
    "receiver_layers",
    "position",
    "n_prompts",
    "n_tokens",
    "parallel_attn_mlp",
    "record",
    "bos",
    "seed",
    # self-describing (circuits.circuit.save.graph_attributes)
    "counterfactual_definition",
    "metric_definition",
    "readout",
    "readout_label",
    "clean_sink",
    "circuit",
    "verdict",
    "faithfulness_kept",
    "faithfulness_ablated",
    "faithfulness_floor",
    "faithfulness_cpr",
    "faithfulness_cmd",
    "first_pass_cpr",
    "first_pass_cmd",
    "random_cpr_mean",
    "random_cmd_mean",
    "prediction_clean_loss",
    "prediction_circuit_loss_increase",
    "prediction_circuit_kl",
    "prediction_random_kl_mean",
    "prediction_random_loss_increase_mean",
    "command_line",
    "p0_circuits_version",
    "transformer_lens_version",
    "torch_version",
)
"""Every graph carries these attributes (None where unknown): the experiment, the circuit's
faithfulness and verdict, its effect on predictions, and provenance."""


def plain(value: Any) -> Any:
    """Python scalars only (no numpy/torch numbers), NaN -> None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if math.isnan(value) else float(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return plain(value.item())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
