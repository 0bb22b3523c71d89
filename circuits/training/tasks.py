"""Synthetic training tasks: sequences in which attention heads must mostly do nothing.

``"trigger"`` (synthetic: heads that must mostly do nothing)
    Vocabulary: ``n_plain`` ordinary tokens, ``n_triggers`` trigger tokens, and ``<bos>`` (the
    last id). Ordinary tokens follow a fixed random bigram chain (each token has ``branching``
    possible successors, chosen once from the task seed), so most next tokens are predictable
    from the current token alone and any attention output there is noise. With probability
    ``trigger_prob`` a position holds a trigger; the token after a trigger is the ordinary token
    that followed the previous occurrence of the same trigger (an induction/recall step), or a
    fresh bigram step if there is none. Heads that do the recall are needed only at trigger
    positions and must "do nothing" everywhere else: the recipe Gu et al. and Guo et al. tie to
    sink formation.

``"induct"`` (synthetic: copy heads that must stay silent off their copies)
    Uniform random tokens over ``n_plain`` ids (so no token is frequent enough to serve as a
    free sink), in which ``n_repeats`` segments of ``min_len``..``max_len`` tokens from earlier in
    the sequence are repeated later. Inside a repeat the next token is predictable by induction;
    everywhere else it is uniform noise (loss ln n_plain), so the copying heads must do nothing
    there, and attending to any ordinary token copies a wrong token. ``<bos>`` is the last id.

``"bigram-backcopy"`` (Guo et al. 2024's Bigram-Backcopy: a copy head dormant off its triggers)
    ``n_plain`` ordinary tokens and ``<bos>`` (the last id). A fixed random bigram table (each
    row a Dirichlet(``concentration``) draw, numpy ``default_rng(task_seed)``) drives the
    sequence; the ``n_triggers`` tokens most frequent under its stationary distribution are the
    *triggers*. The first token is drawn from the stationary distribution without the triggers;
    after a trigger comes a copy of the token *before* the trigger (backcopy); every other token
    follows the bigram table. The copy head has work only right after a trigger and must do
    nothing everywhere else: Guo et al.'s recipe for a dormant head that parks its attention on a
    content-free first token (code: GuoTianYu2000/Active-Dormant-Attention, ``BBM/data.py``
    class ``bbm``; they take the table from Shakespeare's characters, here it is random).

All tasks return ``int64`` token batches ``[batch, n_ctx]`` keyed by ``(seed, step)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.core.errors import UsageError
from circuits.core.schema import check_fields, check_keys, check_range
from circuits.training.corpus import batch_generator, prepend_bos
from circuits.training.token_file import TokenFileTask


@dataclass(frozen=True)
class TriggerTask:
    """The ``"trigger"`` task (see the module docstring). ``vocab_size = n_plain + n_triggers + 1``."""

    n_plain: int = 256
    n_triggers: int = 4
    branching: int = 2
    trigger_prob: float = 0.08
    task_seed: int = 1234

    def __post_init__(self) -> None:
        check_fields(self)
        check_range("n_plain", self.n_plain, 2)
        check_range("n_triggers", self.n_triggers, 1)
        check_range("branching", self.branching, 1, self.n_plain)
        check_range("trigger_prob", self.trigger_prob, 0, 1)
        check_range("task_seed", self.task_seed, 0)

    @property
    def vocab_size(self) -> int:
        return self.n_plain + self.n_triggers + 1

    @property
    def bos_token_id(self) -> int:
        return self.vocab_size - 1

    def successors(self) -> Int[Tensor, "n_plain branching"]:
        gen = torch.Generator().manual_seed(self.task_seed)
        return torch.randint(0, self.n_plain, (self.n_plain, self.branching), generator=gen)

    def batch(
        self, *, batch_size: int, n_ctx: int, bos: bool, seed: int, step: int
    ) -> Int[Tensor, "batch n_ctx"]:
        body = n_ctx - 1 if bos else n_ctx
        gen = batch_generator(seed, step)
        succ = self.successors()
        is_trig = torch.rand(batch_size, body, generator=gen) < self.trigger_prob
        which_trig = torch.randint(0, self.n_triggers, (batch_size, body), generator=gen)
        branch = torch.randint(0, self.branching, (batch_size, body), generator=gen)
        out = torch.empty(batch_size, body, dtype=torch.int64)
        out[:, 0] = torch.randint(0, self.n_plain, (batch_size,), generator=gen)
        is_trig[:, 0] = False
        # last[b, t] = ordinary token that followed the previous occurrence of trigger t (-1: none)
        last = torch.full((batch_size, self.n_triggers), -1, dtype=torch.int64)
        prev_plain = out[:, 0].clone()
        rows = torch.arange(batch_size)
        for pos in range(1, body):
            prev = out[:, pos - 1]
            prev_was_trig = prev >= self.n_plain
            bigram = succ[prev_plain, branch[:, pos]]
            nxt = bigram.clone()
            if prev_was_trig.any():
                t = (prev - self.n_plain).clamp_min(0)
                recalled = last[rows, t]
                use = prev_was_trig & (recalled >= 0)
                nxt = torch.where(use, recalled, nxt)
                # remember what followed this trigger now
                upd = prev_was_trig
                last[rows[upd], t[upd]] = nxt[upd]
            trig_here = is_trig[:, pos] & ~prev_was_trig
            out[:, pos] = torch.where(trig_here, self.n_plain + which_trig[:, pos], nxt)
            prev_plain = torch.where(trig_here, prev_plain, nxt)
        if bos:
            out = prepend_bos(out, self.bos_token_id)
        return out


@dataclass(frozen=True)
class InductTask:
    """The ``"induct"`` task (see the module docstring). ``vocab_size = n_plain + 1``."""

    n_plain: int = 512
    n_repeats: int = 2
    min_len: int = 6
    max_len: int = 12

    def __post_init__(self) -> None:
        check_fields(self)
        check_range("n_plain", self.n_plain, 2)
        check_range("n_repeats", self.n_repeats, 0)
        check_range("min_len", self.min_len, 2)
        check_range("max_len", self.max_len, self.min_len)

    @property
    def vocab_size(self) -> int:
        return self.n_plain + 1

    @property
    def bos_token_id(self) -> int:
        return self.n_plain

    def batch(
        self, *, batch_size: int, n_ctx: int, bos: bool, seed: int, step: int
    ) -> Int[Tensor, "batch n_ctx"]:
        body = n_ctx - 1 if bos else n_ctx
        gen = batch_generator(seed, step)
        out = torch.randint(0, self.n_plain, (batch_size, body), generator=gen)
        for b in range(batch_size):
            for _ in range(self.n_repeats):
                length = int(torch.randint(self.min_len, self.max_len + 1, (1,), generator=gen))
                length = min(length, body // 3)
                if length < 2:
                    continue
                src = int(torch.randint(0, body - 2 * length + 1, (1,), generator=gen))
                dst = int(torch.randint(src + length, body - length + 1, (1,), generator=gen))
                out[b, dst : dst + length] = out[b, src : src + length].clone()
        if bos:
            out = prepend_bos(out, self.bos_token_id)
        return out


@dataclass(frozen=True)
class BigramBackcopyTask:
    """The ``"bigram-backcopy"`` task (see the module docstring). ``vocab_size = n_plain + 1``."""

    n_plain: int = 64
    n_triggers: int = 3
    concentration: float = 0.3
    task_seed: int = 1234

    def __post_init__(self) -> None:
        check_fields(self)
        check_range("n_plain", self.n_plain, 4)
        check_range("n_triggers", self.n_triggers, 1, self.n_plain - 2)
        check_range("concentration", self.concentration, 1e-3)
        check_range("task_seed", self.task_seed, 0)

    @property
    def vocab_size(self) -> int:
        return self.n_plain + 1

    @property
    def bos_token_id(self) -> int:
        return self.n_plain

    @cached_property
    def bigram(self) -> Float[Tensor, "n_plain n_plain"]:
        """The transition table: row x is the distribution of the token after x."""
        rng = np.random.default_rng(self.task_seed)
        table = rng.dirichlet(np.full(self.n_plain, self.concentration), size=self.n_plain)
        return torch.from_numpy(table)

    @cached_property
    def stationary(self) -> Float[Tensor, " n_plain"]:
        """The bigram chain's stationary distribution (power iteration, float64)."""
        dist = torch.full((self.n_plain,), 1.0 / self.n_plain, dtype=torch.float64)
        for _ in range(1000):
            dist = dist @ self.bigram
        return dist / dist.sum()

    @cached_property
    def triggers(self) -> Int[Tensor, " n_triggers"]:
        """The ``n_triggers`` most frequent tokens of the stationary distribution (sorted ids)."""
        return torch.topk(self.stationary, self.n_triggers).indices.sort().values

    @property
    def table_sha256(self) -> str:
        """sha256 of the bigram table's bytes: the data a run saw, recorded in its data id."""
        return hashlib.sha256(self.bigram.numpy().tobytes()).hexdigest()

    def batch(
        self, *, batch_size: int, n_ctx: int, bos: bool, seed: int, step: int
    ) -> Int[Tensor, "batch n_ctx"]:
        body = n_ctx - 1 if bos else n_ctx
        gen = batch_generator(seed, step)
        first = self.stationary.clone()
        first[self.triggers] = 0.0
        is_trigger = torch.zeros(self.n_plain, dtype=torch.bool)
        is_trigger[self.triggers] = True
        out = torch.empty(batch_size, body, dtype=torch.int64)
        out[:, 0] = torch.multinomial(first, batch_size, replacement=True, generator=gen)
        for pos in range(1, body):
            prev = out[:, pos - 1]
            sampled = torch.multinomial(self.bigram[prev], 1, generator=gen)[:, 0]
            if pos >= 2:  # the first token is never a trigger, so a trigger always has a before
                sampled = torch.where(is_trigger[prev], out[:, pos - 2], sampled)
            out[:, pos] = sampled
        if bos:
            out = prepend_bos(out, self.bos_token_id)
        return out


