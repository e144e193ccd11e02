"""`warmlm cache ls|rm`: list and remove the KV states saved by the disk tier."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from warmlm.engine.diskstore import list_entries


def add_cache_parser(sub: argparse._SubParsersAction, handler: Callable) -> None:
    p = sub.add_parser("cache", help="list or remove saved KV states (--kv-cache-dir)")
    p.add_argument("action", choices=["ls", "rm"])
    p.add_argument("keys", nargs="*", help="entries to remove (a unique key prefix is enough)")
    p.add_argument("--all", action="store_true", help="rm: remove every entry")
    p.add_argument(
        "--kv-cache-dir",
        type=Path,
        default=None,
        help="the directory (default: WARMLM_KV_CACHE_DIR)",
    )
    p.set_defaults(func=handler)


def run_cache(args: argparse.Namespace) -> int:
    directory = args.kv_cache_dir or _env_dir()
    if directory is None:
        print("warmlm: no KV cache directory (pass --kv-cache-dir or set WARMLM_KV_CACHE_DIR)")
        return 2
    entries = list_entries(directory)
    if args.action == "ls":
        print(f"{'KEY':40}  {'TOKENS':>7}  {'SIZE':>9}  LAST USED            MODEL")
        for e in sorted(entries, key=lambda e: -e.mtime):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.mtime))
            print(f"{e.key:40}  {e.n_tokens:7d}  {e.size / 1e6:8.1f}M  {when}  {e.fingerprint}")
        total = sum(e.size for e in entries)
        print(f"{len(entries)} entries, {total / 1e6:.1f} MB in {directory}")
        return 0
    if not args.all and not args.keys:
        print("warmlm: cache rm needs keys or --all")
        return 2
    chosen = entries if args.all else [e for e in entries if _wanted(e.key, args.keys)]
    for e in chosen:
        e.path.unlink(missing_ok=True)
    print(f"removed {len(chosen)} of {len(entries)} entries")
    return 0 if chosen or args.all else 1


def _wanted(key: str, prefixes: list[str]) -> bool:
    return any(p and key.startswith(p) for p in prefixes)


def _env_dir() -> Path | None:
    raw = os.environ.get("WARMLM_KV_CACHE_DIR")
    return Path(raw).expanduser() if raw else None
