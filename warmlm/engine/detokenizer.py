"""Incremental detokenization that never emits half a UTF-8 character."""

from __future__ import annotations

import codecs
from collections.abc import Callable

PieceFn = Callable[[int], bytes]


class Detokenizer:
    """Turns token ids into text deltas, holding back incomplete UTF-8 sequences.

    A token may end in the middle of a multi-byte character (common for Chinese and emoji
    with byte-level BPE); its bytes are held until the character completes.
    """

    def __init__(self, piece: PieceFn) -> None:
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self._decoder.decode(self._piece(token))

    def flush(self) -> str:
        """End of stream: an unfinished character (e.g. cut by max_tokens) is dropped."""
        self._decoder.errors = "ignore"
        return self._decoder.decode(b"", final=True)
