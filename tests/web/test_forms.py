"""Form helpers: a whole number from a form field is ASCII digits that an INTEGER column holds."""

from __future__ import annotations

import pytest

from zgoda.core.db import MAX_INTEGER
from zgoda.core.errors import InvalidInput
from zgoda.web.forms import int_or_none


@pytest.mark.parametrize(
    ("text", "expected"), [("", None), ("  ", None), (None, None), (" 12 ", 12), ("-3", -3), ("+7", 7), ("0", 0)]
)
def test_whole_numbers_and_blanks(text: str | None, expected: int | None) -> None:
    assert int_or_none(text, field="days") == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("abc", "is a whole number"),
        ("1.5", "is a whole number"),
        ("1_000", "is a whole number"),  # int() takes it
        ("\u0663", "is a whole number"),  # int() takes Arabic-Indic digits
        ("\u00b2", "is a whole number"),  # str.isdigit() takes a superscript two
        (str(MAX_INTEGER + 1), "out of range"),
        (str(-MAX_INTEGER - 2), "out of range"),
        ("9" * 40, "out of range"),
    ],
)
def test_anything_else_names_the_field(text: str, says: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        int_or_none(text, field="days")
    assert raised.value.field == "days" and says in raised.value.detail
