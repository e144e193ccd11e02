"""Conversation affinity: which replica a request belongs on, without Ray.

A conversation's next turn is fast only on the replica whose KV holds its earlier turns, so each
request gets an *affinity key* from the part of it that stays the same for the whole
conversation, and the router keeps every key on one replica:

- an explicit hint wins: the `X-Session-Id` header (Ray Serve's session header) or
  `X-Warmlm-Session`, then the OpenAI `user` field;
- a chat completion: its leading system (or developer) messages and its first user message —
  every later turn resends them unchanged;
- a text completion: the first `PROMPT_PREFIX_CHARS` characters of the prompt;
- a classification: the request without its inputs (the instruction and labels, which
  `engine.scoring` keeps in KV across calls);
- anything else has no key and goes to the least-loaded replica.

`AffinityTable` maps keys to replicas: a key seen before goes where it went last (where its
newest KV is), a new key by rendezvous hashing over the live replicas, so every router that sees
the same replicas (one per ingress replica) sends a new conversation to the same place, and a
replica that joins takes only new conversations instead of pulling warm ones off their replica.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

SESSION_HEADERS = ("x-session-id", "x-warmlm-session")
PROMPT_PREFIX_CHARS = 1024
CLASSIFY_INPUT_FIELDS = frozenset({"input", "inputs", "text", "texts", "stream", "user"})
KEY_HEX = 24  # 96 bits: no two live conversations collide


def _digest(kind: str, payload: object) -> str:
    data = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(f"{kind}\0{data}".encode(), digest_size=KEY_HEX // 2).hexdigest()


def _text(content: Any) -> str:
    """An OpenAI message content (a string or a list of text parts) as plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def chat_prefix(messages: Any) -> list[list[str]] | None:
    """The leading system/developer messages and the first user message, or None."""
    if not isinstance(messages, list):
        return None
    prefix: list[list[str]] = []
    for message in messages:
        if not isinstance(message, Mapping):
            return None
        role = message.get("role")
        prefix.append([str(role), _text(message.get("content"))])
        if role == "user":
            return prefix
        if role not in ("system", "developer"):
            return None  # the conversation does not start with its user's first message
    return None


def prompt_prefix(prompt: Any) -> str | None:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, str) and prompt:
        return prompt[:PROMPT_PREFIX_CHARS]
    return None


def affinity_key(path: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """The request's affinity key (a hex digest), or None when it has none.

    `headers` must have lower-case names (as Starlette's `Headers` does)."""
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return _digest("session", value)
    endpoint = path.rstrip("/")
    if endpoint not in ("/v1/chat/completions", "/v1/completions", "/v1/classify"):
        return None
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None  # the replica answers the 400
    if not isinstance(payload, dict):
        return None
    user = payload.get("user")
    if isinstance(user, str) and user:
        return _digest("user", user)
    if endpoint == "/v1/chat/completions":
        prefix = chat_prefix(payload.get("messages"))
        return None if prefix is None else _digest("chat", prefix)
    if endpoint == "/v1/completions":
        text = prompt_prefix(payload.get("prompt"))
        return None if text is None else _digest("prompt", text)
    instruction = {k: v for k, v in payload.items() if k not in CLASSIFY_INPUT_FIELDS}
    return _digest("classify", instruction) if instruction else None


def rendezvous(key: str, replicas: Iterable[str]) -> str | None:
    """The replica with the highest hash of (key, replica): the same answer in every process,
    and when a replica goes away only its keys move."""
    best: tuple[bytes, str] | None = None
    for replica in replicas:
        score = hashlib.blake2b(f"{key}\0{replica}".encode(), digest_size=8).digest()
        if best is None or score > best[0]:
            best = (score, replica)
    return None if best is None else best[1]


class AffinityTable:
    """Key → the replica that last served it (an LRU of `capacity` keys)."""

    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._last: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def last(self, key: str) -> str | None:
        """The replica that last served `key`, if any."""
        return self._last.get(key)

    def home(self, key: str, live: Iterable[str]) -> str | None:
        """Where `key` belongs among the live replicas: where it last ran if that replica is
        still live, else its rendezvous choice."""
        replicas = list(live)
        last = self._last.get(key)
        if last is not None and last in replicas:
            return last
        return rendezvous(key, replicas)

    def served(self, key: str, replica: str) -> None:
        """`replica` took a request of `key`: its KV now holds the newest turn."""
        self._last[key] = replica
        self._last.move_to_end(key)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)
