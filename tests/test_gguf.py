"""GGUF header reading: fields, endianness, agreement with the `gguf` package, bad files."""

from __future__ import annotations

import time
from pathlib import Path

import gguf
import pytest

from tests.fake_models import TEMPLATE, smollm2_path, write_gguf
from warmlm.models.errors import ModelError, NotAGGUFError
from warmlm.models.ggml_types import FILE_TYPES, QUANT_SIZES, file_type_name, tensor_nbytes
from warmlm.models.gguf import check_gguf, is_gguf, read_gguf_info


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
def test_reads_fields(tmp_path: Path, big_endian: bool) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", big_endian=big_endian))
    assert info.architecture == "llama"
    assert info.name == "Fake Tiny"
    assert info.parameters == 4 * 8 + 3
    assert info.context_length == 2048
    assert info.quantization == "Q4_K_M"
    assert info.chat_template == TEMPLATE
    assert (info.bos_token_id, info.eos_token_id) == (1, 2)
    assert (info.version, info.tensor_count) == (3, 2)
    assert info.metadata["llama.context_length"] == 2048
    assert "tokenizer.ggml.tokens" not in info.metadata  # arrays are skipped


def test_agrees_with_gguf_reader(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    reader = gguf.GGUFReader(str(path))
    info = read_gguf_info(path)
    assert info.parameters == sum(int(t.n_elements) for t in reader.tensors)
    assert info.tensor_count == len(reader.tensors)
    assert info.chat_template == reader.fields["tokenizer.chat_template"].contents()


def test_tables_match_the_gguf_package() -> None:
    for number, name in FILE_TYPES.items():
        assert gguf.LlamaFileType(number).name.removeprefix("MOSTLY_") in (name, "ALL_F32")
    for number, sizes in QUANT_SIZES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(number)] == sizes


def test_table_helpers() -> None:
    assert file_type_name(15) == "Q4_K_M"
    assert file_type_name(None) is None
    assert file_type_name(9999) == "type 9999"
    assert tensor_nbytes(12, 512) == 2 * 144  # Q4_K: 256 elements per 144-byte block
    assert tensor_nbytes(9999, 10) is None


def test_is_gguf(tmp_path: Path) -> None:
    assert is_gguf(write_gguf(tmp_path / "m.gguf"))
    (tmp_path / "x.bin").write_bytes(b"GGML....")
    assert not is_gguf(tmp_path / "x.bin")
    assert not is_gguf(tmp_path / "missing.gguf")


def _assert_rejected(path: Path, reason: str) -> None:
    with pytest.raises(NotAGGUFError) as info:
        read_gguf_info(path)
    message = str(info.value)
    assert isinstance(info.value, ModelError)
    assert str(path) in message and reason in message and "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    _assert_rejected(tmp_path / "nope.gguf", "no such file")


def test_directory(tmp_path: Path) -> None:
    _assert_rejected(tmp_path, "not a regular file")


def test_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    _assert_rejected(path, "bad magic")
    with pytest.raises(NotAGGUFError):
        check_gguf(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    _assert_rejected(path, "bad magic")


def test_unsupported_version(tmp_path: Path) -> None:
    path = tmp_path / "v9.gguf"
    path.write_bytes(b"GGUF" + (9).to_bytes(4, "little") + b"\0" * 16)
    _assert_rejected(path, "unsupported GGUF version 9")


@pytest.mark.parametrize("keep", [6, 24, 120, 400])
def test_truncated_header(tmp_path: Path, keep: int) -> None:
    data = write_gguf(tmp_path / "full.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])
    _assert_rejected(path, "truncated")


def test_truncated_tensor_data(tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "full.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:-28])  # the last tensor: 12 bytes + 20 bytes of alignment padding
    _assert_rejected(path, "truncated")
    assert read_gguf_info(path, check_data=False).parameters == 35  # header alone is fine


def test_garbage_after_magic(tmp_path: Path) -> None:
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 64)
    with pytest.raises(NotAGGUFError):
        read_gguf_info(path)


def test_real_smollm2_metadata() -> None:
    path = smollm2_path()
    start = time.perf_counter()
    info = read_gguf_info(path)
    elapsed = time.perf_counter() - start
    assert info.architecture == "llama"
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert info.quantization == "Q4_1"
    assert info.context_length == 8192
    assert 130e6 < info.parameters < 140e6
    assert (info.bos_token_id, info.eos_token_id) == (1, 2)
    assert elapsed < 0.5, f"reading the header took {elapsed:.2f}s"
