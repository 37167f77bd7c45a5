"""Text <-> token ids through a Hugging Face tokenizer.json (optional `tokenizers` package)."""
from __future__ import annotations

from ..errors import UserError


class Tokenizer:
    def __init__(self, tok):
        self.tok = tok

    @classmethod
    def from_json(cls, text: str) -> "Tokenizer":
        try:
            from tokenizers import Tokenizer as HF
        except ImportError:
            raise UserError("text in/out needs the tokenizers package: pip install -e '.[text]'") from None
        try:
            return cls(HF.from_str(text))
        except Exception as e:   # noqa: BLE001 - tokenizers raises a bare Exception for bad JSON
            raise UserError(f"tokenizer.json is not a valid tokenizer ({e})") from None

    @classmethod
    def from_file(cls, path) -> "Tokenizer":
        from pathlib import Path
        return cls.from_json(Path(path).read_text())

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids))
