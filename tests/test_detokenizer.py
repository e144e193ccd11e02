from warmlm.engine.detokenizer import Detokenizer

PIECES = {
    1: "你".encode()[:2],
    2: "你".encode()[2:] + b"!",
    3: "😀".encode()[:1],
    4: "😀".encode()[1:],
    5: b"ok",
}


def piece(token: int) -> bytes:
    return PIECES[token]


def test_holds_back_incomplete_chinese_character() -> None:
    d = Detokenizer(piece)
    assert d.feed(1) == ""
    assert d.feed(2) == "你!"


def test_emoji_split_over_tokens() -> None:
    d = Detokenizer(piece)
    assert d.feed(3) == ""
    assert d.feed(4) == "😀"


def test_flush_drops_a_character_cut_by_max_tokens() -> None:
    d = Detokenizer(piece)
    assert d.feed(5) == "ok"
    assert d.feed(1) == ""
    assert d.flush() == ""


def test_every_delta_is_valid_text() -> None:
    d = Detokenizer(piece)
    out = [d.feed(t) for t in (1, 2, 3, 4, 5)] + [d.flush()]
    assert "".join(out) == "你!😀ok"
    assert all("\ufffd" not in s for s in out)
