"""Provider webhooks: Amazon SES (via SNS), SendGrid, Mailgun and Postmark post their events here.

Each request is verified with the provider's own scheme before anything is read into the database
(:mod:`zgoda.feedback.providers`), then every event goes through :func:`zgoda.feedback.service.apply`
under its provider event id, so the same event delivered five times leaves one record. A provider that
is not configured answers 404. A rejected request is logged with its reason and answers 400 (Mailgun:
406, which stops its retries); a failure to fetch the SNS certificate answers 503 so SNS retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zgoda.core.settings import Settings
from zgoda.core.tenancy import Actor, bind_scope
from zgoda.feedback.intake import observation_from_provider
from zgoda.feedback.models import WebhookToken
from zgoda.feedback.providers import (
    CertificateCache,
    ProviderEvent,
    WebhookRejected,
    confirm_subscription,
    parse_mailgun,
    parse_postmark,
    parse_sendgrid,
    parse_ses,
    verify_postmark_token,
)
from zgoda.feedback.service import apply
from zgoda.web.context import get_session, get_settings_dep, public, request_body

log = logging.getLogger("zgoda.feedback.hooks")
router = APIRouter(prefix="/hooks", tags=["provider webhooks"])
_certificates = CertificateCache()


def _not_configured(provider: str) -> Response:
    return JSONResponse({"detail": f"The {provider} webhook is not configured here."}, status_code=404)


def _rejected(provider: str, error: WebhookRejected, status: int = 400) -> Response:
    log.warning("%s webhook rejected: %s", provider, error.detail)
    return JSONResponse({"detail": error.detail}, status_code=503 if error.retryable else status)


def _apply_all(session: Session, events: list[ProviderEvent]) -> dict[str, int]:
    bind_scope(session, workspace_id=None, actor=Actor.system("webhook"))
    counts: dict[str, int] = {}
    for event in events:
        applied = apply(session, observation_from_provider(event))  # restores the platform scope
        counts[applied.outcome] = counts.get(applied.outcome, 0) + 1
        if applied.outcome == "ignored":
            log.info("%s event %s ignored: %s", event.provider, event.event_id, applied.why)
    return counts


@router.post("/ses")
@public("Amazon SNS posts SES notifications; the SNS signature (certificate from an Amazon host) authenticates them")
def ses_webhook(
    body: bytes = Depends(request_body),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """SES bounces, complaints and deliveries via SNS; a subscription confirmation is confirmed."""
    if not settings.ses_topic_arns:
        return _not_configured("SES")
    try:
        result = parse_ses(body, topic_arns=settings.ses_topic_arns, cache=_certificates)
        if result.subscribe_url:
            confirm_subscription(result.subscribe_url)
            log.info("SNS subscription confirmed for %s", result.message.topic_arn)
            return JSONResponse({"confirmed": True})
    except WebhookRejected as error:
        return _rejected("SES", error)
    return JSONResponse(_apply_all(session, result.events))


@router.post("/sendgrid")
@public("SendGrid's signed Event Webhook; the ECDSA signature over timestamp and body authenticates it")
def sendgrid_webhook(
    request: Request,
    body: bytes = Depends(request_body),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """SendGrid's event batch."""
    if not settings.sendgrid_public_key:
        return _not_configured("SendGrid")
    try:
        events = parse_sendgrid(body, dict(request.headers), public_key=settings.sendgrid_public_key)
    except WebhookRejected as error:
        return _rejected("SendGrid", error)
    return JSONResponse(_apply_all(session, events))


def _token_store(session: Session) -> Callable[[str], bool]:
    """Mailgun's one-time tokens: ``True`` when seen before; otherwise remembered now (same transaction)."""

    def seen(token: str) -> bool:
        try:
            with session.begin_nested():
                session.add(WebhookToken(provider="mailgun", token=token[:200]))
                session.flush()
        except IntegrityError:
            return True
        return False

    return seen


@router.post("/mailgun")
@public("Mailgun's webhooks; the HMAC of timestamp and a one-time token with the signing key authenticates them")
def mailgun_webhook(
    body: bytes = Depends(request_body),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """One Mailgun event."""
    if settings.mailgun_signing_key is None:
        return _not_configured("Mailgun")
    try:
        events = parse_mailgun(
            body, signing_key=settings.mailgun_signing_key.get_secret_value(), seen_token=_token_store(session)
        )
    except WebhookRejected as error:
        return _rejected("Mailgun", error, status=406)
    return JSONResponse(_apply_all(session, events))


@router.post("/postmark/{token}")
@public("Postmark's webhooks; the secret token in the address authenticates them")
def postmark_webhook(
    token: str,
    body: bytes = Depends(request_body),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """One Postmark event."""
    if settings.postmark_webhook_token is None:
        return _not_configured("Postmark")
    try:
        verify_postmark_token(token, settings.postmark_webhook_token.get_secret_value())
        events = parse_postmark(body)
    except WebhookRejected as error:
        return _rejected("Postmark", error)
    return JSONResponse(_apply_all(session, events))
