"""The disk tier of saved KV states: private files, a byte cap, and a tolerant index."""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("warmlm.kvcache")

MAGIC = b"WARMLMKV"
VERSION = 1
HEADER = struct.Struct("<8sI32sIQI")  # magic, version, fingerprint, n_tokens, data_len, crc32
SUFFIX = ".kv"


@dataclass(frozen=True)
class DiskEntry:
    key: str
    path: Path
    n_tokens: int
    size: int
    mtime: float
    fingerprint: str


def read_header(path: Path) -> tuple[str, np.ndarray, int, int]:
    """(fingerprint, tokens, data_len, crc) of a state file; ValueError if it is not one."""
    with open(path, "rb") as f:
        raw = f.read(HEADER.size)
        if len(raw) != HEADER.size:
            raise ValueError("truncated header")
        magic, version, fp, n_tokens, data_len, crc = HEADER.unpack(raw)
        if magic != MAGIC or version != VERSION:
            raise ValueError("not a warmlm KV state file")
        tokens = np.frombuffer(f.read(4 * n_tokens), dtype=np.int32)
    if len(tokens) != n_tokens or path.stat().st_size != HEADER.size + 4 * n_tokens + data_len:
        raise ValueError("truncated file")
    return fp.rstrip(b"\0").decode("ascii", "replace"), tokens, data_len, crc


class DiskStore:
    """One file per saved sequence, `<key>.kv`, 0600 inside a 0700 directory."""

    def __init__(self, directory: Path, fingerprint: str, max_bytes: int) -> None:
        self.dir = directory
        self.fingerprint = fingerprint
        self.max_bytes = max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self._index: dict[str, np.ndarray] = {}
        for entry in list_entries(directory):
            if entry.fingerprint != fingerprint:
                continue
            try:
                self._index[entry.key] = read_header(entry.path)[1]
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable KV file %s: %s", entry.path.name, exc)

    def index(self) -> Iterator[tuple[str, np.ndarray]]:
        yield from list(self._index.items())

    @property
    def used_bytes(self) -> int:
        return sum(e.size for e in list_entries(self.dir))

    def write(self, key: str, tokens: np.ndarray, data: bytes) -> None:
        header = HEADER.pack(
            MAGIC,
            VERSION,
            self.fingerprint.encode("ascii"),
            len(tokens),
            len(data),
            zlib.crc32(data),
        )
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:  # mkstemp creates the file 0600
                f.write(header)
                f.write(tokens.astype(np.int32).tobytes())
                f.write(data)
            os.replace(tmp, self.dir / f"{key}{SUFFIX}")
        except OSError as exc:
            log.warning("could not write KV state to disk: %s", exc)
            Path(tmp).unlink(missing_ok=True)
            return
        self._index[key] = tokens
        self._enforce_cap()

    def read(self, key: str) -> bytes | None:
        path = self.dir / f"{key}{SUFFIX}"
        try:
            fp, tokens, data_len, crc = read_header(path)
            with open(path, "rb") as f:
                f.seek(HEADER.size + 4 * len(tokens))
                data = f.read(data_len)
            if fp != self.fingerprint or zlib.crc32(data) != crc:
                raise ValueError("checksum or model mismatch")
            os.utime(path)
            return data
        except (OSError, ValueError) as exc:
            log.warning("ignoring corrupt KV file %s: %s", path.name, exc)
            self._index.pop(key, None)
            return None

    def _enforce_cap(self) -> None:
        entries = sorted(list_entries(self.dir), key=lambda e: e.mtime)
        total = sum(e.size for e in entries)
        for e in entries:
            if total <= self.max_bytes:
                break
            e.path.unlink(missing_ok=True)
            self._index.pop(e.key, None)
            total -= e.size


def list_entries(directory: Path) -> list[DiskEntry]:
    """Every state file in `directory` (any model), for `warmlm cache ls`."""
    out = []
    for path in sorted(directory.glob(f"*{SUFFIX}")) if directory.is_dir() else []:
        if path.name.startswith(".tmp-"):
            continue
        try:
            st = path.stat()
            with open(path, "rb") as f:
                magic, version, fp, n_tokens, _, _ = HEADER.unpack(f.read(HEADER.size))
        except (OSError, struct.error):
            continue
        if magic == MAGIC:
            out.append(
                DiskEntry(
                    path.stem,
                    path,
                    n_tokens,
                    st.st_size,
                    st.st_mtime,
                    fp.rstrip(b"\0").decode("ascii", "replace"),
                )
            )
    return out
