"""Re-tokenization healing: reuse the KV of a reply even when its text tokenizes differently.

A model sometimes generates a non-canonical split of a word (" Me" + "adow" where the tokenizer
would write " Meadow"). When the client sends the reply back as text, the new prompt's tokens
differ from the cached sequence from that word on, and plain prefix matching loses the rest of
the reply. If the cached tokens still spell a byte prefix of the new prompt's text, the prompt
is rewritten as the cached tokens followed by the tokenization of the remaining text: the model
sees exactly the tokens it produced, and only the truly new part is prefilled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from warmlm.engine.kvstore import common_prefix

MAX_UTF8_BACKOFF = 3  # a cached token may end inside a character: back off to its start


@dataclass(frozen=True)
class Healer:
    """`piece`: a token's bytes with special tokens rendered; `tokenize`: bytes → tokens,
    special tokens parsed, no BOS."""

    piece: Callable[[int], bytes]
    tokenize: Callable[[bytes], list[int]]

    def heal(self, prompt: Sequence[int], cached: np.ndarray) -> list[int] | None:
        """`prompt` rewritten to share more tokens with `cached`, or None if it cannot be."""
        prompt_arr = np.asarray(prompt, dtype=np.int32)
        d = common_prefix(cached, prompt_arr)
        if d >= len(cached) or d >= len(prompt_arr):
            return None
        text = b"".join(self.piece(int(t)) for t in prompt_arr[d:])
        spelled, lengths = b"", []
        for tok in cached[d:]:
            nxt = spelled + self.piece(int(tok))
            if not text.startswith(nxt):
                break
            spelled = nxt
            lengths.append(len(spelled))
        for k in range(len(lengths), max(0, len(lengths) - MAX_UTF8_BACKOFF) - 1, -1):
            if k == 0:
                return None
            rest = text[lengths[k - 1] :]
            if not rest or _starts_a_character(rest):
                return [*prompt_arr[:d].tolist(), *cached[d : d + k].tolist(), *self.tokenize(rest)]
        return None


def _starts_a_character(data: bytes) -> bool:
    return (data[0] & 0xC0) != 0x80
