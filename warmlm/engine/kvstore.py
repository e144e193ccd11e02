"""Host tiers for evicted KV: a RAM tier with a byte budget, and an opt-in private disk tier."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from warmlm.engine.diskstore import DiskStore

log = logging.getLogger("warmlm.kvcache")


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two token arrays."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def tokens_key(fingerprint: str, tokens: np.ndarray) -> str:
    h = hashlib.sha256(fingerprint.encode())
    h.update(tokens.astype(np.int32).tobytes())
    return h.hexdigest()[:40]


@dataclass
class Entry:
    key: str
    tokens: np.ndarray
    data: bytes | None  # None: on disk only

    @property
    def nbytes(self) -> int:
        return len(self.data) if self.data is not None else 0


class KVStore:
    """Saved sequence states keyed by (model fingerprint, token prefix), least recently used first.

    RAM holds up to `ram_bytes`; with a disk directory, every saved state is also written
    there (so it survives a restart) and the directory is kept under `disk_bytes`.
    """

    def __init__(
        self, fingerprint: str, ram_bytes: int, disk_dir: Path | None = None, disk_bytes: int = 0
    ) -> None:
        self.fingerprint = fingerprint
        self.ram_bytes = ram_bytes
        self._ram: OrderedDict[str, Entry] = OrderedDict()
        self.disk = DiskStore(disk_dir, fingerprint, disk_bytes) if disk_dir else None
        self.ram_used = 0

    def put(self, tokens: list[int], data: bytes) -> None:
        arr = np.asarray(tokens, dtype=np.int32)
        key = tokens_key(self.fingerprint, arr)
        self._drop(key)
        if self.disk is not None:
            self.disk.write(key, arr, data)
        if len(data) <= self.ram_bytes:
            self._ram[key] = Entry(key, arr, data)
            self.ram_used += len(data)
            while self.ram_used > self.ram_bytes:
                self._drop(next(iter(self._ram)))

    def best_match(self, prompt: np.ndarray) -> tuple[Entry | None, int]:
        """The saved state sharing the longest token prefix with `prompt`."""
        best: Entry | None = None
        best_len = 0
        for entry in self._ram.values():
            n = common_prefix(entry.tokens, prompt)
            if n > best_len:
                best, best_len = entry, n
        if self.disk is not None:
            for key, tokens in self.disk.index():
                n = common_prefix(tokens, prompt)
                if n > best_len and key not in self._ram:
                    best, best_len = Entry(key, tokens, None), n
        return best, best_len

    def load(self, entry: Entry) -> bytes | None:
        """The state's bytes, taking it out of RAM (it goes back into KV); None if unreadable."""
        if entry.key in self._ram:
            self._ram.move_to_end(entry.key)
            data = self._ram[entry.key].data
            self._drop(entry.key)
            return data
        return self.disk.read(entry.key) if self.disk is not None else None

    def _drop(self, key: str) -> None:
        entry = self._ram.pop(key, None)
        if entry is not None:
            self.ram_used -= entry.nbytes

    @property
    def ram_entries(self) -> int:
        return len(self._ram)


def model_fingerprint(path: Path) -> str:
    """Identifies a model file cheaply: size plus hashes of its first and last MiB."""
    h = hashlib.sha256()
    try:
        size = path.stat().st_size
        h.update(str(size).encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
    except OSError:  # not a readable file (a test double): its name is all we have
        h.update(str(path).encode())
    return h.hexdigest()[:32]


def private_dir(path: Path) -> Path:
    """Create (or tighten) a directory only the server's user can read: 0700."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
