"""``append``'s stdin line splitter: pure, so checked with Hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resumable_streams._cli._common import CommandError
from resumable_streams._cli.append import LineSplitter


def _split(data: bytes, cuts: list[int], max_line: int, *, split_long: bool) -> list[bytes]:
    splitter = LineSplitter(max_line, split_long=split_long)
    out: list[bytes] = []
    previous = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        out += splitter.feed(data[previous:cut])
        previous = cut
    out += splitter.feed(data[previous:])
    out += splitter.end()
    return out


@given(st.binary(max_size=400), st.lists(st.integers(0, 400)), st.integers(1, 50))
def test_any_rechunking_gives_the_same_messages(
    data: bytes, cuts: list[int], max_line: int
) -> None:
    messages = _split(data, cuts, max_line, split_long=True)
    assert b"".join(messages) == data
    assert all(0 < len(m) <= max_line for m in messages)
    assert messages == _split(data, [], max_line, split_long=True)


@given(st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b), max_size=20))
def test_lines_keep_their_newline(lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    assert _split(data, [3, 7], 100, split_long=False) == [line + b"\n" for line in lines]


def test_long_line_is_an_error_naming_the_line() -> None:
    splitter = LineSplitter(8, split_long=False)
    assert splitter.feed(b"short\n") == [b"short\n"]
    with pytest.raises(CommandError, match="stdin line 2 is longer than 8 bytes"):
        splitter.feed(b"much too long for it\n")
