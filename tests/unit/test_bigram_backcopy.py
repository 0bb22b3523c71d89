"""The Bigram-Backcopy task (Guo et al. 2024), the ReLU MLP and the P0-zero control: rules
checked on generated batches, and the control checked on the model's own outputs."""

from __future__ import annotations

import pytest
import torch

from circuits.core.errors import UsageError
from circuits.training.config import TrainConfig
from circuits.training.data import DataSource
from circuits.training.model import build_model
from circuits.training.tasks import BigramBackcopyTask, make_task


@pytest.fixture(scope="module")
def task():
    return BigramBackcopyTask(n_plain=16, n_triggers=3, task_seed=7)


def test_table_triggers_and_stationary_distribution(task):
    bigram = task.bigram
    assert bigram.shape == (16, 16)
    assert torch.allclose(bigram.sum(dim=1), torch.ones(16, dtype=torch.float64))
    pi = task.stationary
    assert torch.allclose(pi @ bigram, pi, atol=1e-12)  # a fixed point of the chain
    top = sorted(int(i) for i in torch.argsort(pi, descending=True)[:3])
    assert task.triggers.tolist() == top  # the most frequent tokens
    again = BigramBackcopyTask(n_plain=16, n_triggers=3, task_seed=7)
    assert torch.equal(again.bigram, bigram) and again.table_sha256 == task.table_sha256
    other = BigramBackcopyTask(n_plain=16, n_triggers=3, task_seed=8)
    assert other.table_sha256 != task.table_sha256


def test_sequences_follow_the_backcopy_rule(task):
    batch = task.batch(batch_size=256, n_ctx=48, bos=True, seed=0, step=3)
    assert batch.shape == (256, 48) and batch.dtype == torch.int64
    assert (batch[:, 0] == task.bos_token_id).all()
    body = batch[:, 1:]
    assert (body < task.n_plain).all()
    is_trigger = torch.isin(body, task.triggers)
    assert not is_trigger[:, 0].any()  # the first token is never a trigger
    after = is_trigger[:, 1:-1]  # a trigger at t (t >= 1): token t+1 copies token t-1
    assert after.sum() > 100
    assert torch.equal(body[:, 2:][after], body[:, :-2][after])
    # elsewhere the bigram table: empirical transitions from non-trigger tokens match it
    prev, nxt = body[:, :-1][~is_trigger[:, :-1]], body[:, 1:][~is_trigger[:, :-1]]
    counts = torch.zeros(16, 16, dtype=torch.float64)
    counts.index_put_((prev, nxt), torch.ones_like(prev, dtype=torch.float64), accumulate=True)
    rows = counts.sum(dim=1) > 400
    empirical = counts[rows] / counts[rows].sum(dim=1, keepdim=True)
    assert (empirical - task.bigram[rows]).abs().max() < 0.08
    # keyed by (seed, step): the same batch again, another for another step
    assert torch.equal(task.batch(batch_size=256, n_ctx=48, bos=True, seed=0, step=3), batch)
    assert not torch.equal(task.batch(batch_size=256, n_ctx=48, bos=True, seed=0, step=4), batch)
    no_bos = task.batch(batch_size=8, n_ctx=48, bos=False, seed=0, step=3)
    assert no_bos.shape == (8, 48) and (no_bos < task.n_plain).all()


def test_task_options_are_checked():
    with pytest.raises(UsageError, match="n_triggers"):
        make_task("bigram-backcopy", {"n_plain": 8, "n_triggers": 7})
    with pytest.raises(UsageError, match="concentration"):
        make_task("bigram-backcopy", {"concentration": 0})
    with pytest.raises(UsageError, match="unknown"):
        make_task("bigram-backcopy", {"branching": 2})


def test_data_id_names_the_table():
    config = TrainConfig(data="bigram-backcopy", n_layers=1, d_model=16, n_heads=1, n_ctx=16)
    source = DataSource(config)
    assert "table-sha256=" + source.task.table_sha256[:16] in source.data_id


def _config(**kw) -> TrainConfig:
    base = dict(
        data="bigram-backcopy",
        task={"n_plain": 16},
        n_layers=2,
        d_model=16,
        n_heads=1,
        n_ctx=12,
        norm="ln",
        positional="learned",
        mlp="relu",
        steps=4,
        batch_size=4,
    )
    return TrainConfig(**{**base, **kw})


def test_relu_mlp_is_a_plain_relu_mlp():
    model = build_model(_config(), 17)
    assert model.cfg.act_fn == "relu" and not model.cfg.gated_mlp
    x = torch.randn(1, 3, 16)
    mlp = model.blocks[0].mlp
    want = torch.relu(x @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out
    assert torch.allclose(mlp(x), want, atol=1e-6)


def test_zero_p0_embedding_makes_the_first_token_irrelevant():
    """With the control on, the model's output cannot depend on which token is at P0 (its
    token embedding is zeroed; its position embedding stays); without it, it does."""
    tokens = torch.tensor([[3, 5, 7, 9, 2, 4]])
    swapped = tokens.clone()
    swapped[0, 0] = 11
    on = build_model(_config(zero_p0_embedding=True), 17)
    off = build_model(_config(zero_p0_embedding=False), 17)
    with torch.no_grad():
        assert torch.equal(on(tokens), on(swapped))
        assert not torch.allclose(off(tokens), off(swapped))
        on.reset_hooks()  # a permanent hook: survives what patching code does between runs
        assert torch.equal(on(tokens), on(swapped))
        _, cache = on.run_with_cache(tokens)
    assert torch.equal(cache["hook_embed"][0, 0], torch.zeros(16))
    assert torch.equal(cache["hook_pos_embed"][0, 0], on.W_pos[0])


def test_zero_p0_embedding_survives_training_and_reloading(tmp_path):
    from circuits.training.checkpoints import load_run_model
    from circuits.training.loop import train

    config = _config(zero_p0_embedding=True, steps=3, n_checkpoints=2)
    train(config, tmp_path / "run", progress=False)
    model, loaded, _ = load_run_model(tmp_path / "run")
    assert loaded.zero_p0_embedding
    tokens = torch.tensor([[3, 5, 7, 9, 2, 4]])
    swapped = tokens.clone()
    swapped[0, 0] = 12
    with torch.no_grad():
        assert torch.equal(model(tokens), model(swapped))
