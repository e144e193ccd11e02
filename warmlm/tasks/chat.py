"""Chat prompts: the model's own Jinja chat template, rendered in a sandbox."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ROLES = ("system", "user", "assistant")
# stand-ins for a reply and a question, to find what the template writes between the two
_REPLY, _QUESTION = "WarmlmReplyMarker", "WarmlmQuestionMarker"


class TemplateRenderError(ValueError):
    """The chat template refused the conversation (e.g. roles out of order)."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str


def _raise(message: str) -> None:
    raise TemplateRenderError(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


class ChatTemplate:
    """Renders a conversation into the prompt text the model was trained on."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source or CHATML
        self.is_fallback = source is None
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = _tojson
        self._template = env.from_string(self.source)
        self._specials = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        payload = [{"role": m.role, "content": m.content} for m in messages]
        try:
            return self._template.render(
                messages=payload,
                add_generation_prompt=add_generation_prompt,
                tools=None,
                **self._specials,
            )
        except TemplateRenderError:
            raise
        except TemplateError as exc:
            raise TemplateRenderError(f"the chat template failed: {exc}") from exc

    def next_turn_opener(self, tokenize: Callable[[str, bool], list[int]]) -> tuple[int, ...]:
        """The tokens a template writes between an assistant reply and the next user message
        (ChatML: `<|im_end|>\\n<|im_start|>user\\n`), as they tokenize inside a conversation;
        empty if the earlier turns render differently once a turn follows them, or the tokens
        merge across the boundary. `tokenize(text, add_special)` parses special tokens."""
        first = [Message("user", "Hi"), Message("assistant", _REPLY)]
        try:
            before = self.render(first, add_generation_prompt=False)
            after = self.render([*first, Message("user", _QUESTION)])
        except TemplateRenderError:
            return ()
        end = before.find(_REPLY) + len(_REPLY)
        if end < len(_REPLY) or after[:end] != before[:end] or after.count(_QUESTION) != 1:
            return ()
        head = tokenize(self.strip_leading_bos(before[:end]), True)
        opener = tokenize(after[end : after.index(_QUESTION)], False)
        whole = tokenize(self.strip_leading_bos(after), True)
        if whole[: len(head) + len(opener)] != head + opener:
            return ()
        return tuple(opener)

    def strip_leading_bos(self, text: str) -> str:
        """Templates that print the BOS token would double it once the tokenizer adds its own."""
        bos = self._specials["bos_token"]
        return text[len(bos) :] if bos and text.startswith(bos) else text
