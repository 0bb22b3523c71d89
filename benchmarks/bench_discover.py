"""Wall time and peak memory of ``p0-circuits discover`` (default: smollm2-135m, 8 x 64 tokens).

Runs the command in a child process (the model cache should be warm: run once before timing)
and reads the child's peak resident set size from ``resource.getrusage(RUSAGE_CHILDREN)``.
The last line printed is one JSON object: ``wall_s``, ``peak_rss_mb``, the targets and the
command's own per-stage timings (from patching.json).

    python benchmarks/bench_discover.py [--model smollm2-135m] [--out DIR] [extra discover args]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=None)
    args, extra = parser.parse_known_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-discover-"))
    cmd = [
        sys.executable,
        "-m",
        "circuits",
        "discover",
        "--model",
        args.model,
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux
    record = json.loads((out / "patching.json").read_text())
    result = {
        "model": args.model,
        "command": " ".join(cmd[1:]),
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "target_wall_s": 120,
        "target_peak_rss_mb": 3072,
        "stage_timings_s": record["timings_s"],
        "n_prompts": record["n_prompts"],
        "n_tokens": record["n_tokens"],
        "out": str(out),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
