"""``discover --max-memory``: stacked batches sized to a budget, the same numbers."""

from __future__ import annotations

import json

import pytest

from circuits.cli import main
from circuits.core.errors import UsageError
from circuits.patching.memory import fixed_bytes, row_bytes, rows_within
from circuits.zoo import tiny_model


def test_rows_grow_with_the_budget_and_are_whole_patches():
    model = tiny_model()
    small = rows_within(model, 4, 32, 0.01)
    large = rows_within(model, 4, 32, 1.0)
    assert small % 4 == 0 and large % 4 == 0 and 4 <= small < large
    # the estimate is the documented formula: weights + caches + rows x per-row bytes
    per_row = row_bytes(model.cfg, 32)
    assert fixed_bytes(model, 4, 32) + small * per_row <= 0.01 * 1024**3
    assert fixed_bytes(model, 4, 32) + (small + 4) * per_row > 0.01 * 1024**3


def test_a_budget_below_one_patch_is_refused_with_the_need():
    with pytest.raises(UsageError, match=r"cannot hold the model.*about [0-9.]+ GB"):
        rows_within(tiny_model(), 4, 32, 0.0001)


def test_discover_within_a_budget_finds_the_same_numbers(tmp_path):
    common = ["discover", "--model", "tiny", "--n-prompts", "2", "--n-tokens", "16",
              "--first-receiver", "1", "--quiet"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--max-memory", "0.004", "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a/patching.json").read_text())
    b = json.loads((tmp_path / "b/patching.json").read_text())
    assert b["config"]["max_rows"] < a["config"]["max_rows"]  # the budget did bind
    for key in ("clean", "components", "faithfulness", "circuit", "verdict"):
        assert json.dumps(a[key]) == json.dumps(b[key]) or _close(a[key], b[key]), key


def _close(x, y) -> bool:
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return len(x) == len(y) and all(_close(u, v) for u, v in zip(x, y, strict=True))
    if isinstance(x, float):
        return abs(x - y) <= 1e-6 * max(1.0, abs(x))
    return x == y


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(),
    reason="no GPU on this machine: --device cuda is exercised wherever torch sees one",
)
def test_discover_on_a_gpu_finds_the_cpu_numbers(tmp_path):
    common = ["discover", "--model", "tiny", "--n-prompts", "2", "--n-tokens", "16",
              "--first-receiver", "1", "--quiet"]  # fmt: skip
    assert main([*common, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    assert (
        main([*common, "--device", "cuda", "--max-memory", "2", "--out", str(tmp_path / "gpu")])
        == 0
    )
    a = json.loads((tmp_path / "cpu/patching.json").read_text())
    b = json.loads((tmp_path / "gpu/patching.json").read_text())
    assert a["circuit"] == b["circuit"]
    for x, y in zip(a["components"]["effects"], b["components"]["effects"], strict=True):
        assert y["value"] == pytest.approx(x["value"], abs=1e-5)


_FREED_RSS = """
import resource, sys, torch
from circuits.patching import allocator

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

allocator.keep_freed_memory()  # what discover and the panel do
if sys.argv[1] == "bounded":
    allocator.bound_memory()  # what --max-memory does
before = rss_mb()
for _ in range(3):
    x = torch.ones(64 * 2**20 // 4)  # 64 MB, above glibc's default mmap threshold
    del x
print(rss_mb() - before)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc, /proc")
def test_a_memory_budget_hands_freed_activations_back_to_the_kernel():
    """The allocator tuning keeps freed blocks (RSS stays up), which broke the budget on the
    1B-shape model; after bound_memory() a freed 64 MB block leaves the process."""
    import subprocess
    import sys

    def kept_mb(mode: str) -> float:
        run = subprocess.run([sys.executable, "-c", _FREED_RSS, mode], capture_output=True,
                             text=True, check=True)  # fmt: skip
        return float(run.stdout.strip())

    assert kept_mb("tuned") > 48  # the tuned heap keeps the block
    assert kept_mb("bounded") < 16  # the bounded one returns it
