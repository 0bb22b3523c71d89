"""Offline corpora: deterministic batches, the trigger task's rule, a deterministic BPE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuits.training.corpus import TextCorpus, load_text_corpus, stdlib_text, text_batch
from circuits.training.tasks import TriggerTask


def test_trigger_batches_are_pure_functions_of_seed_and_step():
    task = TriggerTask()
    a = task.batch(batch_size=8, n_ctx=32, bos=False, seed=3, step=17)
    b = task.batch(batch_size=8, n_ctx=32, bos=False, seed=3, step=17)
    c = task.batch(batch_size=8, n_ctx=32, bos=False, seed=3, step=18)
    d = task.batch(batch_size=8, n_ctx=32, bos=False, seed=4, step=17)
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)
    assert a.shape == (8, 32) and a.dtype == torch.int64
    assert int(a.max()) < task.bos_token_id and int(a.min()) >= 0


def test_trigger_bos_and_rule():
    task = TriggerTask(n_plain=32, n_triggers=2, trigger_prob=0.2)
    tokens = task.batch(batch_size=16, n_ctx=64, bos=True, seed=0, step=0)
    assert (tokens[:, 0] == task.bos_token_id).all()
    assert (tokens[:, 1:] != task.bos_token_id).all()
    succ = task.successors()
    checked = 0
    for row in tokens[:, 1:].tolist():
        after: dict[int, int] = {}
        last_plain = row[0]
        for i in range(1, len(row)):
            prev, cur = row[i - 1], row[i]
            if prev >= task.n_plain:  # the token after a trigger: recall, else a bigram step
                if prev in after:
                    assert cur == after[prev]
                    checked += 1
                else:
                    assert cur in succ[last_plain].tolist()
                after[prev] = cur
            elif cur < task.n_plain:
                assert cur in succ[prev].tolist()
            if cur < task.n_plain:
                last_plain = cur
    assert checked > 10


def test_text_batches_are_deterministic_and_take_bos():
    corpus = TextCorpus(
        tokens=np.arange(1000, dtype=np.uint16),
        tokenizer_path=None,
        text_sha256="x",
        vocab_size=1000,
        bos_token_id=0,
    )
    a = text_batch(corpus, batch_size=4, n_ctx=16, bos=True, seed=1, step=5)
    b = text_batch(corpus, batch_size=4, n_ctx=16, bos=True, seed=1, step=5)
    assert torch.equal(a, b) and a.shape == (4, 16)
    assert (a[:, 0] == 0).all()
    assert (a[:, 2:] - a[:, 1:-1] == 1).all()  # contiguous windows of the token array


def test_stdlib_text_is_deterministic():
    a = stdlib_text(max_chars=200_000)
    assert a == stdlib_text(max_chars=200_000)
    assert len(a) == 200_000 and "lambda" in a


def test_bpe_corpus_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("P0_CIRCUITS_CACHE", str(tmp_path / "a"))
    a = load_text_corpus(vocab_size=400, max_chars=150_000)
    monkeypatch.setenv("P0_CIRCUITS_CACHE", str(tmp_path / "b"))
    b = load_text_corpus(vocab_size=400, max_chars=150_000)
    assert a.text_sha256 == b.text_sha256
    assert np.array_equal(a.tokens, b.tokens)
    assert a.tokenizer_path.read_text() == b.tokenizer_path.read_text()
    assert int(a.tokens.max()) < 400
    tok = a.hf_tokenizer()
    text = "Return the absolute value of the argument."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids("<|endoftext|>") == a.bos_token_id
    # the cache is reused, not rebuilt
    c = load_text_corpus(vocab_size=400, max_chars=150_000)
    assert c.tokenizer_path == b.tokenizer_path


def test_bad_vocab_size():
    from circuits.core.errors import UsageError

    with pytest.raises(UsageError):
        load_text_corpus(vocab_size=10)
