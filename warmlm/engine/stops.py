"""Stop strings matched on the text stream, never leaking a partial match."""

from __future__ import annotations


class StopMatcher:
    """Holds back any tail of the stream that could be the start of a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        assert all(stops), "stop strings are validated non-empty upstream"
        self._stops = stops
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text safe to emit now; sets `stopped` when a stop string appears."""
        if not self._stops:
            return text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            self.stopped = True
            return buf[:cut]
        keep = self._partial_tail(buf)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """End of stream without a stop: the held tail was not a stop after all."""
        held, self._held = self._held, ""
        return held

    def _partial_tail(self, buf: str) -> int:
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:k]):
                    best = k
                    break
        return best
