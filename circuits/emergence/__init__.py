"""Emergence: how the P0 sink and its circuit form over training, traced across checkpoints."""

from circuits.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "PhaseCriteria": "phases",
        "detect_phases": "phases",
        "measure_checkpoint": "checkpoint_metrics",
        "trace_run": "trace",
    },
)
