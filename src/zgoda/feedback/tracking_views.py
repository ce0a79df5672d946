"""The open pixel and click redirects of tracked messages (see :mod:`zgoda.campaigns.tracking`).

An open or click is recorded only while the contact's profiling consent is granted: withdrawing it
stops tracking at once, even for messages already delivered. The pixel is always served and a valid
click always redirects; a click address whose signature does not match is a 404, never a redirect.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import date

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from zgoda.campaigns.tracking import check_link, tracking_consents
from zgoda.core.errors import NotFound
from zgoda.core.settings import Settings
from zgoda.feedback import subject as subjects
from zgoda.feedback.kinds import FeedbackKind
from zgoda.feedback.service import Observation, apply
from zgoda.web.context import client_ip, get_session, get_settings_dep, public

router = APIRouter(prefix="/t", tags=["tracking"], include_in_schema=False)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, max-age=0", "Referrer-Policy": "no-referrer"}


def _record(session: Session, subject: subjects.Subject, kind: FeedbackKind, key: str, request: Request) -> None:
    if subject.send.ref is None or subject.contact.id not in tracking_consents(session, [subject.contact.id]):
        return
    apply(
        session,
        Observation(
            kind=kind,
            send_ref=subject.send.ref,
            dedupe_key=key,
            via="tracking",
            user_agent=(request.headers.get("user-agent") or "")[:300] or None,
            ip=client_ip(request),
        ),
    )


@router.get("/o/{token}.gif")
@public("the open pixel of a tracked message (only for contacts whose profiling consent covers it)")
def open_pixel(
    request: Request,
    token: str,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """A transparent GIF; records one open per send and day."""
    try:
        subject = subjects.resolve(session, settings.resolved_secret_key(), token)
    except NotFound:
        return Response(PIXEL, media_type="image/gif", headers=NO_STORE)
    _record(session, subject, FeedbackKind.OPEN, f"open:{subject.send.id}:{date.today().isoformat()}", request)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/c/{token}")
@public("a tracked link; the HMAC over token and target makes it redirect only where the message pointed")
def click(
    request: Request,
    token: str,
    u: str,
    s: str,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """Record the click (once per send, link and day) and redirect to the link's target."""
    secret = settings.resolved_secret_key()
    if not check_link(secret, token, u, s) or not u.startswith(("http://", "https://")):
        raise NotFound("This link is not valid.", field="u")
    try:
        subject = subjects.resolve(session, secret, token)
    except NotFound:
        return RedirectResponse(u, status_code=302, headers=NO_STORE)
    key = f"click:{subject.send.id}:{date.today().isoformat()}:{hashlib.sha256(u.encode()).hexdigest()[:16]}"
    _record(session, subject, FeedbackKind.CLICK, key, request)
    return RedirectResponse(u, status_code=302, headers=NO_STORE)
