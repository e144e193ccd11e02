"""The route table: health, readiness, models, chat and text completions."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from warmlm.engine.engine import Engine, EventStream
from warmlm.engine.request import SamplingParams, StreamEvent, Usage
from warmlm.server.errors import (
    ERROR_RESPONSES,
    SSE_RESPONSE,
    STATE_RESPONSE,
    APIError,
    to_api_error,
)
from warmlm.server.lifecycle import drain_of
from warmlm.server.metrics import health_fields
from warmlm.server.reqlog import note_request
from warmlm.server.schemas import (
    ChatCompletionRequest,
    ClassifyRequestBody,
    CompletionRequest,
    SamplingFields,
)
from warmlm.server.sse import ChunkMeta, event_stream, usage_dict
from warmlm.service import Service, State
from warmlm.tasks.chat import Message
from warmlm.tasks.classify import ClassifyError, ClassifyRequest, classifier_for
from warmlm.tasks.structured import UnsupportedSchema, check_grammar, response_format_grammar

router = APIRouter(responses=ERROR_RESPONSES)

TEMPERATURE, TOP_P, TOP_K = 0.7, 0.8, 20  # the Qwen2.5 family's recommended sampling
DISCONNECT_POLL_S = 0.25


def service_of(request: Request) -> Service:
    service = request.app.state.service
    assert isinstance(service, Service)
    return service


def ready_engine(service: Service) -> Engine:
    if service.state is State.FAILED:
        raise APIError(503, f"the model failed to load: {service.error}", code="engine_failed")
    if service.state is not State.READY or service.engine is None:
        raise APIError(503, f"the model is {service.state.value}", code="not_ready", retry_after=2)
    return service.engine


def check_model(name: str | None, service: Service) -> None:
    if name and name not in service.model_names():
        raise APIError(404, f"model {name!r} does not exist", param="model", code="model_not_found")


@router.get("/health", responses=STATE_RESPONSE)
async def health(request: Request) -> Response:
    """200 while loading, warming, ready or draining; 503 once failed (restart me)."""
    service = service_of(request)
    body = service.health()
    body.update(health_fields(request.app, body["rss_bytes"]))
    drain = drain_of(request.app)
    if drain is not None and drain.draining and service.state is not State.FAILED:
        body["status"] = "draining"
    return JSONResponse(body, status_code=503 if service.state is State.FAILED else 200)


@router.get("/ready", responses=STATE_RESPONSE)
async def ready(request: Request) -> Response:
    service = service_of(request)
    status = 200 if service.state is State.READY else 503
    return JSONResponse({"status": service.state.value}, status_code=status)


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    service = service_of(request)
    created = int(service.info.started_at)
    data = [
        {"id": service.info.model_name, "object": "model", "created": created, "owned_by": "warmlm"}
    ]
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions", responses=SSE_RESPONSE)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    note_request(request, model=body.model, user=body.user, stream=body.stream)
    service = service_of(request)
    engine = ready_engine(service)
    check_model(body.model, service)
    messages = [Message(_role(m.role), m.text()) for m in body.messages]
    tokens = service.tokenize_chat(messages)
    meta = ChunkMeta(f"chatcmpl-{uuid.uuid4().hex[:24]}", service.info.model_name, chat=True)
    grammar = _grammar(body, engine)
    return await _respond(
        engine, tokens, body, body.limit(), meta, request, grammar, service.next_turn
    )


def _grammar(body: ChatCompletionRequest, engine: Engine) -> str | None:
    """`response_format` as a grammar that compiles for this model (else 400 naming why)."""
    if body.response_format is None:
        return None
    try:
        grammar = response_format_grammar(body.response_format.model_dump(by_alias=True))
        if grammar is not None:
            check_grammar(getattr(engine.runner, "vocab", None), grammar)
    except UnsupportedSchema as exc:
        raise APIError(400, str(exc), param="response_format", code="unsupported_schema") from exc
    return grammar


@router.post("/v1/classify")
async def classify(body: ClassifyRequestBody, request: Request) -> Response:
    """Every label's probability for each input (label scoring: tasks.classify)."""
    note_request(request, model=body.model, user=body.user, stream=False)
    service = service_of(request)
    engine = ready_engine(service)
    check_model(body.model, service)
    try:
        spec = ClassifyRequest.build(body.input, body.labels, body.task, body.multi_label)
        prepared = classifier_for(service).prepare(spec)
        result = await engine.submit_task(prepared.task).wait_async()
    except ClassifyError as exc:
        raise APIError(400, str(exc), param=exc.param, code=exc.code) from exc
    except Exception as exc:
        raise to_api_error(exc) from exc
    return JSONResponse(prepared.response(result, service.info.model_name))


