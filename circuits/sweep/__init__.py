"""Sweeps: a grid of ``measure`` / ``discover`` jobs over models, checkpoints, counterfactuals
and prompt settings, run on this machine or a SLURM cluster (submitit), resumable, summarised."""

from circuits.core.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SweepSpec": "spec",
        "read_spec": "spec",
        "expand": "spec",
        "run_job": "jobs",
        "run_sweep": "run",
        "SweepOutcome": "run",
        "ClusterOptions": "executors",
    },
)
