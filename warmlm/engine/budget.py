"""How many prompt tokens a step may carry while other sequences are decoding."""

from __future__ import annotations


class PrefillBudget:
    """Sizes prompt chunks so that a step with prefill lasts about `ratio` × a decode-only step.

    Step time is modelled as `decode_s + n_prefill × per_token_s`, both learned online as
    exponential moving averages of measured steps. Running streams then see inter-token
    latency grow by at most `ratio` while a long prompt is admitted, and the prompt still
    makes steady progress.
    """

    def __init__(
        self,
        ratio: float,
        min_chunk: int,
        max_chunk: int,
        alpha: float = 0.2,
        start_chunk: int | None = None,
    ) -> None:
        assert ratio > 1.0 and 0 < min_chunk <= max_chunk
        self.ratio = ratio
        self.min_chunk = min_chunk
        self.max_chunk = max_chunk
        self.alpha = alpha
        # the chunk until a decode-only step has been measured
        self.start_chunk = min_chunk if start_chunk is None else min(start_chunk, max_chunk)
        self.decode_s: float | None = None
        self.per_token_s = 1 / 250  # a CPU prefill rate; replaced by measurements

    def record(self, seconds: float, n_decode: int, n_prefill: int) -> None:
        if n_prefill == 0 and n_decode > 0:
            self.decode_s = self._ema(self.decode_s, seconds)
        elif n_prefill > 0:
            base = self.decode_s if (n_decode and self.decode_s is not None) else 0.0
            if seconds > base:
                self.per_token_s = self._ema(self.per_token_s, (seconds - base) / n_prefill)

    def chunk(self) -> int:
        """Prompt tokens allowed in a step that also carries decode tokens."""
        if self.decode_s is None:
            return self.start_chunk
        n = int((self.ratio - 1.0) * self.decode_s / self.per_token_s)
        return max(self.min_chunk, min(self.max_chunk, n))

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.alpha * (new - old)
