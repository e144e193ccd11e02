import pytest

from warmlm.tasks.chat import ChatTemplate, Message, TemplateRenderError

QWEN_LIKE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def test_chatml_fallback_when_model_has_no_template() -> None:
    t = ChatTemplate(None)
    text = t.render([Message("system", "S"), Message("user", "hi")])
    assert t.is_fallback
    assert (
        text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_model_template_renders_generation_prompt() -> None:
    text = ChatTemplate(QWEN_LIKE).render([Message("user", "你好")])
    assert text.endswith("<|im_start|>assistant\n") and "你好" in text


def test_raise_exception_becomes_render_error() -> None:
    t = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(TemplateRenderError, match="alternate"):
        t.render([Message("user", "x")])


def test_sandbox_blocks_attribute_escape() -> None:
    t = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateRenderError):
        t.render([Message("user", "x")])


def test_double_bos_is_stripped() -> None:
    t = ChatTemplate("{{ bos_token }}{{ messages[0].content }}", bos_token="<s>")
    assert t.strip_leading_bos(t.render([Message("user", "x")])) == "x"


def by_piece(text: str, add_special: bool) -> list[int]:
    """A stand-in tokenizer: `<|...|>` markers and single characters, one token each."""
    import re

    return [hash(piece) % 1000 for piece in re.findall(r"<\|[a-z_]+\|>|.", text, re.DOTALL)]


def test_the_next_turn_opener_is_what_follows_a_reply() -> None:
    opener = ChatTemplate(QWEN_LIKE).next_turn_opener(by_piece)
    assert opener == tuple(by_piece("<|im_end|>\n<|im_start|>user\n", False))


def test_no_opener_when_earlier_turns_render_differently_once_a_turn_follows() -> None:
    # like templates that drop earlier replies' reasoning: a reply renders otherwise once old
    earlier_marked = (
        "{%- for message in messages %}{{- message.role + ':' }}"
        "{%- if not loop.last %}{{- '[old]' }}{%- endif %}{{- message.content + '\\n' }}"
        "{%- endfor %}"
    )
    assert ChatTemplate(earlier_marked).next_turn_opener(by_piece) == ()
    assert ChatTemplate("{{ raise_exception('no') }}").next_turn_opener(by_piece) == ()


def test_no_opener_when_its_tokens_merge_with_the_next_message() -> None:
    def merging(text: str, add_special: bool) -> list[int]:
        return [len(text)]  # the whole text one token: nothing splits at the boundary

    assert ChatTemplate(QWEN_LIKE).next_turn_opener(merging) == ()
