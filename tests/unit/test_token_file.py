"""The ``token-file`` data source (a pre-tokenized corpus, memory-mapped) and gradient
accumulation (``micro_batch_size``): the GPU recipe's two pieces, checked on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuits.core.errors import UsageError
from circuits.training.config import TrainConfig
from circuits.training.data import DataSource
from circuits.training.tasks import make_task


@pytest.fixture
def token_bin(tmp_path):
    ids = (np.arange(5000) * 7 % 97).astype("<u2")
    path = tmp_path / "tokens.bin"
    ids.tofile(path)
    return path, ids


def test_windows_come_from_the_file(token_bin):
    path, ids = token_bin
    task = make_task("token-file", {"path": str(path), "vocab_size": 100, "bos_token_id": 99})
    batch = task.batch(batch_size=6, n_ctx=10, bos=True, seed=1, step=5)
    assert batch.shape == (6, 10) and (batch[:, 0] == 99).all()
    text = ids.astype(np.int64).tobytes()
    for row in batch[:, 1:].numpy():  # each window is a contiguous slice of the file
        assert row.astype(np.int64).tobytes() in text
    again = task.batch(batch_size=6, n_ctx=10, bos=True, seed=1, step=5)
    assert torch.equal(batch, again)
    npy = path.with_suffix(".npy")
    np.save(npy, ids.astype(np.uint32))
    same = make_task("token-file", {"path": str(npy), "vocab_size": 100, "bos_token_id": 99})
    assert torch.equal(same.batch(batch_size=6, n_ctx=10, bos=True, seed=1, step=5), batch)


def test_data_id_fingerprints_the_file(token_bin):
    path, _ = token_bin
    task = {"path": str(path), "vocab_size": 100, "bos_token_id": 0}
    config = TrainConfig(data="token-file", task=task, n_layers=1, d_model=16, n_heads=1, n_ctx=8)
    data_id = DataSource(config).data_id
    assert f"file={path.stat().st_size}:" in data_id


def test_bad_token_files(token_bin, tmp_path):
    path, _ = token_bin
    with pytest.raises(UsageError, match="does not exist"):
        make_task("token-file", {"path": str(tmp_path / "missing.bin")})
    with pytest.raises(UsageError, match="needs a path"):
        make_task("token-file", {})
    small_vocab = make_task("token-file", {"path": str(path), "vocab_size": 50, "bos_token_id": 0})
    with pytest.raises(UsageError, match="not below vocab_size"):
        small_vocab.batch(batch_size=32, n_ctx=16, bos=False, seed=0, step=0)
    signed = tmp_path / "signed.npy"
    np.save(signed, np.arange(10, dtype=np.int64))
    with pytest.raises(UsageError, match="unsigned"):
        make_task("token-file", {"path": str(signed), "vocab_size": 100})


def test_micro_batches_give_the_same_step(tmp_path):
    """One AdamW step on 8 sequences, whole or in slices of 3 (3 + 3 + 2): same weights."""
    from circuits.training.loop import _Run

    config = dict(
        data="bigram-backcopy",
        task={"n_plain": 16},
        n_layers=2,
        d_model=16,
        n_heads=2,
        n_ctx=12,
        batch_size=8,
        steps=2,
        warmup=0,
    )
    tokens = DataSource(TrainConfig(**config)).batch(0)
    runs = []
    for micro in (None, 3):
        run = _Run(TrainConfig(**config, micro_batch_size=micro), tmp_path, 17, torch.device("cpu"))
        loss = run.train_step(tokens)
        runs.append((run, loss))
    (whole, loss_whole), (sliced, loss_sliced) = runs
    assert loss_sliced == pytest.approx(loss_whole, rel=1e-6)
    for (name, a), (_, b) in zip(
        whole.model.named_parameters(), sliced.model.named_parameters(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(UsageError, match="micro_batch_size"):
        TrainConfig(**config, micro_batch_size=9)


def test_the_committed_gpu_recipe_is_gu_et_al_60m_model(token_bin):
    """results/emergence/gpu_recipe/gu60m_nobos.toml loads as a valid config (with a token file)
    and builds Gu et al.'s 60M LLaMA: ~59M non-embedding parameters (TransformerLens' count),
    ~1M tokens per step, constant lr after warmup, no BOS."""
    from pathlib import Path

    from circuits.training.config import TrainConfig
    from circuits.training.model import hooked_config, lr_at

    recipe = Path(__file__).parents[2] / "results" / "emergence" / "gpu_recipe" / "gu60m_nobos.toml"
    import tomllib

    data = tomllib.loads(recipe.read_text())
    assert data["task"] == {
        "path": "/data/pile_5B_neox.bin",
        "vocab_size": 50432,
        "bos_token_id": 0,
    }
    data["task"]["path"] = str(token_bin[0])  # the placeholder, replaced by a real file
    config = TrainConfig.from_dict(data)
    cfg = hooked_config(config, config.vocab_size)
    assert 58e6 < cfg.n_params < 61e6, cfg.n_params
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp) == (10, 768, 8, 1536)
    assert config.batch_size * config.n_ctx == 512 * 2048 and not config.bos
    assert lr_at(config, 150) == lr_at(config, config.steps - 1) == config.lr == 4e-4
