"""Quoted-printable line by line (with the per-process cache of lines) is the whole text's encoding."""

from __future__ import annotations

import binascii
import quopri

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zgoda.campaigns import message


def _whole(text: str) -> bytes:
    """The whole text encoded at once, as before the line cache.

    One difference is intended: a text with no line break at all used to get bare-LF soft breaks
    (``b2a_qp`` picks CRLF only when it sees one), which the signer and the transport then turned into
    CRLF; line by line every soft break is CRLF from the start.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" not in text:
        return binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"=\n", b"=\r\n")
    return binascii.b2a_qp(text.replace("\n", "\r\n").encode("utf-8"), istext=True)


# what quoted-printable treats specially: spaces and tabs (at line ends), "=", line breaks of each kind,
# long lines (soft breaks at 76), characters beyond ASCII (several octets each), control characters
ALPHABET = st.sampled_from(
    [" ", "\t", "\n", "\r", "\r\n", "=", ".", "a", "Z", "0", "ą", "€", "😀", "\x00", "\x7f", "<p>"]
)
TEXTS = st.one_of(
    st.lists(ALPHABET, max_size=300).map("".join),
    st.tuples(st.text(max_size=200), st.integers(0, 3)).map(lambda pair: (pair[0] + " ") * pair[1]),
    st.lists(st.text(alphabet="ab =\t", min_size=70, max_size=90), max_size=5).map("\n".join),
)


@settings(max_examples=400)
@given(TEXTS)
# the last line ends the text: its trailing space is escaped at the end, which moves the soft break
@example("=" * 70 + "\n" + "=" * 36 + "a" * 40 + " ")
@example("=" * 36 + "a" * 40 + " ")
def test_line_by_line_is_the_whole_texts_encoding(text: str) -> None:
    message._QP_LINES.clear()
    first = message._quoted_printable(text)
    again = message._quoted_printable(text)  # now every line from the cache
    assert first == again == _whole(text)
    assert quopri.decodestring(first).decode("utf-8") == text.replace("\r\n", "\n").replace("\r", "\n").replace(
        "\n", "\r\n"
    )


def test_the_cache_is_bounded_and_still_right_after_it_is_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(message, "_QP_LINES", message._LineCache(10_000))
    lines = [f"line {number} = {'x' * (number % 90)} " for number in range(500)]
    text = "\n".join(lines)
    assert message._quoted_printable(text) == _whole(text)
    assert message._QP_LINES.size <= 10_000
    assert message._QP_LINES.size == sum(len(k) + len(v) for k, v in message._QP_LINES.lines.items())
    assert message._quoted_printable(text) == _whole(text)
    huge = "ż" * 20_000  # longer than the whole cache: encoded, never kept
    assert message._quoted_printable(huge) == _whole(huge)
    assert huge not in message._QP_LINES.lines


def test_a_long_line_without_a_break_gets_crlf_soft_breaks() -> None:
    encoded = message._quoted_printable("ż" * 100)
    assert b"=\r\n" in encoded
    assert b"\n" not in encoded.replace(b"\r\n", b"")
