"""Killing ``measure`` and ``discover`` while they write: no half-written output folder, ever.

SIGINT (Ctrl-C) ends the command cleanly (exit 130) and removes its temporary folder; SIGKILL
cannot be caught, so the temporary folder stays until the next run next to it removes it. In
both cases ``--out`` either does not exist or is complete (its manifest verifies).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circuits.core.manifest import verify_folder

ARGV = {
    "measure": ["measure", "--model", "tiny", "--max-tokens", "24", "--quiet"],
    "discover": [
        "discover",
        "--model",
        "tiny",
        "--n-prompts",
        "2",
        "--n-tokens",
        "12",
        "--first-receiver",
        "1",
        "--quiet",
    ],
}


def _start(command: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "circuits", *ARGV[command], "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until_writing(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(p.is_file() for p in out.parent.glob(f".{out.name}.partial-*/*")):
            return
        time.sleep(0.005)
    pytest.fail(f"the command never started writing (exit {proc.poll()})")


@pytest.mark.parametrize("command", ["measure", "discover"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_kill_while_writing_leaves_no_output(command, sig, tmp_path):
    out = tmp_path / "out"
    proc = _start(command, out)
    _wait_until_writing(out, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # it finished first: then the folder must be whole
        verify_folder(out)
        return
    assert not out.exists(), "a killed run left a half-written output folder"
    partials = list(tmp_path.glob(".out.partial-*"))
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err
        assert not partials, "Ctrl-C left its temporary folder"
    else:
        assert proc.returncode == -signal.SIGKILL
        # the next run removes what the killed one left, and writes a whole folder
        rerun = _start(command, out)
        assert rerun.wait(timeout=300) == 0
        verify_folder(out)
        assert not list(tmp_path.glob(".out.partial-*"))
