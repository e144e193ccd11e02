"""Per-request llama.cpp sampler chains built from SamplingParams."""

from __future__ import annotations

import logging
import random
from typing import Any

import llama_cpp

from warmlm.engine.request import SamplingParams

log = logging.getLogger("warmlm.engine")


class Sampler:
    """A llama.cpp sampler chain; `sample` picks and accepts one token from a batch row."""

    def __init__(self, params: SamplingParams, n_vocab: int, vocab: Any = None) -> None:
        # Plain greedy needs no chain: an argmax over the logits row is enough, and it avoids
        # copying the whole vocabulary into a candidate array every step (~8x cheaper).
        self.argmax_only = params.greedy and _no_penalties(params) and params.grammar is None
        cparams = llama_cpp.llama_sampler_chain_default_params()
        cparams.no_perf = True
        self.chain: Any = llama_cpp.llama_sampler_chain_init(cparams)
        if params.grammar is not None:  # first: later stages only see grammar-valid tokens
            grammar = grammar_stage(vocab, params.grammar)
            if grammar is None:  # checked before admission (tasks.structured); never fatal here
                log.error("the grammar of a request failed to compile; sampling unconstrained")
            else:
                llama_cpp.llama_sampler_chain_add(self.chain, grammar)
        for stage in _stages(params, n_vocab):
            llama_cpp.llama_sampler_chain_add(self.chain, stage)

    def close(self) -> None:
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None

    def __del__(self) -> None:
        self.close()


def _no_penalties(p: SamplingParams) -> bool:
    return p.repeat_penalty == 1.0 and not p.frequency_penalty and not p.presence_penalty


def grammar_stage(vocab: Any, grammar: str) -> Any:
    """A llama.cpp grammar sampler for GBNF text (root rule `root`), or None if it does not
    compile. The caller owns it (add it to a chain, or `llama_sampler_free` it)."""
    if vocab is None:
        return None
    stage = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    return stage or None


def _stages(p: SamplingParams, n_vocab: int) -> list[Any]:
    stages = []
    if p.repeat_penalty != 1.0 or p.frequency_penalty or p.presence_penalty:
        stages.append(
            llama_cpp.llama_sampler_init_penalties(
                n_vocab, p.repeat_last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty
            )
        )
    if p.greedy:
        return [*stages, llama_cpp.llama_sampler_init_greedy()]
    if p.top_k > 0:
        stages.append(llama_cpp.llama_sampler_init_top_k(p.top_k))
    if p.top_p < 1.0:
        stages.append(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
    if p.min_p > 0.0:
        stages.append(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
    stages.append(llama_cpp.llama_sampler_init_temp(p.temperature))
    seed = p.seed if p.seed is not None else random.getrandbits(32)
    stages.append(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return stages