@router.post("/v1/completions", responses=SSE_RESPONSE)
async def completions(body: CompletionRequest, request: Request) -> Response:
    note_request(request, model=body.model, user=body.user, stream=body.stream)
    service = service_of(request)
    engine = ready_engine(service)
    check_model(body.model, service)
    tokens = service.tokenize_text(body.text())
    meta = ChunkMeta(f"cmpl-{uuid.uuid4().hex[:24]}", service.info.model_name, chat=False)
    return await _respond(engine, tokens, body, body.limit(), meta, request)


def _role(role: str) -> str:
    return "system" if role == "developer" else role


def sampling_params(
    body: SamplingFields, limit: int | None, room: int, default: int
) -> SamplingParams:
    def pick(value: float | None, fallback: float) -> float:
        return fallback if value is None else value

    return SamplingParams(
        max_tokens=limit if limit is not None else max(1, min(default, room)),
        temperature=pick(body.temperature, TEMPERATURE),
        top_p=pick(body.top_p, TOP_P),
        top_k=body.top_k if body.top_k is not None else TOP_K,
        min_p=pick(body.min_p, 0.0),
        repeat_penalty=pick(body.repeat_penalty, 1.0),
        seed=body.seed,
        presence_penalty=pick(body.presence_penalty, 0.0),
        frequency_penalty=pick(body.frequency_penalty, 0.0),
        stop=body.stop_list(),
    )


async def _respond(
    engine: Engine,
    tokens: list[int],
    body: SamplingFields,
    limit: int | None,
    meta: ChunkMeta,
    request: Request,
    grammar: str | None = None,
    next_turn: tuple[int, ...] = (),
) -> Response:
    room = engine.runner.n_ctx - len(tokens)
    if room <= 0:
        raise APIError(
            400,
            f"the prompt ({len(tokens)} tokens) does not fit the context of "
            f"{engine.runner.n_ctx} tokens",
            param="messages",
            code="context_length_exceeded",
        )
    params = sampling_params(body, limit, room, engine.config.default_max_tokens)
    if grammar is not None:
        params = dataclasses.replace(params, grammar=grammar)
    try:
        events = engine.submit(tokens, params, next_turn)
    except Exception as exc:
        raise to_api_error(exc) from exc
    note_request(request, id=events.request_id)
    if body.stream:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            event_stream(events, meta, body.include_usage),
            media_type="text/event-stream",
            headers=headers,
        )
    return JSONResponse(await _collect(events, meta, request))


async def _collect(events: EventStream, meta: ChunkMeta, request: Request) -> dict[str, Any]:
    """Gather a whole reply, aborting the generation if the client goes away."""
    collected: list[StreamEvent] = []

    async def consume() -> None:
        async for ev in events:
            collected.append(ev)

    task = asyncio.ensure_future(consume())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                raise APIError(499, "client disconnected", code="client_closed")
        task.result()
    finally:
        events.close()
    return _full_response(collected, meta)


def _full_response(collected: list[StreamEvent], meta: ChunkMeta) -> dict[str, Any]:
    last = collected[-1]
    if last.error is not None:
        raise to_api_error(
            TimeoutError()
            if last.error == "queue_timeout"
            else APIError(503, f"generation failed: {last.error}", code="engine_failed")
        )
    text = "".join(ev.text for ev in collected)
    usage: Usage = last.usage
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": last.finish_reason}
    if meta.chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": meta.id,
        "object": "chat.completion" if meta.chat else "text_completion",
        "created": int(time.time()),
        "model": meta.model,
        "choices": [choice],
        "usage": usage_dict(usage),
    }
