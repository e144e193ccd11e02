from warmlm.engine.stops import StopMatcher


def run(stops: tuple[str, ...], pieces: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = []
    for p in pieces:
        out.append(m.feed(p))
        if m.stopped:
            return "".join(out), True
    out.append(m.flush())
    return "".join(out), False


def test_no_stops_passes_through() -> None:
    assert run((), ["a", "b"]) == ("ab", False)


def test_stop_split_across_pieces_never_leaks() -> None:
    m = StopMatcher(("###",))
    assert m.feed("hello #") == "hello "
    assert m.feed("#") == ""
    assert m.feed("# tail") == ""
    assert m.stopped


def test_partial_match_released_when_it_diverges() -> None:
    m = StopMatcher(("STOP",))
    assert m.feed("ST") == ""
    assert m.feed("AR") == "STAR"
    assert not m.stopped


def test_earliest_of_several_stops_wins() -> None:
    assert run(("b", "cd"), ["a", "cdxb"]) == ("a", True)


def test_held_tail_flushed_at_end() -> None:
    assert run(("END",), ["the E"]) == ("the E", False)


def test_stop_in_middle_of_piece_cuts_rest() -> None:
    assert run(("\n\n",), ["line one\n", "\nline two"]) == ("line one", True)


def test_chinese_stop_string() -> None:
    assert run(("结束",), ["你好", "结", "束了"]) == ("你好", True)
