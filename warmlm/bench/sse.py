"""A line-fed parser of server-sent events (the `text/event-stream` framing of streamed replies)."""

from __future__ import annotations

from dataclasses import dataclass, field

DONE = "[DONE]"


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its `event:` name (default "message") and its joined `data:` lines."""

    data: str
    event: str = "message"

    @property
    def done(self) -> bool:
        return self.data.strip() == DONE


@dataclass
class SSEParser:
    """Feed it lines without their newline; it returns an event each time a blank line ends one."""

    _data: list[str] = field(default_factory=list)
    _event: str = ""

    def feed(self, line: str) -> SSEEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def close(self) -> SSEEvent | None:
        """The last event when the stream ended without its closing blank line."""
        return self._dispatch()

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent("\n".join(self._data), self._event or "message")
        self._data = []
        self._event = ""
        return event
