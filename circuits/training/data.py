"""The batches of a run: a pure function of (config, step), for the text corpus and the tasks."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from jaxtyping import Int
from torch import Tensor

from circuits.training.config import TrainConfig
from circuits.training.corpus import load_text_corpus, text_batch
from circuits.training.tasks import TASKS, make_task


class DataSource:
    """The batches of a run: ``source.batch(step)`` is a pure function of (config, step)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        if config.data in TASKS:
            self.task = make_task(config.data, config.task)
            self.corpus = None
            self.vocab_size = self.task.vocab_size
            self.bos_token_id = self.task.bos_token_id
            self.data_id = f"{config.data}:{json.dumps(asdict(self.task), sort_keys=True)}"
            if hasattr(self.task, "table_sha256"):  # a random table: name its bytes too
                self.data_id += f":table-sha256={self.task.table_sha256[:16]}"
            if hasattr(self.task, "fingerprint"):  # a token file: name its bytes too
                self.data_id += f":file={self.task.fingerprint}"
        else:
            self.task = None
            self.corpus = load_text_corpus(config.vocab_size)
            self.vocab_size = config.vocab_size
            self.bos_token_id = self.corpus.bos_token_id
            self.data_id = f"stdlib:{self.corpus.text_sha256}"

    def batch(
        self, step: int, *, seed: int | None = None, batch_size: int | None = None
    ) -> Int[Tensor, "batch pos"]:
        c = self.config
        kw: dict[str, Any] = dict(
            batch_size=batch_size or c.batch_size,
            n_ctx=c.n_ctx,
            bos=c.bos,
            seed=c.seed if seed is None else seed,
            step=step,
        )
        if self.task is not None:
            return self.task.batch(**kw)
        assert self.corpus is not None
        return text_batch(self.corpus, **kw)

    def eval_batch(self, batch_size: int = 32) -> Int[Tensor, "batch pos"]:
        """A fixed held-out-style batch (its own seed stream), shared by every checkpoint's trace."""
        return self.batch(0, seed=10_000_019 + self.config.seed, batch_size=batch_size)
