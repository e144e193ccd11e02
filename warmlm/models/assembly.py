"""Find a model's chunks in installed distributions and assemble them once into the cache.

The assembled file is written to a temp file in the same directory while being hashed, checked
against the registry's size and sha256, fsynced and atomically renamed into place. A sidecar
`<file>.verified` marker (sha256, size, mtime_ns) lets later starts skip re-hashing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from warmlm.models.errors import DiskFullError, IntegrityError, ModelError
from warmlm.models.locate import (
    check_chunk_size,
    chunk_label,
    locate_chunks,
    locate_single_file,
    reinstall_hint,
)
from warmlm.models.registry import ModelSpec

BLOCK = 8 << 20
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def assembled_path(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where a chunked model lives once assembled."""
    return Path(cache_dir) / "models" / spec.filename


def marker_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def is_assembled(spec: ModelSpec, cache_dir: Path) -> bool:
    """Cheap check (two stats and a tiny read): assembled, verified and unchanged since."""
    return _marker_ok(assembled_path(spec, cache_dir), spec)


def ensure_model(spec: ModelSpec, cache_dir: Path, progress: bool = True) -> Path:
    """Path of a ready-to-load GGUF for `spec`, assembling it on first use."""
    if spec.single_file:
        return locate_single_file(spec)
    target = assembled_path(spec, cache_dir)
    if _marker_ok(target, spec):
        return target
    with _locked(target):
        if _marker_ok(target, spec):  # another process finished while we waited
            return target
        if _existing_file_ok(target, spec):
            return target
        _sweep_stale_temps(target)
        assemble(spec, locate_chunks(spec), target, progress)
    return target


def assemble(spec: ModelSpec, chunks: list[Path], target: Path, progress: bool = True) -> None:
    """Concatenate `chunks` into `target` atomically, verifying every chunk on the way."""
    assert len(chunks) == len(spec.chunks)
    for chunk, path in zip(spec.chunks, chunks, strict=True):
        check_chunk_size(chunk, path, spec)
    if shutil.disk_usage(target.parent).free < spec.size:
        raise _disk_full(spec, target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # mkstemp creates 0600; the model is not a secret
            _copy_chunks(spec, chunks, out, progress)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in _DISK_FULL:
            raise _disk_full(spec, target) from exc
        raise ModelError(f"cannot assemble {spec.name} into {target}: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    _write_marker(target, spec)


def _copy_chunks(spec: ModelSpec, chunks: list[Path], out: IO[bytes], progress: bool) -> None:
    whole = hashlib.sha256()
    with _progress_bar(spec, enabled=progress and sys.stderr.isatty()) as bar:
        for chunk, path in zip(spec.chunks, chunks, strict=True):
            digest = hashlib.sha256()
            for block in _read_blocks(path):
                _write_all(out, block)
                digest.update(block)
                whole.update(block)
                bar.update(len(block))
            if digest.hexdigest() != chunk.sha256:
                hint = reinstall_hint(spec, chunk)
                raise IntegrityError(f"{chunk_label(chunk)} is corrupted (sha256 mismatch); {hint}")
    if whole.hexdigest() != spec.sha256:
        raise IntegrityError(f"assembled {spec.name} has the wrong sha256; {reinstall_hint(spec)}")


def _progress_bar(spec: ModelSpec, enabled: bool) -> Any:
    from tqdm import tqdm  # ~80 ms to import; only needed on the slow path

    term = shutil.get_terminal_size()  # tqdm draws nothing on a pty that reports 0x0
    return tqdm(
        total=spec.size,
        desc=f"assembling {spec.name}",
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        disable=not enabled,
        ncols=term.columns,
        nrows=term.lines,
    )


def _read_blocks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            yield block


def _write_all(out: IO[bytes], block: bytes) -> None:
    out.write(block)


def _disk_full(spec: ModelSpec, target: Path) -> DiskFullError:
    need = -(-spec.size // 1_000_000)
    return DiskFullError(f"disk full while writing {target} (need {need} MB free)")


def _marker_ok(target: Path, spec: ModelSpec) -> bool:
    try:
        st = target.stat()
        marker = json.loads(marker_path(target).read_text())
    except (OSError, ValueError):
        return False
    expected = {"sha256": spec.sha256, "size": spec.size, "mtime_ns": st.st_mtime_ns}
    return st.st_size == spec.size and marker == expected


def _write_marker(target: Path, spec: ModelSpec) -> None:
    """Best effort: without a marker the next start merely re-hashes the file."""
    marker = marker_path(target)
    tmp = marker.with_name(marker.name + ".tmp")
    try:
        data = {"sha256": spec.sha256, "size": spec.size, "mtime_ns": target.stat().st_mtime_ns}
        tmp.write_text(json.dumps(data))
        os.replace(tmp, marker)
    except OSError:
        tmp.unlink(missing_ok=True)


def _existing_file_ok(target: Path, spec: ModelSpec) -> bool:
    """A file without a valid marker (copied in, or marker lost): hash it once."""
    try:
        if target.stat().st_size == spec.size and _sha256_file(target) == spec.sha256:
            _write_marker(target, spec)
            return True
        target.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ModelError(f"cannot replace {target}: {exc.strerror or exc}") from exc
    return False


def _sweep_stale_temps(target: Path) -> None:
    """Remove temp files left by a killed assembler (we hold the lock, so none is live)."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    for block in _read_blocks(path):
        digest.update(block)
    return digest.hexdigest()


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Serialize assembly of one file across processes (two servers starting at once)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = open(target.with_name(f".{target.name}.lock"), "a+b")  # noqa: SIM115
    except OSError as exc:
        raise ModelError(f"cannot write to model cache {target.parent}: {exc}") from exc
    with lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
