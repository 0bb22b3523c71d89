"""``p0-circuits discover`` over the scaling sizes: wall time, peak RSS and the patching time.

The ``discover`` column of ``bench_scaling.py --discover`` alone (no head-grid sides), for
re-measuring it after a change to ``discover`` without re-running every side. One child process
per size (``bench_scaling.discover_run``); one JSON object per size.

    python benchmarks/bench_discover_sizes.py [--model smollm2-135m] [--sizes 4x64 8x64 ...]
        [--max-memory GB]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_scaling import SIZES, discover_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument(
        "--sizes", nargs="+", default=[f"{p}x{t}" for p, t in SIZES], help="PROMPTSxTOKENS"
    )
    parser.add_argument("--max-memory", type=float, help="discover's --max-memory GB")
    args = parser.parse_args()
    extra = () if args.max_memory is None else ("--max-memory", str(args.max_memory))
    for size in args.sizes:
        n_prompts, n_tokens = (int(x) for x in size.split("x"))
        row = {"model": args.model, "n_prompts": n_prompts, "n_tokens": n_tokens}
        if args.max_memory is not None:
            row["max_memory_gb"] = args.max_memory
        row.update(discover_run(args.model, n_prompts, n_tokens, extra))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
