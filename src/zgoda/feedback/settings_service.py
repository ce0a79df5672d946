"""The workspace's feedback settings: the soft-bounce rule (the owner's decision).

Stored in ``Workspace.settings["feedback"]`` and read by :func:`zgoda.feedback.service.feedback_rules`:
``soft_bounce_limit`` soft bounces within ``soft_bounce_days`` days suppress an address. Every change is
audited (``workspace.feedback_settings``) with the rule before and after.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from zgoda.accounts.models import Workspace
from zgoda.audit import service as audit
from zgoda.core.errors import InvalidInput
from zgoda.feedback.service import feedback_rules

LIMIT_RANGE = (1, 20)
DAYS_RANGE = (1, 365)


@dataclass(frozen=True)
class FeedbackSettings:
    """``soft_bounce_limit`` soft bounces within ``soft_bounce_days`` days suppress the address."""

    soft_bounce_limit: int
    soft_bounce_days: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def feedback_settings(workspace: Workspace) -> FeedbackSettings:
    """The workspace's soft-bounce rule (the defaults where nothing was stored)."""
    limit, days = feedback_rules(workspace)
    return FeedbackSettings(soft_bounce_limit=limit, soft_bounce_days=days)


def _checked(value: int, bounds: tuple[int, int], field: str, what: str) -> int:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{what} is a whole number from {low} to {high}.", field=field)
    return value


def update_feedback_settings(
    session: Session, *, workspace: Workspace, soft_bounce_limit: int, soft_bounce_days: int
) -> FeedbackSettings:
    """Replace the soft-bounce rule; audited (``workspace.feedback_settings``) with before and after."""
    after = FeedbackSettings(
        soft_bounce_limit=_checked(soft_bounce_limit, LIMIT_RANGE, "soft_bounce_limit", "The soft-bounce limit"),
        soft_bounce_days=_checked(soft_bounce_days, DAYS_RANGE, "soft_bounce_days", "The soft-bounce window in days"),
    )
    before = feedback_settings(workspace)
    if after == before:
        return before
    stored = dict((workspace.settings or {}).get("feedback") or {})
    stored.update(after.as_json())
    workspace.settings = {**(workspace.settings or {}), "feedback": stored}  # a new dict: JSON columns track assignment
    session.flush()
    audit.record(
        session,
        workspace_id=workspace.id,
        action="workspace.feedback_settings",
        object_type="workspace",
        object_id=workspace.id,
        summary={"before": before.as_json(), "after": after.as_json()},
    )
    return after
