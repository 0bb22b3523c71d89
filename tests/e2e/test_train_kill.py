"""A real SIGKILL of ``p0-circuits train``, then a resume: bitwise equal to a run straight through."""

from __future__ import annotations

from _training_helpers import assert_same_state, state_of, tiny_trigger_args


def test_a_real_kill_then_resume_matches_an_uninterrupted_run(tmp_path):
    """SIGKILL a `p0-circuits train` process mid-run, resume it, compare with one run straight."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [
        *tiny_trigger_args(steps=120, checkpoints=4, save_every=10),
        "--threads",
        "1",
        "--quiet",
    ]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "circuits", "train", *args, "--out", str(killed)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "state").glob("state_00000[2-9]0.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list((killed / "state").glob("*.pt")), "the run was killed before its first state file"
    assert subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode == 0
    straight = tmp_path / "straight"
    cmd_straight = [sys.executable, "-m", "circuits", "train", *args, "--out", str(straight)]
    assert subprocess.run(cmd_straight, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode == 0
    assert_same_state(state_of(straight), state_of(killed))
    assert not [p for p in killed.rglob("*") if p.name.startswith(".")]
