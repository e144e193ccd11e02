"""A scripted stand-in for ModelRunner, so engine and scheduler tests need no model."""

from __future__ import annotations

from dataclasses import dataclass, field

from warmlm.engine.request import SamplingParams
from warmlm.engine.runner import BatchToken

EOS = 0


@dataclass
class FakeSampler:
    script: list[int]
    pos: int = 0
    closed: bool = False

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeRunner:
    """Every sequence generates `script` (token ids; piece of id t is chr(ord('a') + t - 1))."""

    script: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    n_ctx: int = 4096
    n_batch: int = 512
    n_vocab: int = 32
    n_seq_max: int = 8
    batches: list[list[BatchToken]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    samplers: list[FakeSampler] = field(default_factory=list)
    copies: list[tuple[int, int, int]] = field(default_factory=list)
    restored: list[tuple[int, bytes]] = field(default_factory=list)
    idle_batches: list[list[BatchToken]] = field(default_factory=list)
    interrupted: bool = False

    def decode(self, tokens: list[BatchToken]) -> None:
        assert 0 < len(tokens) <= self.n_batch
        self.batches.append(list(tokens))

    def decode_interruptible(self, tokens: list[BatchToken]) -> bool:
        assert 0 < len(tokens) <= self.n_batch
        self.idle_batches.append(list(tokens))
        return not self.interrupted

    def interrupt(self) -> None:
        self.interrupted = True

    def clear_interrupt(self) -> None:
        self.interrupted = False

    def make_sampler(self, params: SamplingParams) -> FakeSampler:
        s = FakeSampler(list(self.script))
        self.samplers.append(s)
        return s

    def sample(self, sampler: FakeSampler, index: int) -> int:
        assert self.batches[-1][index].logits, "sampled rows must request logits"
        tok = sampler.script[sampler.pos] if sampler.pos < len(sampler.script) else EOS
        sampler.pos += 1
        return tok

    def piece(self, token: int) -> bytes:
        return chr(ord("a") + token - 1).encode() if token else b""

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> None:
        if p0 <= 0:
            self.removed.append(seq_id)

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        self.copies.append((src, dst, p1))

    def state_get(self, seq_id: int) -> bytes:
        return f"state-{seq_id}".encode()

    def state_set(self, seq_id: int, data: bytes) -> bool:
        self.restored.append((seq_id, data))
        return True


@dataclass
class FakeTextRunner(FakeRunner):
    """A FakeRunner that also tokenizes text (one token per character) for service tests."""

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        return [1 + ord(ch) % (self.n_vocab - 1) for ch in text]

    def chat_template(self) -> None:
        return None

    def special_tokens(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass
