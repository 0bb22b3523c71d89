"""Offline training text: a corpus built from files every Python install has, with its own BPE.
Nothing here needs the network.

The real-text data source (``TrainConfig.data = "stdlib"``):

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

The synthetic tasks are in ``circuits.training.tasks``. Every source returns ``int64`` token
batches ``[batch, n_ctx]`` that are pure functions of ``(seed, step)`` (``batch_generator``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from circuits.core.atomic import atomic_path, write_json
from circuits.core.cache import cache_lock, cache_root
from circuits.core.errors import ChecksumError, UsageError
from circuits.core.manifest import verify_folder, write_manifest

ENDOFTEXT = "<|endoftext|>"
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "idlelib", "turtledemo", "lib2to3"}
MAX_TEXT_CHARS = 12_000_000


def prepend_bos(rows: Int[Tensor, "batch body"], bos_token_id: int) -> Int[Tensor, "batch n_ctx"]:
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
    found: list[Path] = []
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
    text = stdlib_text(max_chars)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    folder = cache_root() / "corpus" / f"{sha[:16]}-v{vocab_size}"
    tok_path, arr_path, meta_path = (
        folder / "tokenizer.json",
        folder / "tokens.npy",
        folder / "meta.json",
    )
    if _intact(folder):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
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
    write_manifest(folder)
    return folder


def _intact(folder: Path | None) -> bool:
    """Whether a cached corpus folder holds every file, unchanged since it was written; a damaged
    one is reported and rebuilt (its tokens would otherwise change every run silently)."""
    if folder is None or not folder.is_dir():
        return False
    try:
        verify_folder(folder)
        return True
    except ChecksumError as err:
        warnings.warn(f"{err}; rebuilding the corpus cache", stacklevel=3)
        return False


def load_text_corpus(vocab_size: int = 2048, max_chars: int = MAX_TEXT_CHARS) -> TextCorpus:
    """Build (or load from the cache) the stdlib-documentation corpus and its BPE tokens."""
    if not 300 <= vocab_size <= 65535:
        raise UsageError(
            f"vocab_size must be in [300, 65535] for the stdlib corpus, got {vocab_size}"
        )
    index_path = (
        cache_root() / "corpus" / f"index-{_fingerprint(max_chars)[:24]}-v{vocab_size}.json"
    )
    with cache_lock("corpus"):
        folder = Path(json.loads(index_path.read_text())["folder"]) if index_path.exists() else None
        if not _intact(folder):
            folder = _build_text_cache(vocab_size, max_chars)
            write_json(index_path, {"folder": str(folder)})
    assert folder is not None
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
        out = prepend_bos(out, corpus.bos_token_id)
    return out
