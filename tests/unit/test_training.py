"""Training runs: exact resume, corrupted-checkpoint fallback, weights_only files, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from _training_helpers import assert_same_state, state_of, tiny_config, tiny_trigger_args

from circuits.core.errors import UsageError
from circuits.training.checkpoints import list_checkpoints, load_run_model
from circuits.training.config import TrainConfig
from circuits.training.loop import train
from circuits.training.model import build_model, checkpoint_steps, lr_at
from circuits.zoo.load import load_model


def test_checkpoint_steps_are_log_spaced():
    steps = checkpoint_steps(1000, 8)
    assert steps[0] == 0 and steps[-1] == 1000 and steps == sorted(set(steps))
    gaps = [b / a for a, b in zip(steps[1:-1], steps[2:], strict=False)]
    assert all(g > 1.5 for g in gaps)  # geometric, not linear
    assert checkpoint_steps(1, 5) == [0, 1]


def test_lr_schedule():
    cfg = tiny_config(steps=100, warmup=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(1e-4)
    assert lr_at(cfg, 9) == pytest.approx(1e-3)
    assert lr_at(cfg, 100) == pytest.approx(1e-4)


def test_resume_is_bitwise_identical(tmp_path):
    cfg = tiny_config()
    full = train(cfg, tmp_path / "full", progress=False)
    part = train(cfg, tmp_path / "part", progress=False, stop_at=7)  # "killed" after step 7
    assert part.step == 7
    resumed = train(cfg, tmp_path / "part", progress=False)
    assert resumed.resumed_from == 7 and resumed.step == 12
    assert_same_state(state_of(tmp_path / "full"), state_of(tmp_path / "part"))
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k])
    # the log-spaced weight checkpoints are the same files' contents too
    a, b = list_checkpoints(tmp_path / "full"), list_checkpoints(tmp_path / "part")
    assert [s for s, _ in a] == [s for s, _ in b] == checkpoint_steps(12, 4)
    for (_, pa), (_, pb) in zip(a, b, strict=True):
        wa, wb = (
            torch.load(pa, weights_only=True)["model"],
            torch.load(pb, weights_only=True)["model"],
        )
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_corrupted_last_checkpoint_falls_back_with_warning(tmp_path):
    cfg = tiny_config()
    train(cfg, tmp_path / "full", progress=False)
    run = tmp_path / "run"
    train(cfg, run, progress=False, stop_at=7)
    states = sorted((run / "state").glob("state_*.pt"))
    assert [p.name for p in states] == ["state_0000005.pt", "state_0000007.pt"]
    data = states[-1].read_bytes()
    states[-1].write_bytes(data[: len(data) // 2])  # a torn write, as a crash could leave
    with pytest.warns(UserWarning, match="state_0000007.pt is damaged"):
        resumed = train(cfg, run, progress=False)
    assert resumed.resumed_from == 5
    assert (run / "state" / "state_0000007.pt.corrupt").exists()  # set aside, not reused
    assert_same_state(state_of(tmp_path / "full"), state_of(run))


def test_a_silently_changed_state_is_caught_by_its_checksum(tmp_path):
    """One flipped byte inside a weight still unpickles fine; only the checksum can tell."""
    cfg = tiny_config()
    run = tmp_path / "run"
    train(cfg, run, progress=False, stop_at=7)
    last = sorted((run / "state").glob("state_*.pt"))[-1]
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0x01
    last.write_bytes(bytes(data))
    torch.load(last, weights_only=True)  # still loads: a wrong number, silently
    with pytest.warns(UserWarning, match="does not match the checksum"):
        resumed = train(cfg, run, progress=False, stop_at=8)
    assert resumed.resumed_from == 5


def test_files_load_weights_only_and_nothing_is_half_written(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(), run, progress=False)
    files = [p for p in run.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".") or p.suffix == ".tmp"]
    for p in files:
        if p.suffix == ".pt":
            torch.load(p, weights_only=True)  # raises on any pickled object
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"] == tiny_config().to_dict()
    assert json.loads((run / "metrics.json").read_text())["step"] == 12
    assert len(list((run / "state").glob("*.pt"))) == 2  # only the newest two full states


def test_config_mismatch_refuses_to_resume(tmp_path):
    train(tiny_config(steps=3), tmp_path, progress=False)
    with pytest.raises(UsageError, match="different config"):
        train(tiny_config(steps=3, lr=1e-2), tmp_path, progress=False)


def test_config_validation_and_files(tmp_path):
    with pytest.raises(UsageError):
        tiny_config(d_model=15)
    with pytest.raises(UsageError):
        tiny_config(norm="batch")
    with pytest.raises(UsageError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"layers": 3})
    path = tmp_path / "c.toml"
    path.write_text('n_layers = 3\npositional = "learned"\nbos = true\n')
    cfg = TrainConfig.from_file(path)
    assert (cfg.n_layers, cfg.positional, cfg.bos) == (3, "learned", True)
    bad = tmp_path / "c.json"
    bad.write_text("{nope")
    with pytest.raises(UsageError, match="not valid"):
        TrainConfig.from_file(bad)


@pytest.mark.parametrize(
    "norm,positional,mlp", [("rms", "rotary", "gated-silu"), ("ln", "learned", "gelu")]
)
def test_architectures_build(norm, positional, mlp):
    cfg = tiny_config(norm=norm, positional=positional, mlp=mlp)
    model = build_model(cfg, 27)
    assert model.cfg.positional_embedding_type == (
        "rotary" if positional == "rotary" else "standard"
    )
    assert model.cfg.gated_mlp == (mlp == "gated-silu")
    out = model(torch.zeros(2, 16, dtype=torch.long))
    assert out.shape == (2, 16, 27)


def test_a_run_folder_is_a_zoo_model(tmp_path):
    train(tiny_config(bos=True), tmp_path, progress=False)
    zm = load_model(str(tmp_path), progress=False)  # the zoo's loader for run directories
    assert zm.natural_bos is True and zm.bos_token_id == 26
    ids = zm.encode("3 T1 5", bos=True)
    assert ids.tolist() == [[26, 3, 25, 5]]
    assert zm.str_tokens(ids) == ["<bos>", "3", "T1", "5"]
    last, _, _ = load_run_model(tmp_path)
    assert torch.equal(last.W_E, zm.model.W_E)
    model, _, _ = load_run_model(tmp_path, step=0)
    assert not torch.equal(model.W_E, zm.model.W_E)  # step 0 is the init, the default the last
    with pytest.raises(UsageError, match="no checkpoint at step"):
        load_run_model(tmp_path, step=4)


def test_cli_train_and_resume(tmp_path, capsys):
    from circuits.cli import main

    out = tmp_path / "run"
    args = [
        "train",
        *tiny_trigger_args(steps=10, checkpoints=3, save_every=4),
        "--out",
        str(out),
        "--quiet",
    ]
    assert main([*args, "--stop-at", "6"]) == 0
    assert main(["train", "--out", str(out), "--quiet"]) == 0  # resumes with the saved config
    assert json.loads((out / "metrics.json").read_text())["step"] == 10
    assert main(["train", "--out", str(out), "--width", "15", "--quiet"]) == 2
    assert "divisible" in capsys.readouterr().err
