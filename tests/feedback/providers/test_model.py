"""ProviderEvent refuses shapes no parser should produce."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.providers import ProviderEvent


def make(**overrides: Any) -> ProviderEvent:
    fields: dict[str, Any] = {
        "provider": "ses",
        "event_id": "m-1",
        "kind": FeedbackKind.BOUNCE,
        "recipient": "jane@example.com",
        "occurred_at": datetime(2026, 3, 2, 12, tzinfo=UTC),
        "bounce_class": BounceClass.HARD,
        "reason": BounceReason.USER_UNKNOWN,
    }
    fields.update(overrides)
    return ProviderEvent(**fields)


def test_a_valid_event_and_its_dedupe_key() -> None:
    event = make(raw={"a": 1})
    assert event.dedupe_key == "ses:m-1"
    assert hash(event) == hash(make(raw={"b": 2}))  # raw is neither hashed nor compared
    assert event == make(raw={"b": 2})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"event_id": ""}, "event_id"),
        ({"recipient": "Jane@example.com"}, "lower-cased"),
        ({"recipient": "jane"}, "lower-cased"),
        ({"occurred_at": datetime(2026, 3, 2, 12)}, "aware UTC"),
        ({"occurred_at": datetime(2026, 3, 2, 12, tzinfo=timezone(timedelta(hours=1)))}, "aware UTC"),
        ({"kind": FeedbackKind.COMPLAINT}, "Only a bounce"),
    ],
)
def test_invalid_events_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**overrides)
