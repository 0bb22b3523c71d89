"""The circuit: discovery as a pipeline of steps, faithfulness, and the ``CircuitGraph``."""

from circuits.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CircuitGraph": "graph",
        "DiscoverConfig": "config",
        "Discovery": "discover",
        "discover": "discover",
    },
)
