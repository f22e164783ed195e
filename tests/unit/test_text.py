"""Incremental detokenization: UTF-8 split across tokens, stop strings split across tokens."""

from __future__ import annotations

from edge_run.engine.text import TextStream


def feed(stream: TextStream, pieces: list[bytes]) -> str:
    return "".join(stream.push(p) for p in pieces) + stream.flush()


def test_multibyte_character_split_across_tokens_is_never_emitted_broken():
    data = "café 🐉 ok".encode()
    stream = TextStream()
    emitted = [stream.push(data[i : i + 1]) for i in range(len(data))]
    assert all("\ufffd" not in e for e in emitted)
    assert "".join(emitted) + stream.flush() == "café 🐉 ok"
    dragon_start = data.index("🐉".encode())
    assert emitted[dragon_start : dragon_start + 3] == ["", "", ""]
    assert emitted[dragon_start + 3] == "🐉"


def test_stop_string_across_tokens_cuts_before_it():
    stream = TextStream(["</end>"])
    out = [stream.push(p) for p in [b"Hello </", b"en", b"d> more"]]
    assert "".join(out) == "Hello "
    assert stream.stopped
    assert stream.flush() == ""
    assert stream.push(b"late") == ""


def test_partial_stop_that_does_not_complete_is_released():
    stream = TextStream(["STOP"])
    assert stream.push(b"a ST") == "a "
    assert stream.push(b"OR") == "STOR"
    assert not stream.stopped
    assert stream.push(b"y ST") == "y "
    assert stream.flush() == "ST"


def test_earliest_of_several_stops_wins():
    stream = TextStream(["b", "abc"])
    assert feed(stream, [b"xxabc"]) == "xx"


def test_no_stops_passes_text_straight_through():
    stream = TextStream()
    assert stream.push(b"abc") == "abc"
    assert stream.flush() == ""


def test_invalid_bytes_become_replacement_characters():
    assert feed(TextStream(), [b"ok\xff"]) == "ok\ufffd"
