"""One error shape for every failure: the OpenAI error object."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from warmlm.engine.engine import EngineDeadError, QueueFullError
from warmlm.engine.request import RequestError
from warmlm.tasks.chat import TemplateRenderError

log = logging.getLogger("warmlm.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The OpenAI error object: every 4xx and 5xx of this server (OpenAPI documentation)."""

    error: ErrorObject


_ERROR_DOC: dict[str, Any] = {"model": ErrorResponse, "description": "the OpenAI error object"}
# For `APIRouter(responses=...)`: "default" also keeps FastAPI from documenting a 422 that this
# server never sends (validation errors are 400s).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{code: _ERROR_DOC for code in (400, 401, 403, 404, 413, 429, 503, 504)},
    "default": _ERROR_DOC,
}
STATE_RESPONSE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "not ready, or (for /health) failed: the state as JSON",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
_SSE_EVENT = {
    "type": "object",
    "properties": {"data": {"type": "string", "description": "a JSON chunk, or [DONE]"}},
    "required": ["data"],
}
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a completion; with `stream: true`, server-sent events ending with "
        "`data: [DONE]`",
        "content": {"text/event-stream": {"schema": _SSE_EVENT}},  # 3.1: one event
    }
}


class APIError(Exception):
    """An error to return to the client as `{"error": {...}}` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    body = error_body(exc.status, exc.message, exc.param, exc.code)
    return JSONResponse(body, status_code=exc.status, headers=headers)


def to_api_error(exc: Exception) -> APIError:
    """Map engine and task exceptions to the HTTP error the client sees."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, RequestError | TemplateRenderError):
        return APIError(400, str(exc), code="invalid_request")
    if isinstance(exc, QueueFullError):
        return APIError(429, str(exc), code="queue_full", retry_after=1)
    if isinstance(exc, TimeoutError):
        return APIError(504, "the request waited too long in the queue", code="queue_timeout")
    if isinstance(exc, EngineDeadError):
        return APIError(503, f"the engine has failed: {exc}", code="engine_failed")
    log.exception("unexpected error", exc_info=exc)
    return APIError(500, "internal server error", code="internal_error")


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid request"))
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    return (f"{param}: {msg}" if param else msg), param


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        return error_response(to_api_error(exc))

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(list(exc.errors()))
        return error_response(APIError(400, message, param=param, code="invalid_request"))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(APIError(exc.status_code, str(exc.detail)))

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_api_error)
