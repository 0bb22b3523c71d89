"""Emergence: how the P0 sink and its circuit form over training, traced across checkpoints."""

from circuits.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "PhaseCriteria": "phases",
        "detect_phases": "phases",
        "measure_checkpoint": "checkpoint_metrics",
        "trace_run": "trace",
        "trace_series": "trace",
        "CheckpointSeries": "series",
        "run_series": "series",
        "hf_folder_series": "series",
        "official_series": "series",
        "circuit_over_training": "circuit_over_training",
        "P0SinkMonitor": "monitor",
        "signal_converged": "monitor",
    },
)
