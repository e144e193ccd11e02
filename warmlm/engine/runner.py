"""The model runner: one llama.cpp model and context, driven through the low-level C API."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from warmlm.config import EngineConfig
from warmlm.engine.llamalog import silenced
from warmlm.engine.request import SamplingParams
from warmlm.engine.sampler import Sampler
from warmlm.models.ggml_types import file_type_name
from warmlm.models.gguf import read_gguf_info


class EngineFailure(RuntimeError):
    """llama.cpp could not load the model or failed to decode a batch."""


# An interruptible decode's abort callback, called by ggml after every graph node on a compute
# thread: libc's `strlen` over a one-byte flag, so no call needs the GIL (a Python callback
# would wait for it, up to the 5 ms switch interval, while the event loop parses a request).
# It returns 0 or 1, which the caller reads as the bool it expects (engine/llamalog.py plays
# the same trick with `abs`).
_ABORT_IF_FLAGGED = ctypes.cast(ctypes.CDLL(None).strlen, llama_cpp.ggml_abort_callback)
_NO_ABORT = llama_cpp.ggml_abort_callback()  # NULL: decodes cannot be aborted
LLAMA_NO_KV_SLOT = 1  # llama_decode found no room for the batch; nothing was changed
LLAMA_ABORTED = 2  # llama_decode's code for an aborted batch (its KV rows are removed again)


def model_params(mmap: bool) -> Any:
    """llama.cpp's model parameters: the file mapped (the default), or read into memory."""
    params = llama_cpp.llama_model_default_params()
    # Mapped, a load here is ~0.6 s, nearly all of it building the 151k-token vocabulary;
    # read into memory, 0.95-1.2 s. (A ctypes structure takes any attribute name silently:
    # `load_mode` is the field of llama-cpp-python 0.3.36, `use_mmap` is not one.)
    params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
    return params


FLASH_ATTN_TYPES = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


def context_params(
    n_ctx: int, n_seq_max: int, n_batch: int, threads: int, flash_attn: str = "auto"
) -> Any:
    """One context: a unified KV cache of n_ctx cells shared by up to n_seq_max sequences."""
    cparams = llama_cpp.llama_context_default_params()
    cparams.flash_attn_type = FLASH_ATTN_TYPES[flash_attn]
    cparams.n_ctx = n_ctx
    cparams.n_batch = n_batch
    cparams.n_ubatch = n_batch
    cparams.n_seq_max = n_seq_max
    cparams.n_threads = threads
    cparams.n_threads_batch = threads
    cparams.kv_unified = True
    cparams.no_perf = True
    return cparams


def _load_model(path: Path, mmap: bool) -> Any:
    """The llama.cpp model of `path`, loaded silently (engine/llamalog.py); a failure is
    explained by our GGUF reader when it finds the file malformed, else by llama.cpp's log."""
    params = model_params(mmap)
    with silenced():
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        read_gguf_info(path)  # raises NotAGGUFError naming the problem, if it finds one
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)  # logged
    if not model:
        raise EngineFailure(f"llama.cpp could not load {path}")
    return model


@dataclass(frozen=True)
class BatchToken:
    token: int
    pos: int
    seq_id: int
    logits: bool


