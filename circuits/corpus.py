"""Offline training data: a text corpus built from files every Python install has, and synthetic
tasks. Nothing here needs the network.

Two kinds of data source (``TrainConfig.data``):

``"stdlib"`` (real text, subword tokens)
    The text is the interpreter's own documentation: ``pydoc_data.topics`` (the language
    reference's help topics) followed by every docstring (module, class, function) of the pure
    Python standard library, read with ``ast`` from the files under ``sysconfig``'s ``stdlib``
    path (tests, ``site-packages``, ``idlelib`` and ``turtledemo`` skipped, files in sorted
    order). Documents are separated by a blank line. The text depends on the Python version: its
    sha256 is recorded in every run (``run.json``) so two runs can tell whether they saw the same
    data.

    Tokenization: a byte-level BPE (Hugging Face ``tokenizers``, the GPT-2 scheme: byte-level
    pre-tokenizer, no normalizer) trained on that text with ``vocab_size`` tokens (default 2048,
    one of them ``<|endoftext|>``, which is the BOS token when a run uses BOS). Training the BPE
    is deterministic; the tokenizer and the token array are cached under
    ``$P0_CIRCUITS_CACHE`` (default ``~/.cache/p0-circuits``)``/corpus/<key>/``, keyed by the
    text's sha256 and the vocabulary size.

    A training batch is ``batch_size`` windows of ``n_ctx`` tokens (``n_ctx - 1`` plus BOS when
    BOS is on) starting at uniformly random offsets of the token array; the offsets are drawn
    from a generator seeded by ``(seed, step)``, so a batch is a pure function of the run's seed
    and the step: this is what makes resuming exact. Position 0 is therefore an arbitrary
    subword inside a document, never a marked start: without BOS, nothing but its position
    distinguishes it.

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

All sources return ``int64`` token batches ``[batch, n_ctx]`` and the same
``(seed, step)``-keyed determinism.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from circuits.errors import UsageError
from circuits.fetch import cache_root

DATA_SOURCES = ("stdlib", "trigger", "induct")
ENDOFTEXT = "<|endoftext|>"
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "idlelib", "turtledemo", "lib2to3"}
MAX_TEXT_CHARS = 12_000_000


def _prepend_bos(rows: Int[Tensor, "batch body"], bos_token_id: int) -> Int[Tensor, "batch n_ctx"]:
    """``rows`` with the BOS token as a new first column (with BOS a batch fills n_ctx - 1 first)."""
    return torch.cat([torch.full((rows.shape[0], 1), bos_token_id), rows], dim=1)


def batch_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A torch generator seeded by ``(seed, step, stream)``: batch ``step`` is reproducible alone."""
    key = hashlib.sha256(f"p0-circuits/{seed}/{step}/{stream}".encode()).digest()
    gen = torch.Generator()
    gen.manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))
    return gen


# ---------------------------------------------------------------------------------------------
# Real text: the standard library's documentation
# ---------------------------------------------------------------------------------------------


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= 40:
                found.append(doc)
    return found


def _stdlib_files() -> list[Path]:
    """The stdlib's .py files in sorted order, skipping tests, site-packages and the like."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        found.extend(Path(root) / f for f in files if f.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(stdlib).parts)


def stdlib_text(max_chars: int = MAX_TEXT_CHARS) -> str:
    """The documentation corpus: pydoc topics, then stdlib docstrings (sorted files), <= max_chars."""
    import pydoc_data.topics

    parts = [pydoc_data.topics.topics[key].strip() for key in sorted(pydoc_data.topics.topics)]
    total = sum(len(p) for p in parts)
    for path in _stdlib_files():
        if total >= max_chars:
            break
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for doc in _docstrings(source):
            parts.append(doc)
            total += len(doc)
    return "\n\n".join(parts)[:max_chars]


def _fingerprint(max_chars: int) -> str:
    """A cheap key for the text (Python version, stdlib file names, sizes and mtimes): lets the
    cache skip re-parsing the stdlib; the text's own sha256 is still what runs record."""
    import pydoc_data.topics

    h = hashlib.sha256(f"{sys.version}|{max_chars}|{len(pydoc_data.topics.topics)}".encode())
    for path in _stdlib_files():
        st = path.stat()
        h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass
class TextCorpus:
    """A tokenized corpus: the BPE tokenizer, the token array and what identifies them."""

    tokens: np.ndarray  # uint16 [n_tokens]
    tokenizer_path: Path  # tokenizer.json
    text_sha256: str
    vocab_size: int
    bos_token_id: int

    def hf_tokenizer(self):
        """A ``transformers`` fast tokenizer over the same BPE (for zoo models and prompts)."""
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_file=str(self.tokenizer_path),
            bos_token=ENDOFTEXT,
            eos_token=ENDOFTEXT,
            unk_token=ENDOFTEXT,
        )


