"""Signed form submissions in, signed withdrawal notices out (with retries against a real HTTP server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.factories import as_system, make_workspace
from zgoda.accounts.models import Workspace
from zgoda.consent import sources
from zgoda.consent.models import ConsentEvent, ConsentState, Source
from zgoda.contacts import service as contacts
from zgoda.contacts.connectors import inbound, outbound, signing
from zgoda.contacts.connectors.models import OutboundDelivery
from zgoda.core.db import Database
from zgoda.core.errors import AuthenticationRequired, InvalidInput


@pytest.fixture
def workspace(session: Session) -> Workspace:
    workspace = make_workspace(session)
    as_system(session, workspace)
    return workspace


@pytest.fixture
def source(session: Session, workspace: Workspace) -> Source:
    return sources.create_source(session, name="Formularz", kind="web_form")


def _submission(**overrides: object) -> inbound.FormSubmission:
    data: dict[str, object] = {
        "submission_id": "form-1",
        "contact": {"email": "Nowa.Osoba@Example.com", "first_name": "Nowa", "external_id": "web-77"},
        "consents": [{"purpose": "email_marketing", "granted": True, "double_opt_in": True}],
        "evidence": {"ip": "198.51.100.23", "user_agent": "Mozilla/5.0", "page_url": "https://shop.example/signup"},
    }
    data.update(overrides)
    return inbound.FormSubmission.model_validate(data)


def test_signatures_verify_and_refuse_tampering_and_replays() -> None:
    body = b'{"a": 1}'
    header = signing.sign("s3cret", body, timestamp=1_700_000_000)
    signing.verify("s3cret", body, header, now=1_700_000_100)
    with pytest.raises(AuthenticationRequired, match="does not match"):
        signing.verify("s3cret", body + b" ", header, now=1_700_000_100)
    with pytest.raises(AuthenticationRequired, match="does not match"):
        signing.verify("other", body, header, now=1_700_000_100)
    with pytest.raises(AuthenticationRequired, match="replay window"):
        signing.verify("s3cret", body, header, now=1_700_000_000 + 301)
    with pytest.raises(AuthenticationRequired, match="missing"):
        signing.verify("s3cret", body, None)


def test_a_source_without_a_secret_accepts_nothing(session: Session, source: Source) -> None:
    with pytest.raises(AuthenticationRequired, match="secret"):
        inbound.authenticate(source, b"{}", signing.sign("guess", b"{}"))
    secret = inbound.rotate_secret(session, source_id=source.id)
    inbound.authenticate(source, b"{}", signing.sign(secret, b"{}"))


def test_a_submission_records_contact_and_pending_consent_once(session: Session, source: Source) -> None:
    result = inbound.accept(session, source=source, submission=_submission(), region="PL")
    assert result["duplicate"] is False and result["events"] == 1
    contact = contacts.get_contact(session, contact_id=result["contact_id"])
    assert contact.email == "nowa.osoba@example.com"
    assert [i.external_id for i in contact.identities] == ["web-77"]
    assert session.scalars(select(ConsentState.status)).one() == "pending"
    again = inbound.accept(session, source=source, submission=_submission(), region="PL")
    assert again["duplicate"] is True
    assert session.scalar(select(func.count(ConsentEvent.id))) == 1


def test_an_unknown_purpose_is_named_and_nothing_is_written(session: Session, source: Source) -> None:
    bad = _submission(consents=[{"purpose": "carrier_pigeon", "granted": True}])
    with pytest.raises(InvalidInput) as error:
        inbound.accept(session, source=source, submission=bad, region="PL")
    assert error.value.field == "consents.0.purpose"


class _Receiver(BaseHTTPRequestHandler):
    statuses: ClassVar[list[int]] = []
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.statuses, _Receiver.received = [], []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/zgoda-hook"
    server.shutdown()


def test_withdrawals_are_notified_signed_and_retried(
    session: Session, db: Database, source: Source, receiver: str
) -> None:
    secret = outbound.configure(session, source_id=source.id, url=receiver)
    contact = contacts.upsert_contact(
        session, contacts.ContactData(email="a@example.com", source_id=source.id, external_id="crm-1")
    ).contact
    [delivery_id] = outbound.queue_withdrawal_notices(
        session, contact_ids_by_purpose=[(contact.id, "email_marketing", "2026-11-29T10:00:00.000000Z")]
    )
    session.commit()
    _Receiver.statuses = [500, 503]
    first = outbound.attempt(db, delivery_id)
    assert first.status == "pending" and first.attempts == 1 and first.last_status_code == 500
    assert first.next_attempt_at is not None
    second = outbound.attempt(db, delivery_id)
    assert second.status == "pending" and second.attempts == 2
    third = outbound.attempt(db, delivery_id)
    assert third.status == "delivered" and third.attempts == 3
    headers, body = _Receiver.received[-1]
    signing.verify(secret, body, headers[signing.HEADER])
    payload = json.loads(body)
    assert payload["event"] == "consent.withdrawn" and payload["contact"]["external_id"] == "crm-1"
    assert outbound.attempt(db, delivery_id).attempts == 3  # delivered: never sent again


def test_a_delivery_gives_up_after_the_last_attempt(
    session: Session, db: Database, source: Source, receiver: str
) -> None:
    outbound.configure(session, source_id=source.id, url=receiver)
    contact = contacts.upsert_contact(
        session, contacts.ContactData(email="b@example.com", source_id=source.id, external_id="crm-2")
    ).contact
    [delivery_id] = outbound.queue_withdrawal_notices(
        session, contact_ids_by_purpose=[(contact.id, "email_marketing", "2026-11-29T10:00:00.000000Z")]
    )
    session.commit()
    _Receiver.statuses = [500] * outbound.MAX_ATTEMPTS
    for _ in range(outbound.MAX_ATTEMPTS):
        delivery = outbound.attempt(db, delivery_id)
    assert delivery.status == "failed" and delivery.attempts == outbound.MAX_ATTEMPTS
    as_system(session, session.get(Workspace, delivery.workspace_id))
    assert session.get(OutboundDelivery, delivery_id) is not None


def test_notification_urls_must_be_https(session: Session, source: Source) -> None:
    with pytest.raises(InvalidInput, match="https"):
        outbound.configure(session, source_id=source.id, url="http://crm.example.com/hook")
    assert outbound.backoff(1).total_seconds() == 30 and outbound.backoff(20).total_seconds() == 6 * 3600


def test_only_sources_that_listen_and_know_the_contact_are_notified(
    session: Session, workspace: Workspace, source: Source
) -> None:
    listening = sources.create_source(session, name="CRM", kind="crm")
    outbound.configure(session, source_id=listening.id, url="https://crm.example.com/hook")
    known_to_both = contacts.upsert_contact(
        session, contacts.ContactData(email="both@example.com", source_id=source.id, external_id="web-1")
    ).contact
    contacts.upsert_contact(
        session, contacts.ContactData(email="both@example.com", source_id=listening.id, external_id="crm-1")
    )
    known_to_the_form_only = contacts.upsert_contact(
        session, contacts.ContactData(email="form@example.com", source_id=source.id, external_id="web-2")
    ).contact
    # another workspace's source that listens and knows a contact of the same id range
    other = make_workspace(session, slug="inny")
    as_system(session, other)
    elsewhere = sources.create_source(session, name="CRM", kind="crm")
    outbound.configure(session, source_id=elsewhere.id, url="https://other.example.com/hook")
    contacts.upsert_contact(
        session, contacts.ContactData(email="both@example.com", source_id=elsewhere.id, external_id="x-1")
    )
    as_system(session, workspace)

    created = outbound.queue_withdrawal_notices(
        session,
        contact_ids_by_purpose=[
            (known_to_both.id, "email_marketing", "2026-11-30T10:00:00.000000Z"),
            (known_to_the_form_only.id, "email_marketing", "2026-11-30T10:00:00.000000Z"),
        ],
    )
    deliveries = [session.get(OutboundDelivery, delivery_id) for delivery_id in created]
    assert [(d.source_id, d.payload["contact"]["external_id"]) for d in deliveries if d] == [(listening.id, "crm-1")]


def test_no_notice_is_queued_where_no_source_listens(session: Session, source: Source) -> None:
    contact = contacts.upsert_contact(
        session, contacts.ContactData(email="quiet@example.com", source_id=source.id, external_id="web-3")
    ).contact
    created = outbound.queue_withdrawal_notices(
        session, contact_ids_by_purpose=[(contact.id, "email_marketing", "2026-11-30T10:00:00.000000Z")]
    )
    assert created == []
    assert session.scalar(select(func.count()).select_from(OutboundDelivery)) == 0
