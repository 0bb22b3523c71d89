"""Tokenizers the toolkit builds itself (real models bring their own Hugging Face tokenizer)."""

from __future__ import annotations


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0..255) plus one BOS id (256): the tokenizer of tiny models."""

    vocab_size = 257
    bos_token_id = 256
    bos_token = "<bos>"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_str(self, token_id: int) -> str:
        return self.bos_token if token_id == self.bos_token_id else self.decode([token_id])