def _train_bpe(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # One document per chunk keeps the trainer's input order fixed.
    chunks = text.split("\n\n")
    tok.train_from_iterator(chunks, trainer=trainer, length=len(chunks))
    return tok


def _build_text_cache(vocab_size: int, max_chars: int) -> Path:
    """Read the text, train the BPE, tokenize; write the cache folder (atomically, file by file)."""
    from circuits.io import atomic_path, write_json

    text = stdlib_text(max_chars)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    folder = cache_root() / "corpus" / f"{sha[:16]}-v{vocab_size}"
    tok_path, arr_path, meta_path = (
        folder / "tokenizer.json",
        folder / "tokens.npy",
        folder / "meta.json",
    )
    if tok_path.exists() and arr_path.exists() and meta_path.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tok = _train_bpe(text, vocab_size)
    ids: list[int] = []
    for doc in text.split("\n\n"):
        ids.extend(tok.encode(doc + "\n\n").ids)
    arr = np.asarray(ids, dtype=np.uint16)
    with atomic_path(tok_path) as tmp:
        tok.save(str(tmp))
    with atomic_path(arr_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
    write_json(
        meta_path,
        {
            "text_sha256": sha,
            "vocab_size": vocab_size,
            "n_chars": len(text),
            "n_tokens": int(arr.size),
            "bos_token_id": tok.token_to_id(ENDOFTEXT),
            "python": sys.version.split()[0],
        },
    )
    return folder


def load_text_corpus(vocab_size: int = 2048, max_chars: int = MAX_TEXT_CHARS) -> TextCorpus:
    """Build (or load from the cache) the stdlib-documentation corpus and its BPE tokens."""
    if not 300 <= vocab_size <= 65535:
        raise UsageError(
            f"vocab_size must be in [300, 65535] for the stdlib corpus, got {vocab_size}"
        )
    index_path = (
        cache_root() / "corpus" / f"index-{_fingerprint(max_chars)[:24]}-v{vocab_size}.json"
    )
    if index_path.exists():
        folder = Path(json.loads(index_path.read_text())["folder"])
    else:
        folder = None
    if folder is None or not all(
        (folder / n).exists() for n in ("tokenizer.json", "tokens.npy", "meta.json")
    ):
        folder = _build_text_cache(vocab_size, max_chars)
        from circuits.io import write_json

        write_json(index_path, {"folder": str(folder)})
    tok_path, arr_path = folder / "tokenizer.json", folder / "tokens.npy"
    meta = json.loads((folder / "meta.json").read_text())
    sha = meta["text_sha256"]
    tokens = np.load(arr_path)
    return TextCorpus(
        tokens=tokens,
        tokenizer_path=tok_path,
        text_sha256=sha,
        vocab_size=vocab_size,
        bos_token_id=int(meta["bos_token_id"]),
    )


def text_batch(
    corpus: TextCorpus, *, batch_size: int, n_ctx: int, bos: bool, seed: int, step: int
) -> Int[Tensor, "batch n_ctx"]:
    """Batch ``step`` of a run: random windows of the corpus, BOS prepended when ``bos``."""
    body = n_ctx - 1 if bos else n_ctx
    gen = batch_generator(seed, step)
    high = corpus.tokens.size - body
    starts = torch.randint(0, high, (batch_size,), generator=gen).numpy()
    rows = np.stack([corpus.tokens[s : s + body] for s in starts]).astype(np.int64)
    out = torch.from_numpy(rows)
    if bos:
        out = _prepend_bos(out, corpus.bos_token_id)
    return out


# ---------------------------------------------------------------------------------------------
# Synthetic: trigger recall over a bigram chain
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TriggerTask:
    """The ``"trigger"`` task (see the module docstring). ``vocab_size = n_plain + n_triggers + 1``."""

    n_plain: int = 256
    n_triggers: int = 4
    branching: int = 2
    trigger_prob: float = 0.08
    task_seed: int = 1234

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
            out = _prepend_bos(out, self.bos_token_id)
        return out


@dataclass(frozen=True)
class InductTask:
    """The ``"induct"`` task (see the module docstring). ``vocab_size = n_plain + 1``."""

    n_plain: int = 512
    n_repeats: int = 2
    min_len: int = 6
    max_len: int = 12

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
            out = _prepend_bos(out, self.bos_token_id)
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
