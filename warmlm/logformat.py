"""Log line formats: human text with control characters escaped, or one JSON object per line.

Light on purpose (standard library only): `warmlm serve` sets the format before the model
starts loading, ahead of the HTTP stack's imports (warmlm/cli.py).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def sanitize(text: str) -> str:
    """Escape control characters (CR, LF, NEL, U+2028, ...) so a value stays on one line."""
    return _CONTROL.sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    code = ord(m[0])
    return _ESCAPES.get(m[0]) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _logfmt_value(value: object) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if text and not re.search(r'[\s"=\\]|[^\x21-\x7e]', text):
        return text
    return '"' + sanitize(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def logfmt(fields: Mapping[str, object]) -> str:
    return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items() if v is not None)


class SafeTextFormatter(logging.Formatter):
    """The usual text format, with control characters in the message escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = sanitize(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; request lines carry their fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "warmlm_fields", None)
        if isinstance(fields, dict):
            body["msg"] = "request"
            body.update({k: sanitize(v) if isinstance(v, str) else v for k, v in fields.items()})
        else:
            body["msg"] = record.getMessage()
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=True, default=str)


def set_log_format(fmt: str, logger: logging.Logger | None = None) -> None:
    """Put the `text` or `json` formatter on the logger's handlers (root by default)."""
    target = logger or logging.getLogger()
    if not target.handlers:
        target.addHandler(logging.StreamHandler(sys.stderr))
    formatter = JsonFormatter() if fmt == "json" else SafeTextFormatter(TEXT_FORMAT)
    for handler in target.handlers:
        handler.setFormatter(formatter)
