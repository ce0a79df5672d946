"""Small helpers for HTML forms: blank fields, and error messages that name the field."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from zgoda.core.db import MAX_INTEGER
from zgoda.core.errors import InvalidInput, ZgodaError


def blank_to_none(value: str | None) -> str | None:
    """An empty form field means "not given"."""
    return value if value and value.strip() else None


def whole_number(text: str) -> int | None:
    """``text`` (surrounding spaces allowed) as an integer if it is ASCII digits with an optional sign, else
    ``None``; ``int()`` alone also takes "٣" and "1_000"."""
    text = text.strip()
    digits = text.removeprefix("-").removeprefix("+")
    return int(text) if digits.isascii() and digits.isdigit() else None


def int_or_none(value: str | None, *, field: str) -> int | None:
    """A whole number from a form field (ASCII digits, an optional sign), or ``None`` when left blank;
    one an INTEGER column cannot hold is refused, naming the field."""
    if not value or not value.strip():
        return None
    number = whole_number(value)
    if number is None:
        raise InvalidInput(f"{field} is a whole number.", field=field)
    if not -MAX_INTEGER - 1 <= number <= MAX_INTEGER:
        raise InvalidInput(f"{field} is out of range (at most {MAX_INTEGER}).", field=field)
    return number


def local_moment(value: str | None, *, time_zone: str, field: str) -> datetime | None:
    """A ``datetime-local`` field read in the workspace's time zone (blank: ``None``)."""
    if not value or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as error:
        raise InvalidInput(f"{field} is a date and time such as 2026-05-01T10:00.", field=field) from error
    if moment.tzinfo is not None:
        return moment
    try:
        return moment.replace(tzinfo=ZoneInfo(time_zone))
    except ZoneInfoNotFoundError as error:
        raise InvalidInput(f"Unknown time zone {time_zone}.", field=field) from error


def _location(parts: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in parts) or "form"


def error_message(error: ValidationError | ZgodaError) -> str:
    """One line for the page, naming each field that was refused."""
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{_location(item['loc'])}: {'Unknown field.' if item['type'] == 'extra_forbidden' else item['msg']}"
            for item in error.errors()
        )
    if error.field:
        return f"{error.field}: {error.detail}"
    return error.detail
