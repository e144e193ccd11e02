"""The prompts the scenarios send: fixed, deterministic, long-answer where decode speed counts."""

from __future__ import annotations

import random

from warmlm.bench.client import Messages
from warmlm.config import DEFAULT_SYSTEM_PROMPT

SYSTEM = DEFAULT_SYSTEM_PROMPT  # the web UI's and `warmlm chat`'s

TUTORIAL = (
    "Write a detailed tutorial on implementing {topic} in Python{variant}: explain the design, "
    "give the complete code with comments, and walk through an example."
)

TOPICS = (
    "a hash map",
    "a binary search tree",
    "a priority queue",
    "a trie",
    "an LRU cache",
    "a linked list",
    "a ring buffer",
    "a bloom filter",
    "a union-find structure",
    "a skip list",
    "a min-heap",
    "a graph with breadth-first search",
    "a JSON tokenizer",
    "a rate limiter",
    "a thread pool",
    "a text diff tool",
)

FILLER_WORDS = (
    "river",
    "stone",
    "garden",
    "window",
    "lantern",
    "harbor",
    "meadow",
    "engine",
    "paper",
    "forest",
    "signal",
    "market",
    "bridge",
    "winter",
    "copper",
    "orchard",
    "planet",
    "rhythm",
    "shadow",
    "valley",
    "candle",
    "mirror",
    "ladder",
    "silver",
    "thunder",
    "castle",
    "pocket",
)


def chat(user: str, system: str = SYSTEM) -> Messages:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def distinct_long_answers(n: int, start: int = 0) -> list[Messages]:
    """n different long-answer prompts, numbers start..start+n-1 of an endless series."""
    out = []
    for i in range(start, start + n):
        topic = TOPICS[i % len(TOPICS)]
        variant = f" (variant {i // len(TOPICS) + 1})" if i >= len(TOPICS) else ""
        out.append(chat(TUTORIAL.format(topic=topic, variant=variant)))
    return out


def equal_length_prompts(n: int, seed: int = 1234) -> list[Messages]:
    """n different prompts of equal token length: they differ only in fixed-width digit strings.

    Digits tokenize one by one (or in fixed-size groups) in the tokenizers of common small models,
    so each prompt has the same number of tokens; servers report it back in `usage`, which the
    coldstart scenario checks. The digits come first so no two prompts share more than the template.
    """
    rng = random.Random(seed)
    codes = rng.sample(range(10_000_000, 100_000_000), n)
    return [
        chat(f"{code} is an order number. In one short sentence, say what an order number is for.")
        for code in codes
    ]


def filler_text(words: int, seed: int) -> str:
    """Deterministic pseudo-random prose of about `words` words, to fill a long context."""
    rng = random.Random(seed)
    sentences = []
    while words > 0:
        k = min(words, rng.randint(8, 14))
        sentence = " ".join(rng.choice(FILLER_WORDS) for _ in range(k))
        sentences.append(sentence.capitalize() + ".")
        words -= k
    return " ".join(sentences)


def long_context(words: int, seed: int) -> Messages:
    """A long document followed by a question about it (used to fill a stream's context)."""
    doc = filler_text(words, seed)
    return chat(f"Here is a document:\n\n{doc}\n\nSummarize the document in detail.")
