"""The `warmlm` command: serve, chat, models, bench."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from warmlm.config import ConfigError, ServerConfig, default_cache_dir
from warmlm.models.errors import ModelError

Handler = Callable[[argparse.Namespace], int]


def _serve(args: argparse.Namespace) -> int:
    from warmlm.server.app import run_server

    return run_server(server_config(args))


def server_config(args: argparse.Namespace) -> ServerConfig:
    """Flags map one-to-one onto ServerConfig fields; unset flags fall back to WARMLM_*."""
    names = {f.name for f in dataclasses.fields(ServerConfig)}
    return ServerConfig.from_env(**{k: v for k, v in vars(args).items() if k in names})


def _models(args: argparse.Namespace) -> int:
    from warmlm.models.listing import format_models, list_models

    print(format_models(list_models(default_cache_dir())))
    return 0


def _chat(args: argparse.Namespace) -> int:
    from warmlm.terminal import run_chat

    return run_chat(args)


def _bench(args: argparse.Namespace) -> int:
    from warmlm.bench.main import run_bench

    return run_bench(args)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the OpenAI-compatible server")
    p.add_argument("--model", help="registry name or path to a .gguf (env WARMLM_MODEL)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--ctx", type=int, help="KV cache size in tokens, shared by all sequences")
    p.add_argument("--parallel", type=int, help="sequences decoded at once (default 4)")
    p.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: all cores)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["text", "json"], help="json: one object per line")
    p.add_argument("--max-queue", type=int, help="waiting requests before 429 (default 64)")
    p.add_argument("--queue-timeout", type=float, help="seconds queued before 504 (default 60)")
    p.add_argument("--cache-slots", type=int, help="finished sequences kept in KV (default 16)")
    p.add_argument(
        "--no-prefix-cache",
        dest="prefix_cache",
        action="store_const",
        const=False,
        help="re-process every prompt from scratch",
    )
    p.add_argument("--kv-ram-mb", type=int, help="RAM for evicted KV states (default 256)")
    p.add_argument("--kv-cache-dir", type=Path, help="also keep KV states on disk (opt-in)")
    p.add_argument("--kv-disk-mb", type=int, help="disk cap for --kv-cache-dir (default 4096)")
    p.set_defaults(func=_serve)


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat in the terminal, streaming")
    p.add_argument("--url", help="a running server's base URL (default: load the model here)")
    p.add_argument("--model", default=None, help="registry name or .gguf path")
    p.add_argument("--system", default="You are a helpful assistant.", help="system prompt")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_chat)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warmlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_chat(sub)
    models = sub.add_parser("models", help="list known models and their GGUF metadata")
    models.set_defaults(func=_models)
    from warmlm.bench.main import add_bench_parser
    from warmlm.cachecmd import add_cache_parser, run_cache

    add_bench_parser(sub, _bench)
    add_cache_parser(sub, lambda args: run_cache(args))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, ModelError) as exc:
        print(f"warmlm: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
