"""`warmlm chat`: a streaming terminal chat, against the local engine or a running server."""

from __future__ import annotations

import argparse
import json
import queue
import sys
from collections.abc import Iterator
from typing import Any, Protocol

import httpx

from warmlm.config import ServerConfig
from warmlm.engine.request import SamplingParams, StreamEvent
from warmlm.service import Service
from warmlm.tasks.chat import Message
from warmlm.tasks.classify import ClassifyRequest, classify_blocking, format_item


class Backend(Protocol):
    def stream(
        self, messages: list[Message], temperature: float, max_tokens: int
    ) -> Iterator[str]: ...

    def classify(self, req: ClassifyRequest) -> dict[str, Any]:
        """The `/v1/classify` response for a request (local engine or server alike)."""
        ...


class RemoteBackend:
    """Streams from an OpenAI-compatible server over SSE."""

    def __init__(
        self, url: str, api_key: str | None, transport: httpx.BaseTransport | None = None
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=None, transport=transport
        )

    def stream(self, messages: list[Message], temperature: float, max_tokens: int) -> Iterator[str]:
        body = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": temperature,
            "max_tokens": max_tokens,
            "stream": True,
        }
        with self.client.stream("POST", "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                resp.read()
                raise RuntimeError(resp.json().get("error", {}).get("message", resp.text))
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(chunk["error"]["message"])
                for choice in chunk.get("choices", []):
                    yield choice.get("delta", {}).get("content") or ""

    def classify(self, req: ClassifyRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"input": list(req.inputs), "labels": list(req.labels)}
        body.update(task=req.task, multi_label=req.multi_label)
        resp = self.client.post("/v1/classify", json=body)
        if resp.status_code != 200:
            raise RuntimeError(resp.json().get("error", {}).get("message", resp.text))
        return dict(resp.json())


class LocalBackend:
    """Loads the model in this process (locate → load → warm up) and streams from the engine."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def stream(self, messages: list[Message], temperature: float, max_tokens: int) -> Iterator[str]:
        engine = self.service.engine
        assert engine is not None, "service started"
        events: queue.Queue[StreamEvent] = queue.Queue()
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
        tokens = self.service.tokenize_chat(messages)
        req = engine.new_request(tokens, params, events.put, self.service.next_turn)
        engine.add_request(req)
        try:
            while True:
                ev = events.get()
                if ev.error:
                    raise RuntimeError(ev.error)
                yield ev.text
                if ev.finished:
                    return
        finally:
            if req.finish_reason is None:
                engine.abort(req.request_id)

    def classify(self, req: ClassifyRequest) -> dict[str, Any]:
        return classify_blocking(self.service, req)


def make_backend(args: argparse.Namespace) -> Backend:
    if args.url:
        return RemoteBackend(args.url, args.api_key or ServerConfig.from_env().api_key)
    from warmlm.service import build_service

    config = ServerConfig.from_env(model=args.model, threads=args.threads, parallel=1, ctx=4096)
    service = build_service(config)
    service.start()
    return LocalBackend(service)


def run_chat(args: argparse.Namespace) -> int:
    backend = make_backend(args)
    history = [Message("system", args.system)] if args.system else []
    print("warmlm chat — empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            return 0
        if not line:
            return 0
        history.append(Message("user", line))
        if getattr(args, "sentiment", False):  # the turn's sentiment first, then the reply
            item = backend.classify(ClassifyRequest.build(line))["data"][0]
            print(f"     [sentiment: {format_item(item)}]", flush=True)
        reply = []
        print("bot> ", end="", flush=True)
        for piece in backend.stream(history, args.temperature, args.max_tokens):
            reply.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append(Message("assistant", "".join(reply)))


def run_classify(args: argparse.Namespace) -> int:
    """`warmlm classify TEXT... [--labels ...]`: one line per text (or the JSON response)."""
    try:
        req = ClassifyRequest.build(args.text, args.labels, args.task, args.multi_label)
    except ValueError as exc:
        print(f"warmlm classify: {exc}", file=sys.stderr)
        return 2
    backend = make_backend(args)
    try:
        body = backend.classify(req)
    except (RuntimeError, ValueError) as exc:
        print(f"warmlm classify: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    for text, item in zip(req.inputs, body["data"], strict=True):
        print(_classified(text, item, len(req.inputs) > 1))
    return 0


def _classified(text: str, item: dict[str, Any], many: bool) -> str:
    line = format_item(item)
    if not many:
        return line
    short = text if len(text) <= 48 else text[:47] + "…"
    return f"{line}\t{short}"
