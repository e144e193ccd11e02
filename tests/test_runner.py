"""The runner's llama.cpp parameters (its decoding is covered by the engine and e2e tests)."""

from __future__ import annotations

import llama_cpp

from warmlm.engine.runner import context_params, model_params


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
