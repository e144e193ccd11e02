"""What every scenario of a run shares: options, the resolved model, the server under test."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from warmlm.bench.client import ChatClient
from warmlm.bench.options import BenchOptions
from warmlm.bench.serverproc import ServerProcess, ServerSpec
from warmlm.config import default_cache_dir


class BenchContext:
    """Hands out the model path, server processes, HTTP clients and progress bars."""

    def __init__(self, options: BenchOptions, run_id: str) -> None:
        self.options = options
        self.run_id = run_id
        self._model_path: Path | None = None
        self._shared: ServerProcess | None = None
        self._started = 0

    def model_path(self) -> Path:
        """The GGUF file of `--model`: a path as given, or a registry name resolved (assembled)."""
        if self._model_path is None:
            from warmlm.models.resolve import resolve_model

            progress = sys.stderr.isatty()
            resolved = resolve_model(self.options.model, default_cache_dir(), progress=progress)
            self._model_path = resolved.path
        return self._model_path

    def spec(self, ctx: int | None = None, parallel: int | None = None) -> ServerSpec:
        """The server flags of this run, with `--ctx`/`--parallel` overridden where given."""
        o = self.options
        return ServerSpec(
            model=o.model, threads=o.threads, parallel=parallel or o.parallel, ctx=ctx or o.ctx
        )

    def new_server(self, spec: ServerSpec, tag: str) -> ServerProcess:
        """A not-yet-started server whose output goes to a log file beside the results."""
        self._started += 1
        log = self.options.out / "logs" / f"{self.run_id}-{self._started:02d}-{tag}.log"
        return ServerProcess(spec, log)

    async def server_url(self) -> str:
        """The base URL under test: `--url`, or a warmlm started once and kept for the run."""
        if self.options.url is not None:
            return self.options.url
        if self._shared is None:
            self.model_path()  # assemble the model before the clock of any server starts
            server = self.new_server(self.spec(), "shared")
            server.start()
            self._shared = server
            await server.wait_ready(self.options.ready_timeout)
        return self._shared.url

    def release_server(self) -> None:
        """Stop the shared server, so a probe or another server does not compete with it."""
        if self._shared is not None:
            self._shared.stop()
            self._shared = None

    def client(self, url: str) -> ChatClient:
        return ChatClient(url, api_key=self.options.api_key)

    def progress(self, total: int, desc: str) -> tqdm:
        """A progress bar on stderr (hidden when stderr is not a terminal)."""
        return tqdm(
            total=total, desc=desc, file=sys.stderr, leave=False, disable=None, dynamic_ncols=True
        )

    def close(self) -> None:
        self.release_server()