class SyntheticTokenizer:
    """A minimal tokenizer for the synthetic tasks, so zoo code can encode and print tokens.

    A text is whitespace-separated token ids (``"12 7 260"``) or names: ``<bos>`` for the BOS id
    and ``T0``, ``T1``... for the trigger task's triggers. ``decode`` writes them back the same
    way. Called like a Hugging Face tokenizer: ``tok(text, add_special_tokens=False)``.
    """

    def __init__(
        self, vocab_size: int, bos_token_id: int, first_trigger: int | None = None
    ) -> None:
        self.vocab_size = vocab_size
        self.bos_token_id = bos_token_id
        self.first_trigger = first_trigger

    def _id(self, word: str) -> int:
        if word == "<bos>":
            return self.bos_token_id
        if self.first_trigger is not None and word[:1] in "Tt" and word[1:].isdigit():
            idx = self.first_trigger + int(word[1:])
        elif word.isdigit():
            idx = int(word)
        else:
            raise UsageError(f"synthetic-task text takes token ids, T<k> or <bos>; got {word!r}")
        if not 0 <= idx < self.vocab_size:
            raise UsageError(f"token {word!r} is outside the vocabulary of {self.vocab_size}")
        return idx

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [self._id(w) for w in text.split()]}

    def _word(self, idx: int) -> str:
        if idx == self.bos_token_id:
            return "<bos>"
        if self.first_trigger is not None and idx >= self.first_trigger:
            return f"T{idx - self.first_trigger}"
        return str(idx)

    def decode(self, ids) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return " ".join(self._word(int(i)) for i in ids)


TASKS: dict[str, type] = {
    "trigger": TriggerTask,
    "induct": InductTask,
    "bigram-backcopy": BigramBackcopyTask,
    "token-file": TokenFileTask,
}
"""Synthetic data sources by name (``TrainConfig.data``)."""


def make_task(name: str, options: dict[str, Any]):
    """The task ``name`` with ``options``: unknown options, wrong types and ranges refused."""
    cls = TASKS[name]
    check_keys(cls, options)
    return cls(**options)
