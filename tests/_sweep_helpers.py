"""The sweep tests' run and grid (tests/e2e/test_sweep.py, tests/e2e/test_sweep_slurm.py): a
2-layer Bigram-Backcopy run with BOS and checkpoints at steps 0, 1, 5, 30, its prompts as token
ids, and a spec of 6 discover jobs (3 checkpoints x shift / mean)."""

from __future__ import annotations

from pathlib import Path

from circuits.cli import main


def train_sweep_run(root: Path) -> Path:
    """Train the run into ``root/run`` and write ``root/ids.txt`` (12 prompts); ``root``."""
    args = ["train", "--data", "bigram-backcopy", "--layers", "2", "--width", "32",
            "--heads", "1", "--norm", "ln", "--positional", "learned", "--mlp", "relu",
            "--context", "16", "--batch-size", "8", "--steps", "30", "--checkpoints", "3",
            "--bos", "--out", str(root / "run"), "--quiet"]  # fmt: skip
    assert main(args) == 0
    lines = [" ".join(str((7 * i + 3 * j) % 60 + 1) for j in range(20)) for i in range(12)]
    (root / "ids.txt").write_text("\n".join(lines) + "\n")
    return root


def write_grid_spec(root: Path, name: str, extra: str = "") -> Path:
    """The 6-job spec over the run, as ``root/name`` (``extra``: more TOML before [discover])."""
    path = root / name
    path.write_text(
        'commands = ["discover"]\nmodels = ["run"]\ncheckpoints = [1, 5, 30]\n'
        'counterfactuals = ["shift", "mean"]\n'
        '[[prompts]]\nn_prompts = 2\nn_tokens = 12\ntext = "ids.txt"\n'
        + extra
        + "[discover]\nfirst_receiver = 1\n"
    )
    return path
