"""p0-circuits: find, measure and trace the position-zero attention-sink circuit.

Public API (re-exported names only); see README.md for the tour.
"""

__version__ = "0.1.0"

from circuits.discover import DiscoverConfig  # noqa: E402
from circuits.graph import CircuitGraph  # noqa: E402
from circuits.metrics import (  # noqa: E402
    SinkReport,
    attn_to_p0,
    massive_activations,
    measure_sinks,
    residual_norms,
    sink_rate,
    sink_score,
    sum_p_squared,
)
from circuits.patching import (  # noqa: E402
    CacheMetric,
    P0NormMetric,
    Patcher,
    Receiver,
    SinkMetric,
    Site,
)
from circuits.zoo import ZooModel, list_zoo, load_model, tiny_model  # noqa: E402

__all__ = [
    "CacheMetric",
    "CircuitGraph",
    "DiscoverConfig",
    "P0NormMetric",
    "Patcher",
    "Receiver",
    "SinkMetric",
    "Site",
    "SinkReport",
    "ZooModel",
    "attn_to_p0",
    "list_zoo",
    "load_model",
    "massive_activations",
    "measure_sinks",
    "residual_norms",
    "sink_rate",
    "sink_score",
    "sum_p_squared",
    "tiny_model",
]
