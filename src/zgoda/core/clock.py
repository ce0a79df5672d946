"""One place that says what time it is, so tests and replays agree."""

from __future__ import annotations

from datetime import UTC, datetime

from zgoda.core.errors import InvalidInput


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime, field: str) -> datetime:
    """``moment`` (aware) in UTC. A time UTC cannot hold (1 January of year 1 east of Greenwich, 31 December
    9999 west of it) is bad input naming ``field``; stored, it would fail as an OverflowError."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{field} is out of range.", field=field) from None


def isoformat_z(moment: datetime) -> str:
    """A canonical, microsecond-precise UTC timestamp such as ``2026-01-02T03:04:05.000006Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
