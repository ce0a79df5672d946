"""Provider webhooks over HTTP: verified, tied to our sends, idempotent, and refused when forged."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.feedback.providers._support import (
    MAILGUN_KEY,
    body,
    mailgun_body,
    sendgrid_headers,
    sendgrid_key,
    sendgrid_public_key,
)
from tests.support.factories import as_system
from tests.support.sending import SendingSetup, sending_setup
from zgoda.campaigns.links import new_send_ref
from zgoda.campaigns.models import Send, SendStatus
from zgoda.core.settings import Settings
from zgoda.feedback import suppression
from zgoda.feedback.models import SendEvent

POSTMARK_TOKEN = "postmark-path-token-0123456789abcdef"


@pytest.fixture
def sent(session: Session, settings: Settings) -> tuple[SendingSetup, Send]:
    settings.sendgrid_public_key = sendgrid_public_key()
    settings.mailgun_signing_key = SecretStr(MAILGUN_KEY)
    settings.postmark_webhook_token = SecretStr(POSTMARK_TOKEN)
    setup = sending_setup(session, eligible=1)
    send = Send(
        campaign_id=setup.campaign.id, contact_id=setup.eligible[0].id, ref=new_send_ref(), status=SendStatus.SENT
    )
    session.add(send)
    session.commit()
    return setup, send


def _events(session: Session, setup: SendingSetup) -> list[tuple[str, str | None]]:
    as_system(session, setup.workspace)
    return [(e.kind, e.bounce_class) for e in session.scalars(select(SendEvent).order_by(SendEvent.id))]


def _sendgrid(send: Send, email: str, kind: str, event_id: str, **fields: object) -> list[dict[str, object]]:
    stamp = int(datetime.now(UTC).timestamp())
    return [
        {"email": email, "timestamp": stamp, "event": kind, "sg_event_id": event_id, "zgoda_ref": send.ref, **fields}
    ]


def test_sendgrid_events_are_applied_once(
    client: TestClient, session: Session, sent: tuple[SendingSetup, Send]
) -> None:
    setup, send = sent
    email = setup.eligible[0].email or ""
    payload = body(
        _sendgrid(send, email, "delivered", "sg-1", response="250 OK")
        + _sendgrid(send, email, "bounce", "sg-2", type="bounce", status="5.1.1", reason="550 5.1.1 unknown user")
    )
    for _ in range(5):
        headers = {**sendgrid_headers(payload, timestamp=datetime.now(UTC)), "content-type": "application/json"}
        response = client.post("/hooks/sendgrid", content=payload, headers=headers)
        assert response.status_code == 200, response.text
    assert _events(session, setup) == [("delivery", None), ("bounce", "hard")]
    assert suppression.is_suppressed(session, email) is not None


def test_a_forged_sendgrid_request_writes_nothing(
    client: TestClient, session: Session, sent: tuple[SendingSetup, Send]
) -> None:
    setup, send = sent
    email = setup.eligible[0].email or ""
    payload = body(_sendgrid(send, email, "spamreport", "sg-9"))
    headers = sendgrid_headers(payload, timestamp=datetime.now(UTC))
    tampered = payload.replace(b"spamreport", b"delivered")
    response = client.post("/hooks/sendgrid", content=tampered, headers=headers)
    assert response.status_code == 400
    assert _events(session, setup) == []
    assert sendgrid_key() is not None


def test_mailgun_tokens_cannot_be_replayed(
    client: TestClient, session: Session, sent: tuple[SendingSetup, Send]
) -> None:
    setup, send = sent
    event = {
        "id": "mg-event-1",
        "event": "complained",
        "timestamp": datetime.now(UTC).timestamp(),
        "recipient": setup.eligible[0].email,
        "user-variables": {"zgoda_ref": send.ref},
        "message": {"headers": {"message-id": f"{send.ref}@kawiarnia.example.pl"}},
    }
    payload = mailgun_body(event, timestamp=datetime.now(UTC), token="t" * 50)
    first = client.post("/hooks/mailgun", content=payload, headers={"content-type": "application/json"})
    assert first.status_code == 200, first.text
    replay = client.post("/hooks/mailgun", content=payload, headers={"content-type": "application/json"})
    assert replay.status_code == 406
    assert _events(session, setup) == [("complaint", None)]


def test_postmark_needs_the_secret_path(client: TestClient, session: Session, sent: tuple[SendingSetup, Send]) -> None:
    setup, send = sent
    event = {
        "RecordType": "Delivery",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": setup.eligible[0].email,
        "DeliveredAt": datetime.now(UTC).isoformat(),
        "Details": "Test delivery",
        "Metadata": {"zgoda-ref": send.ref},
        "ServerID": 23,
        "MessageStream": "outbound",
        "Tag": "",
    }
    payload = json.dumps(event).encode()
    wrong = client.post("/hooks/postmark/wrong-token-0123456789", content=payload)
    assert wrong.status_code == 400
    right = client.post(f"/hooks/postmark/{POSTMARK_TOKEN}", content=payload)
    assert right.status_code == 200, right.text
    assert _events(session, setup) == [("delivery", None)]


def test_unconfigured_providers_answer_404(client: TestClient, settings: Settings) -> None:
    settings.ses_topic_arns = []
    assert client.post("/hooks/ses", content=b"{}").status_code == 404


def test_malformed_json_is_rejected(client: TestClient, sent: tuple[SendingSetup, Send]) -> None:
    response = client.post(f"/hooks/postmark/{POSTMARK_TOKEN}", content=b"{not json")
    assert response.status_code == 400
    assert "json" in response.json()["detail"].lower()


def test_ses_notifications_via_sns_are_verified_and_applied(
    client: TestClient,
    session: Session,
    settings: Settings,
    sent: tuple[SendingSetup, Send],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.feedback.providers._support import CERT_URL, TOPIC, FakeFetch, sns_envelope
    from tests.feedback.providers.test_ses import bounce
    from zgoda.feedback import hooks
    from zgoda.feedback.providers import CertificateCache

    setup, send = sent
    settings.ses_topic_arns = [TOPIC]
    certificates = CertificateCache()
    certificates.get(CERT_URL, FakeFetch())  # as if fetched from Amazon's host before
    monkeypatch.setattr(hooks, "_certificates", certificates)
    email = setup.eligible[0].email or ""
    notification = bounce("Permanent", "General", [{"emailAddress": email}], ref=send.ref)
    envelope = body(sns_envelope(notification, timestamp=datetime.now(UTC)))
    for _ in range(3):
        assert client.post("/hooks/ses", content=envelope).status_code == 200
    assert _events(session, setup) == [("bounce", "hard")]
    forged = envelope.replace(b"Permanent", b"Transient")
    assert client.post("/hooks/ses", content=forged).status_code == 400
    assert session.scalar(select(func.count(SendEvent.id))) == 1
