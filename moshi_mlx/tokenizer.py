"""Text tokenizer: a thin sentencepiece wrapper (the package's only sentencepiece import).

Moshi's text stream uses Kyutai's `tokenizer_spm_32k_3.model`. Ids 3 (PAD) and 0 (EPAD, end of
padding) fill the text stream between words; they display as nothing. Display pieces replace
sentencepiece's word-boundary mark "▁" (U+2581) by a space, as Kyutai's printers do. Ids the
tokenizer does not know (e.g. the input-only initial token text_card) also display as nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import sentencepiece

PAD_IDS = frozenset({0, 3})  # EPAD, PAD (docs/checkpoints.md)
WORD_MARK = "\u2581"


class TextTokenizer:
    """Sentencepiece model at `path` (a `.model` file) with Moshi's display conventions."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {path}")
        self.path = path
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))

    @property
    def vocab_size(self) -> int:
        return int(self._sp.vocab_size())

    def _visible(self, i: int) -> bool:
        # Control pieces (<s>, </s>, ...) are markup, not speech: never displayed.
        return i not in PAD_IDS and 0 <= i < self.vocab_size and not self._sp.is_control(i)

    def piece(self, token_id: int) -> str:
        """Display text of one id: "" for padding, control and unknown ids, "▁" shown as a space."""
        i = int(token_id)
        if not self._visible(i):
            return ""
        return self._sp.id_to_piece(i).replace(WORD_MARK, " ")

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of a token sequence, padding ids (and ids outside the vocabulary) dropped."""
        flat = np.asarray(ids).reshape(-1).tolist()
        return self._sp.decode([int(i) for i in flat if self._visible(int(i))])

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def __repr__(self) -> str:
        return f"TextTokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"
