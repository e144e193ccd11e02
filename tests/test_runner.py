"""The runner's llama.cpp parameters, and its interruptible decode (the rest of its decoding
is covered by the engine and e2e tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import llama_cpp
import numpy as np
import pytest

from tests.conftest import SMOLLM, installed, model_path
from warmlm.engine.runner import BatchToken, ModelRunner, context_params, model_params


def test_the_model_file_is_mapped_unless_asked_to_be_read() -> None:
    assert model_params(True).load_mode == llama_cpp.LLAMA_LOAD_MODE_MMAP
    assert model_params(False).load_mode == llama_cpp.LLAMA_LOAD_MODE_NONE


def test_only_real_fields_of_the_structure_are_set() -> None:
    # ctypes keeps an unknown attribute as a plain Python one: a renamed field would be ignored
    for mmap in (True, False):
        assert not vars(model_params(mmap)), vars(model_params(mmap))


def test_the_context_parameters_are_real_fields_and_keep_their_values() -> None:
    params = context_params(4096, 8, 512, 2)
    assert not vars(params), vars(params)
    assert (params.n_ctx, params.n_seq_max, params.n_batch, params.n_ubatch) == (4096, 8, 512, 512)
    assert (params.n_threads, params.n_threads_batch, params.kv_unified) == (2, 2, True)


def test_flash_attention_is_llama_cpps_choice_unless_forced() -> None:
    assert context_params(512, 1, 512, 2).flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
    on, off = (context_params(512, 1, 512, 2, mode).flash_attn_type for mode in ("on", "off"))
    assert (on, off) == (
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    )


@pytest.fixture(scope="module")
def smollm() -> Iterator[ModelRunner]:
    if not installed(SMOLLM):
        pytest.skip("SmolLM2 not installed")
    runner = ModelRunner(model_path(SMOLLM), n_ctx=2048, n_seq_max=2, n_batch=512, threads=2)
    yield runner
    runner.close()


def prefill(runner: ModelRunner, tokens: list[int], start: int = 0) -> list[BatchToken]:
    last = start + len(tokens) - 1
    return [BatchToken(t, start + i, 0, start + i == last) for i, t in enumerate(tokens)]


def test_an_interrupted_decode_leaves_the_kv_as_it_was(smollm: ModelRunner) -> None:
    smollm.clear()
    words = smollm.tokenize("The keeper logged every ship that passed the cape. " * 40, False)
    head, rest = words[:100], words[100:500]
    smollm.decode(prefill(smollm, head))
    smollm.interrupt()  # set before: the decode stops after its first graph node
    assert not smollm.decode_interruptible(prefill(smollm, rest, 100))
    assert smollm.seq_pos_max(0) == 99, "llama.cpp removed the interrupted batch's rows"

    def soon() -> None:
        time.sleep(0.02)
        smollm.interrupt()

    smollm.clear_interrupt()
    timer = threading.Thread(target=soon)
    timer.start()
    t0 = time.perf_counter()
    stopped = not smollm.decode_interruptible(prefill(smollm, rest, 100))
    timer.join()
    assert stopped and smollm.seq_pos_max(0) == 99, f"ran {time.perf_counter() - t0:.3f} s"

    smollm.clear_interrupt()
    assert smollm.decode_interruptible(prefill(smollm, rest[:8], 100))
    after = smollm.logits(7)
    smollm.seq_rm(0, 100, -1)
    smollm.decode(prefill(smollm, rest[:8], 100))  # plain decode, same batch: same numbers
    assert np.array_equal(after, smollm.logits(7))
