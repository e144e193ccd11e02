"""Re-tokenization healing on a toy byte vocabulary: the cached split of a reply is kept when
it spells the same bytes as the new prompt, and nothing else is ever rewritten."""

from __future__ import annotations

import numpy as np

from tests.fakes import FakeRunner
from warmlm.engine.detokenizer import Detokenizer
from warmlm.engine.healing import Healer
from warmlm.engine.kvcache import KVCache
from warmlm.engine.request import Request, SamplingParams

VOCAB = {
    1: b"<s>", 2: b" Me", 3: b"adow", 4: b" Meadow", 5: b" is", 6: b" green", 7: b".",
    8: b"<end>", 9: b" Q", 10: b"?", 11: "é".encode()[:1], 12: "é".encode()[1:], 13: "é".encode(),
    14: b" caf",
}  # fmt: skip


def tokenize(data: bytes) -> list[int]:
    """Greedy longest match, as a BPE tokenizer would write the canonical split."""
    out, i = [], 0
    by_len = sorted(VOCAB.items(), key=lambda kv: -len(kv[1]))
    while i < len(data):
        tok, piece = next((t, p) for t, p in by_len if data.startswith(p, i))
        out.append(tok)
        i += len(piece)
    return out


HEALER = Healer(VOCAB.__getitem__, tokenize)


def arr(tokens: list[int]) -> np.ndarray:
    return np.asarray(tokens, dtype=np.int32)


def test_a_non_canonical_reply_is_kept_and_only_the_rest_retokenized() -> None:
    cached = arr([1, 2, 3, 5, 6, 7])  # the model wrote " Me" + "adow"
    prompt = tokenize(b"<s> Meadow is green.<end> Q?")  # the client sent the text back
    assert prompt[:2] == [1, 4]  # canonical: one " Meadow" token
    healed = HEALER.heal(prompt, cached)
    assert healed == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert b"".join(VOCAB[t] for t in healed) == b"".join(VOCAB[t] for t in prompt)


def test_different_text_is_not_rewritten() -> None:
    cached = arr([1, 2, 3, 6])
    prompt = tokenize(b"<s> Me is green.")
    assert HEALER.heal(prompt, cached) is None


def test_a_prompt_that_extends_the_cache_needs_no_healing() -> None:
    cached = arr([1, 4, 5])
    assert HEALER.heal([1, 4, 5, 6], cached) is None
    assert HEALER.heal([1, 4], cached) is None


def test_a_cached_token_ending_inside_a_character_is_backed_off() -> None:
    prompt = tokenize(" Meadow café.".encode())
    cached = arr([2, 3, 14, 11])  # " Me" "adow" " caf" + the first byte of "é"
    healed = HEALER.heal(prompt, cached)
    assert healed == [2, 3, 14, 13, 7]  # the character is re-tokenized whole
    assert HEALER.heal([1, 14, 13, 7], arr([1, 14, 11])) is None  # nothing left to gain


def req(tokens: list[int], max_tokens: int = 4) -> Request:
    return Request(tokens, SamplingParams(max_tokens=max_tokens), lambda ev: None,
                   Detokenizer(lambda t: b""))  # fmt: skip


def test_the_cache_reuses_the_whole_reply_after_healing() -> None:
    kv = KVCache(FakeRunner(), n_cells=1000, n_slots=4)
    kv.healer = HEALER
    first = req([1, 9, 10, 8], max_tokens=8)
    assert kv.admit(first)
    first.output_tokens = [2, 3, 5, 6, 7, 8]  # " Me" "adow" " is" " green" "." <end>
    first.n_past = len(first.prompt_tokens) + len(first.output_tokens) - 1
    kv.release(first)
    second = req(tokenize(b"<s> Q?<end> Meadow is green.<end> Q?"))
    assert second.prompt_tokens[4] == 4  # canonical " Meadow"
    assert kv.admit(second)
    assert second.cached_tokens == 9 and second.prompt_tokens[4:6] == [2, 3]
    assert kv.stats["healed"] == 1


def test_healing_never_overflows_the_context() -> None:
    kv = KVCache(FakeRunner(), n_cells=12, n_slots=4)
    kv.healer = HEALER
    first = req([1, 9, 10, 8], max_tokens=4)
    assert kv.admit(first)
    first.output_tokens = [2, 3, 5]
    first.n_past = 6
    kv.release(first)
    second = req(tokenize(b"<s> Q?<end> Meadow is"), max_tokens=6)  # 6 tokens; healed: 7
    assert kv.admit(second) and kv.stats["healed"] == 0