class ModelRunner:
    """Owns the llama.cpp model, context and batch. Built on any thread (`warmlm serve` loads
    it on the startup thread); every call after that happens on the engine thread."""

    def __init__(
        self,
        model_path: Path,
        n_ctx: int,
        n_seq_max: int,
        n_batch: int,
        threads: int,
        mmap: bool = True,
        flash_attn: str = "auto",
    ) -> None:
        llama_cpp.llama_backend_init()
        self.model = _load_model(model_path, mmap)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self.model)
        self.ctx = self._new_context(context_params(n_ctx, n_seq_max, n_batch, threads, flash_attn))
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx)
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._abort_flag = ctypes.create_string_buffer(2)
        self._pieces: dict[int, bytes] = {}
        self._prompt_pieces: dict[int, bytes] = {}

    @classmethod
    def from_config(cls, config: EngineConfig) -> ModelRunner:
        return cls(
            config.model_path,
            config.n_ctx,
            config.n_seq_max,
            config.max_batch_tokens,
            config.threads,
            config.mmap,
            config.flash_attn,
        )

    def _new_context(self, cparams: Any) -> Any:
        with silenced():
            ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not ctx:
            ctx = llama_cpp.llama_init_from_model(self.model, cparams)  # again, logged
        if not ctx:
            llama_cpp.llama_model_free(self.model)
            raise EngineFailure(f"llama.cpp could not create a context of {cparams.n_ctx} tokens")
        return ctx

    # -- tokens ---------------------------------------------------------------------------
    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        return self._tokenize(text.encode("utf-8", "surrogatepass"), add_special, parse_special)

    def tokenize_bytes(self, data: bytes) -> list[int]:
        """Tokens of raw prompt bytes: special tokens parsed, no BOS (a prompt's continuation)."""
        return self._tokenize(data, False, True)

    def _tokenize(self, data: bytes, add_special: bool, parse_special: bool) -> list[int]:
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(
            self.vocab, data, len(data), buf, cap, add_special, parse_special
        )
        if n < 0:
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), buf, cap, add_special, parse_special
            )
        return list(buf[:n])

    def prompt_piece(self, token: int) -> bytes:
        """The bytes of one token as it appears in a prompt (special tokens rendered)."""
        cached = self._prompt_pieces.get(token)
        if cached is None:
            cached = self._prompt_pieces[token] = self._piece(token, special=True)
        return cached

    def piece(self, token: int) -> bytes:
        """The bytes of one token as it appears in generated text (special tokens render empty)."""
        cached = self._pieces.get(token)
        if cached is None:
            cached = self._pieces[token] = self._piece(token, special=False)
        return cached

    def _piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
        return bytes(buf.raw[:n])

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, token: int) -> str:
        raw = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    def special_tokens(self) -> dict[str, str]:
        """BOS/EOS texts for chat templates that mention them."""
        bos = llama_cpp.llama_vocab_bos(self.vocab)
        eos = llama_cpp.llama_vocab_eos(self.vocab)
        return {
            "bos_token": self.token_text(bos) if bos >= 0 else "",
            "eos_token": self.token_text(eos) if eos >= 0 else "",
        }

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as llama.cpp read it (None when absent)."""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    @property
    def quantization(self) -> str | None:
        """The file type ("Q4_K_M"), from the metadata llama.cpp already parsed."""
        raw = self.meta("general.file_type")
        return file_type_name(int(raw)) if raw is not None and raw.isdigit() else None

    def chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8") if raw else None

    # -- decoding -------------------------------------------------------------------------
    def decode(self, tokens: list[BatchToken]) -> None:
        """One llama_decode over the given tokens; raises EngineFailure on any error."""
        rc = self._decode(tokens)
        if rc != 0:
            raise EngineFailure(f"llama_decode failed with code {rc} on {len(tokens)} tokens")

    def decode_interruptible(self, tokens: list[BatchToken]) -> bool:
        """A decode that `interrupt` (from any thread) stops within one graph node; False if
        it was stopped, with the batch's KV rows removed again by llama.cpp, or found no room
        in the KV. An interrupt stays set, stopping later interruptible decodes too, until
        `clear_interrupt`."""
        llama_cpp.llama_set_abort_callback(
            self.ctx, _ABORT_IF_FLAGGED, ctypes.cast(self._abort_flag, ctypes.c_void_p)
        )
        try:
            with silenced():  # llama.cpp logs an aborted batch as a failed one
                rc = self._decode(tokens)
        finally:
            llama_cpp.llama_set_abort_callback(self.ctx, _NO_ABORT, None)
        if rc not in (0, LLAMA_NO_KV_SLOT, LLAMA_ABORTED):
            raise EngineFailure(f"llama_decode failed with code {rc} on {len(tokens)} tokens")
        return rc == 0

    def interrupt(self) -> None:
        """Stop the running `decode_interruptible`, or the next one to start."""
        self._abort_flag[0] = b"\x01"

    def clear_interrupt(self) -> None:
        self._abort_flag[0] = b"\x00"

    def _decode(self, tokens: list[BatchToken]) -> int:
        assert 0 < len(tokens) <= self.n_batch, "the scheduler respects the batch size"
        b = self._batch
        for i, t in enumerate(tokens):
            b.token[i] = t.token
            b.pos[i] = t.pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = t.seq_id
            b.logits[i] = t.logits
        b.n_tokens = len(tokens)
        return int(llama_cpp.llama_decode(self.ctx, b))

    def logits(self, index: int) -> np.ndarray:
        """A copy of the logits of batch token `index` of the last decode."""
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def make_sampler(self, params: SamplingParams) -> Sampler:
        return Sampler(params, self.n_vocab, self.vocab)

    def sample(self, sampler: Sampler, index: int) -> int:
        """Pick (and accept) the next token from batch row `index` of the last decode."""
        if sampler.argmax_only:
            ptr = llama_cpp.llama_get_logits_ith(self.ctx, index)
            return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())
        return int(llama_cpp.llama_sampler_sample(sampler.chain, self.ctx, index))

    # -- KV memory ------------------------------------------------------------------------
    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> None:
        llama_cpp.llama_memory_seq_rm(self.mem, seq_id, p0, p1)

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        llama_cpp.llama_memory_seq_cp(self.mem, src, dst, p0, p1)

    def seq_pos_max(self, seq_id: int) -> int:
        return int(llama_cpp.llama_memory_seq_pos_max(self.mem, seq_id))

    def state_get(self, seq_id: int) -> bytes:
        """A copy of one sequence's KV state (positions and K/V rows), for the host tiers."""
        size = llama_cpp.llama_state_seq_get_size(self.ctx, seq_id)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(self.ctx, buf, size, seq_id)
        return bytes(memoryview(buf)[:n])

    def state_set(self, seq_id: int, data: bytes) -> bool:
        """Load a saved state into an empty sequence; False if llama.cpp rejects it."""
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return bool(llama_cpp.llama_state_seq_set_data(self.ctx, buf, len(data), seq_id))

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.mem, True)

    def close(self) -> None:
        if self.ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self.ctx)
            llama_cpp.llama_model_free(self.model)
            self.ctx = None
