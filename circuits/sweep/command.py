"""``p0-circuits sweep SPEC --out DIR``: a grid of measure / discover jobs (``circuits.sweep``).

The command module of ``sweep`` lives here, above the CLI, because a sweep builds and checks
``p0-circuits`` command lines with the CLI's own parser; ``circuits.cli`` registers it by name."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuits.cli.common import add_quiet
from circuits.sweep.executors import EXECUTORS

NAME = "sweep"
HELP = (
    "Run a grid of measure / discover jobs (models x checkpoints x counterfactuals x prompt "
    "settings, from a TOML or JSON spec) on this machine or a SLURM cluster (submitit); "
    "re-running skips finished jobs. Writes DIR/jobs/<id>/ (each an ordinary output folder), "
    "summary.jsonl, summary.csv and report.html."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="the sweep's spec (.toml or .json)")
    parser.add_argument("--out", type=Path, required=True, help="the sweep's folder (reused)")
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: this machine (default); submitit-local / slurm: through submitit",
    )
    parser.add_argument("--workers", type=int, default=1, help="local: jobs at once (default 1)")
    parser.add_argument(
        "--retry-failed", action="store_true", help="run the jobs that failed before again"
    )
    parser.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    cluster = parser.add_argument_group("slurm (submitit)")
    cluster.add_argument("--partition", default=None, help="SLURM partition")
    cluster.add_argument("--gpus", type=int, default=0, help="GPUs per job (default 0)")
    cluster.add_argument("--cpus", type=int, default=2, help="CPUs per job (default 2)")
    cluster.add_argument("--mem-gb", type=float, default=16.0, help="memory per job (default 16)")
    cluster.add_argument("--time-min", type=int, default=60, help="time limit per job (default 60)")
    cluster.add_argument(
        "--array-parallelism", type=int, default=64, help="jobs of the array at once (default 64)"
    )
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from circuits.cli.common import check_range
    from circuits.sweep.executors import ClusterOptions
    from circuits.sweep.run import run_sweep

    check_range("--workers", args.workers, 1)
    check_range("--gpus", args.gpus, 0)
    check_range("--cpus", args.cpus, 1)
    check_range("--mem-gb", args.mem_gb, 0.1)
    check_range("--time-min", args.time_min, 1)
    options = ClusterOptions(
        partition=args.partition,
        gpus=args.gpus,
        cpus=args.cpus,
        mem_gb=args.mem_gb,
        time_min=args.time_min,
        array_parallelism=args.array_parallelism,
    )
    outcome = run_sweep(
        args.spec,
        args.out,
        executor=args.executor,
        workers=args.workers,
        retry_failed=args.retry_failed,
        cluster=options,
        wait=not args.no_wait,
        progress=not args.quiet,
    )
    print(outcome.table())
    print(f"summary: {', '.join(str(p) for p in outcome.files)}")
    unfinished = outcome.unfinished()
    if unfinished:
        print(unfinished)
        return 1
    return 0
