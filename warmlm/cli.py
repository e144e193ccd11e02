"""The `warmlm` command: serve, chat, models, bench."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from warmlm.config import (
    DEFAULT_SYSTEM_PROMPT,
    FLASH_ATTN,
    ConfigError,
    ServerConfig,
    default_cache_dir,
)
from warmlm.models.errors import ModelError

Handler = Callable[[argparse.Namespace], int]


def _serve(args: argparse.Namespace) -> int:
    from warmlm.cluster.options import ray_requested

    if ray_requested(args):  # --ray: replicas on Ray Serve (docs/scaling.md)
        from warmlm.cluster.launch import options_from_args, run_cluster

        return run_cluster(server_config(args), options_from_args(args))
    from warmlm.logformat import set_log_format
    from warmlm.service import build_service

    config = server_config(args)
    set_log_format(config.log_format)  # before the first startup line
    # The model loads (inside llama.cpp, without the GIL) while the HTTP stack imports.
    service = build_service(config)
    service.start_in_background()
    from warmlm.server.app import run_server

    return run_server(config, service)


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
    p.add_argument(
        "--no-mmap",
        dest="mmap",
        action="store_const",
        const=False,
        help="read the model file into memory instead of mapping it (loads slower; the "
        "kernel cannot then drop the weights' pages under memory pressure)",
    )
    p.add_argument(
        "--flash-attn",
        choices=FLASH_ATTN,
        help="llama.cpp's flash attention: auto (its choice), on or off (default auto)",
    )
    _add_security(p)
    _add_cluster(p)
    p.set_defaults(func=_serve)


def _add_security(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("security and shutdown (docs/security.md)")
    g.add_argument("--api-key", help="require `Authorization: Bearer KEY` (env WARMLM_API_KEY)")
    g.add_argument("--api-key-file", type=Path, help="read the API key from this file")
    g.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="a browser origin allowed to call the API (repeatable; default: none)",
    )
    g.add_argument(
        "--allowed-host",
        action="append",
        metavar="HOST",
        help="a Host header accepted besides localhost/127.0.0.1/[::1] (repeatable)",
    )
    g.add_argument("--max-body-bytes", type=int, help="request body limit (default 2 MiB)")
    g.add_argument("--max-header-bytes", type=int, help="request head limit (default 16 KiB)")
    g.add_argument(
        "--drain-timeout", type=float, help="seconds in-flight requests get on SIGTERM (20)"
    )


def _add_cluster(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scaling out on Ray Serve (docs/scaling.md)")
    g.add_argument("--ray", action="store_true", help="serve replicas on Ray Serve")
    g.add_argument("--replicas", type=int, metavar="N", help="engine replicas (default 2)")
    g.add_argument("--autoscale", metavar="MIN:MAX", help="autoscale between MIN and MAX replicas")
    g.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (default: local)")
    g.add_argument(
        "--replica-threads", type=int, metavar="T", help="threads per replica (cores / replicas)"
    )


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat in the terminal, streaming")
    p.add_argument("--url", help="a running server's base URL (default: load the model here)")
    p.add_argument(
        "--api-key", help="bearer key for --url (default: $WARMLM_API_KEY)", default=None
    )
    p.add_argument("--model", default=None, help="registry name or .gguf path")
    p.add_argument("--system", default=DEFAULT_SYSTEM_PROMPT, help="system prompt")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--sentiment", action="store_true", help="show each turn's sentiment before the reply"
    )
    p.set_defaults(func=_chat)


def _classify(args: argparse.Namespace) -> int:
    from warmlm.terminal import run_classify

    return run_classify(args)


def _add_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify text by label scoring (default: sentiment)")
    p.add_argument("text", nargs="+", help="the text to classify (each argument is one input)")
    p.add_argument("--labels", nargs="+", help="candidate labels (default: positive negative)")
    p.add_argument("--task", help='"sentiment" (default) or an instruction for the labels')
    p.add_argument("--multi-label", action="store_true", help="judge each label on its own")
    p.add_argument("--json", action="store_true", help="print the API response as JSON")
    p.add_argument("--url", help="a running server's base URL (default: load the model here)")
    p.add_argument(
        "--api-key", help="bearer key for --url (default: $WARMLM_API_KEY)", default=None
    )
    p.add_argument("--model", default=None, help="registry name or .gguf path")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_classify)


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (`commands`) only the heavy subcommands named: `warmlm serve` does
    not import the benchmark's modules, which would add a few hundred ms to its start."""
    parser = argparse.ArgumentParser(prog="warmlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_chat(sub)
    _add_classify(sub)
    models = sub.add_parser("models", help="list known models and their GGUF metadata")
    models.set_defaults(func=_models)
    if commands is None or "bench" in commands:
        from warmlm.bench.main import add_bench_parser

        add_bench_parser(sub, _bench)
    else:
        sub.add_parser("bench", help="measure warmlm (see `warmlm bench -h`)")
    if commands is None or "cache" in commands:
        from warmlm.cachecmd import add_cache_parser, run_cache

        add_cache_parser(sub, lambda args: run_cache(args))
    else:
        sub.add_parser("cache", help="list or remove saved KV states (see `warmlm cache -h`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    light = bool(argv) and argv[0] in ("serve", "chat", "classify", "models")
    args = build_parser(argv[:1] if light else None).parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, ModelError) as exc:
        print(f"warmlm: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
