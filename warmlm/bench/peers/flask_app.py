"""The reference peer (c): a hand-written Flask + transformers chat service, the kind of app
warmlm replaces. It is written the way such apps usually are, on purpose:

- one module-level Flask `app`, run by Flask's own threaded server (`threaded=True`);
- the model and tokenizer loaded **lazily, on the first chat request** (behind a lock), with
  `AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)`:
  transformers dequantizes the same GGUF file warmlm serves into a bf16 copy (the "converted
  model"), and the tokenizer comes from the same GGUF; `--preload` loads at start instead;
- every request runs its own `model.generate` in a thread, streamed through a
  `TextIteratorStreamer` as SSE `data:` lines ending with `data: [DONE]`; no batching, no KV
  reuse between requests, no queue: concurrent requests simply run concurrent `generate` calls;
- `torch.set_num_threads(--threads)`, the same threads as the other servers.

It speaks just enough of the OpenAI API for `warmlm bench`: `GET /v1/models`, and
`POST /v1/chat/completions` streamed or not, greedy at temperature 0, with `usage` (the bench
counts tokens from it; `stream_options.include_usage` adds a last usage chunk).
Ready (for the bench's cold start) = the first 200 on `/v1/models`: torch and transformers are
imported before the server listens, but the model itself loads on the first chat request.

Runs offline: `HF_HUB_OFFLINE=1` is set before transformers is imported, so nothing is fetched.

    python -m warmlm.bench.peers.flask_app --gguf MODEL.gguf --threads 2 --port 8003
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)

SETTINGS: dict[str, Any] = {"gguf": None, "threads": None, "model_id": "reference"}

_model: Any = None
_tokenizer: Any = None
_load_lock = threading.Lock()


def load_model() -> tuple[Any, Any]:
    """The model and tokenizer, loaded once (the first caller loads, the others wait)."""
    global _model, _tokenizer
    with _load_lock:
        if _model is None:
            gguf = SETTINGS["gguf"]
            if gguf is None:
                raise RuntimeError("no model configured (--gguf)")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if SETTINGS["threads"]:
                torch.set_num_threads(int(SETTINGS["threads"]))
            path = Path(gguf)
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.bfloat16, **_dequantized()
            )
            model.eval()
            _model, _tokenizer = model, tokenizer
    return _model, _tokenizer


def _dequantized() -> dict[str, Any]:
    """Ask for the whole model unpacked to dense weights where transformers could otherwise keep
    GGUF blocks packed (behind kernels fetched from a hub); older versions always unpack."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


@dataclass
class Generation:
    """One running generation: its text pieces as they come, then its token counts."""

    prompt_tokens: int
    pieces: Iterable[str]
    max_tokens: int
    _done: threading.Thread | None = None
    _out: dict[str, Any] = field(default_factory=dict)
    _eos: frozenset[int] = frozenset()

    def completion_tokens(self) -> int:
        """Tokens generated (the end-of-sequence token not counted); call after `pieces`."""
        if self._done is not None:
            self._done.join()
        ids = self._out.get("ids")
        if ids is None:
            return int(self._out.get("completion_tokens", 0))
        while ids and ids[-1] in self._eos:
            ids = ids[:-1]
        return len(ids)

    def finish_reason(self) -> str:
        return "length" if self.completion_tokens() >= self.max_tokens else "stop"


def start_generation(
    messages: list[dict[str, str]], max_tokens: int, temperature: float
) -> Generation:
    """Start `model.generate` in a thread, streaming text through a TextIteratorStreamer."""
    import torch
    from transformers import TextIteratorStreamer

    model, tokenizer = load_model()
    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    prompt_tokens = int(enc["input_ids"].shape[1])
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    )
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            with torch.inference_mode():
                ids = model.generate(
                    **enc, max_new_tokens=max_tokens, streamer=streamer, **sampling
                )
            out["ids"] = ids[0, prompt_tokens:].tolist()
        except Exception:
            streamer.end()  # the reader must not wait forever
            raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    eos = model.generation_config.eos_token_id
    eos_ids = frozenset(eos if isinstance(eos, list) else [] if eos is None else [eos])
    return Generation(prompt_tokens, streamer, max_tokens, thread, out, eos_ids)


def _chunk(cid: str, created: int, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": SETTINGS["model_id"],
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _usage(gen: Generation) -> dict[str, int]:
    done = gen.completion_tokens()
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": done,
        "total_tokens": gen.prompt_tokens + done,
    }


def sse(payload: dict[str, Any] | str) -> str:
    """One server-sent event: a `data:` line and a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n"


def stream_events(gen: Generation, include_usage: bool) -> Iterator[str]:
    """The SSE body of a streamed chat completion, ending with `data: [DONE]`."""
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    yield sse(_chunk(cid, created, {"role": "assistant", "content": ""}, None))
    for piece in gen.pieces:
        if piece:
            yield sse(_chunk(cid, created, {"content": piece}, None))
    yield sse(_chunk(cid, created, {}, gen.finish_reason()))
    if include_usage:
        last = _chunk(cid, created, {}, None)
        last["choices"] = []
        last["usage"] = _usage(gen)
        yield sse(last)
    yield sse("[DONE]")


@app.get("/v1/models")
def models() -> Response:
    return jsonify(
        {
            "object": "list",
            "data": [{"id": SETTINGS["model_id"], "object": "model", "owned_by": "reference"}],
        }
    )


@app.post("/v1/chat/completions")
def chat_completions() -> Response | tuple[Response, int]:
    body = request.get_json(silent=True) or {}
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return jsonify({"error": {"message": "messages is required"}}), 400
    max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
    temperature = float(body.get("temperature") or 0.0)
    gen = start_generation(messages, max_tokens, temperature)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Response(
            stream_with_context(stream_events(gen, include_usage)),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    text = "".join(gen.pieces)
    return jsonify(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": SETTINGS["model_id"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": gen.finish_reason(),
                }
            ],
            "usage": _usage(gen),
        }
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="the reference Flask + transformers chat service")
    p.add_argument("--gguf", type=Path, required=True, help="the GGUF file to dequantize and serve")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--preload", action="store_true", help="load the model before listening")
    args = p.parse_args(argv)
    SETTINGS.update(gguf=str(args.gguf), threads=args.threads, model_id=args.gguf.stem)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # imported before listening, as a module-level import would be
    import transformers  # noqa: F401

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preload:
        load_model()
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
