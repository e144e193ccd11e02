"""The ASGI app: state built in the lifespan hook; the model loads while the port is open."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from warmlm.config import ServerConfig
from warmlm.server.errors import install_error_handlers
from warmlm.server.lifecycle import CANCEL_GRACE_S, DrainingServer, install_drain, leftover_threads
from warmlm.server.metrics import install_observability
from warmlm.server.reqlog import configure_logging
from warmlm.server.routes import router
from warmlm.server.security import bind_warning, install_security
from warmlm.service import Service, State, build_service

log = logging.getLogger("warmlm.server")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class WebFiles(StaticFiles):
    """The chat page; any other method is a 404, as if no route matched (not a 405)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)


def create_app(
    config: ServerConfig,
    on_fatal: Callable[[str], None] | None = None,
    service_factory: Callable[[ServerConfig], Service] = build_service,
) -> FastAPI:
    """The app; its lifespan starts loading the model in the background and returns at once."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = service_factory(config)
        service.observer.target = app.state.observer
        service.watch_failure(on_fatal)
        app.state.service = service
        url = f"http://{_url_host(config.host)}:{config.port}/"
        service.start_in_background()  # unless it already runs (`warmlm serve` starts it early)
        announcer = threading.Thread(target=_announce, args=(service, url), name="warmlm-ready")
        announcer.start()
        try:
            yield
        finally:
            announcer.join()
            service.shutdown()

    app = FastAPI(title="warmlm", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    install_drain(app, config.drain_timeout)  # innermost: counts requests in flight
    app.state.requires_key = install_security(app, config) is not None
    install_observability(app)  # /metrics, request log (outermost: refusals are logged too)
    app.include_router(router)
    app.mount("/", WebFiles(directory=WEB_DIR, html=True), name="web")  # last: API routes win
    return app


def _announce(service: Service, url: str) -> None:
    service.join_startup()
    if service.state is State.READY:
        print(f"warmlm is ready: {url}  (web UI; OpenAI API at {url}v1)", flush=True)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def run_server(config: ServerConfig, service: Service | None = None) -> int:
    """Serve until SIGTERM/SIGINT (drained: exit 0); 1 when the model fails to load or the
    engine dies, so that a supervisor restarts the process. `service`: one already starting."""
    failure: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(reason: str) -> None:
        failure.append(reason)
        if server is not None:
            server.should_exit = True

    factory = build_service if service is None else (lambda cfg: service)
    app = create_app(config, on_fatal, factory)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        lifespan="on",
        log_config=configure_logging(config.log_format),
        timeout_graceful_shutdown=CANCEL_GRACE_S,  # after the drain (lifecycle.py)
        http="h11",  # httptools has no limit on the request head; h11 enforces one
        h11_max_incomplete_event_size=config.max_header_bytes,
    )
    server = DrainingServer(uv_config, app.state.drain)
    warning = bind_warning(config, app.state.requires_key)
    if warning:
        log.warning("%s", warning)
    log.info(
        "warmlm listening on http://%s:%d/ (model loads in the background)",
        config.host,
        config.port,
    )
    server.run()
    if leftover_threads():
        log.warning("threads still alive at exit: %s", ", ".join(leftover_threads()))
    if failure:
        print(f"warmlm: {failure[0]}", file=sys.stderr)
        return 1
    return 0
