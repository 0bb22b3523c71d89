"""Helpers shared by the training tests (unit) and the kill test (e2e)."""

from __future__ import annotations

import torch

from circuits.training.config import TrainConfig


def state_of(run_dir):
    return torch.load(sorted((run_dir / "state").glob("state_*.pt"))[-1], weights_only=True)


def assert_same_state(a, b):
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k
    assert a["losses"] == b["losses"]


def tiny_trigger_args(*, steps: int, checkpoints: int, save_every: int) -> list[str]:
    """`p0-circuits train` flags for a 2-layer, width-16 model on the trigger task (seconds to run)."""
    return [
        "--data",
        "trigger",
        "--layers",
        "2",
        "--width",
        "16",
        "--heads",
        "2",
        "--context",
        "16",
        "--batch-size",
        "4",
        "--steps",
        str(steps),
        "--checkpoints",
        str(checkpoints),
        "--save-every",
        str(save_every),
    ]


TINY = dict(
    n_layers=2,
    d_model=16,
    n_heads=2,
    n_ctx=16,
    data="trigger",
    batch_size=4,
    steps=12,
    lr=3e-3,
    warmup=3,
    n_checkpoints=4,
    save_every=5,
    task={"n_plain": 24, "n_triggers": 2, "trigger_prob": 0.2},
)


def tiny_config(**kw) -> TrainConfig:
    """A 2-layer, width-16 run on the trigger task (a second of CPU); override any field."""
    return TrainConfig(**{**TINY, **kw})
