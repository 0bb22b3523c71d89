"""p0-circuits: find, measure and trace the position-zero attention-sink circuit.

The public API, re-exported lazily (PEP 562): ``import circuits`` imports no model library; a
name is imported the first time it is used. The layers and their modules: ``ARCHITECTURE.md``.
"""

from circuits.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "zoo.load",
    "list_zoo": "zoo.pins",
    "tiny_model": "zoo.tiny",
    "ZooModel": "zoo.model",
    "SinkReport": "metrics.measure",
    "measure_sinks": "metrics.measure",
    "attn_to_p0": "metrics.attention",
    "sink_score": "metrics.attention",
    "sink_rate": "metrics.attention",
    "sum_p_squared": "metrics.attention",
    "residual_norms": "metrics.residual",
    "massive_activations": "metrics.residual",
    "Patcher": "patching.patcher",
    "Site": "patching.sites",
    "Receiver": "patching.sites",
    "SinkScore": "patching.readouts",
    "P0Norm": "patching.readouts",
    "CacheReadout": "patching.readouts",
    "CircuitGraph": "circuit.graph",
    "explore": "panel.widget",
    "DiscoverConfig": "circuit.config",
    "discover": "circuit.discover",
    "P0SinkMonitor": "emergence.monitor",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
