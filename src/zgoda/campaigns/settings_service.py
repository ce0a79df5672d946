"""The workspace's sending settings: the soft opt-in switch and the sending rate (the owner's decisions).

Stored in ``Workspace.settings["sending"]``, read by the eligibility check (soft opt-in) and the
sending loop (rate). Polish law (PKE 2024, art. 398) does not clearly allow the ePrivacy soft opt-in
for existing customers, so it is off unless the owner switches it on; every change is audited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from zgoda.accounts.models import Workspace
from zgoda.audit import service as audit
from zgoda.core.errors import InvalidInput

MAX_RATE_PER_SECOND = 1000


@dataclass(frozen=True)
class SendingSettings:
    """``soft_opt_in``: a recorded legitimate interest may stand in for consent; ``rate_per_second``: a cap."""

    soft_opt_in: bool = False
    rate_per_second: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def sending_settings(workspace: Workspace) -> SendingSettings:
    """The workspace's sending settings (defaults where nothing was stored)."""
    stored = (workspace.settings or {}).get("sending") or {}
    rate = stored.get("rate_per_second")
    return SendingSettings(
        soft_opt_in=bool(stored.get("soft_opt_in", False)),
        rate_per_second=int(rate)
        if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0
        else None,
    )


def update_sending_settings(
    session: Session, *, workspace: Workspace, soft_opt_in: bool, rate_per_second: int | None
) -> SendingSettings:
    """Replace the sending settings; audited (``workspace.sending_settings``) with before and after."""
    if rate_per_second is not None and not 1 <= rate_per_second <= MAX_RATE_PER_SECOND:
        raise InvalidInput(
            f"The sending rate is 1-{MAX_RATE_PER_SECOND} messages per second, or empty for no cap.",
            field="rate_per_second",
        )
    before = sending_settings(workspace)
    after = SendingSettings(soft_opt_in=bool(soft_opt_in), rate_per_second=rate_per_second)
    if after == before:
        return before
    stored = dict((workspace.settings or {}).get("sending") or {})
    stored.update(after.as_json())
    workspace.settings = {**(workspace.settings or {}), "sending": stored}  # a new dict: JSON columns track assignment
    session.flush()
    audit.record(
        session,
        workspace_id=workspace.id,
        action="workspace.sending_settings",
        object_type="workspace",
        object_id=workspace.id,
        summary={"before": before.as_json(), "after": after.as_json()},
    )
    return after
