"""The consent JSON API: sources, evidence files, purposes, notices, recording events and reading them back."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.support.api import Api, error_field
from zgoda.accounts.models import Workspace
from zgoda.accounts.roles import Role
from zgoda.consent import sources
from zgoda.consent.models import ConsentEvent, ConsentEvidence, ConsentState, SourceEvidence
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact, ContactIdentity
from zgoda.core.clock import utcnow
from zgoda.core.crypto import sha256_hex
from zgoda.core.settings import Settings


@pytest.fixture
def api(client: TestClient, session: Session) -> Api:
    return Api(client, session)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


# --- sources and evidence ---------------------------------------------------------------------


def test_source_lifecycle(api: Api) -> None:
    created = api.post("/sources", json={"name": "Sklep WWW", "kind": "shop", "description": "Checkout form"})
    assert created.status_code == 201, created.text
    source_id = created.json()["id"]
    assert created.json()["attested_at"] is None and created.json()["evidence"] == []
    assert api.post("/sources", json={"name": "Sklep WWW", "kind": "shop"}).status_code == 409
    renamed = api.patch(f"/sources/{source_id}", json={"name": "Sklep internetowy"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Sklep internetowy"
    assert renamed.json()["description"] == "Checkout form"
    assert [s["name"] for s in api.get("/sources").json()] == ["Sklep internetowy"]
    assert api.audit_actions()[-2:] == ["source.create", "source.update"]


def test_bad_source_input_is_named(api: Api) -> None:
    response = api.post("/sources", json={"name": "X", "kind": "carrier_pigeon"})
    assert response.status_code == 422 and error_field(response) == "kind"
    response = api.post("/sources", json={"name": "X", "kind": "shop", "owner": "me"})
    assert response.status_code == 422 and error_field(response) == "owner"


def test_only_the_owner_attests_a_source(api: Api) -> None:
    source_id = api.source()
    text = "Unticked checkbox under the order form; wording v3; double opt-in by email."
    assert api.post(f"/sources/{source_id}/attestation", Role.OPERATOR, json={"attestation": text}).status_code == 403
    short = api.post(f"/sources/{source_id}/attestation", json={"attestation": "we ask"})
    assert short.status_code == 422 and error_field(short) == "attestation"
    attested = api.post(f"/sources/{source_id}/attestation", json={"attestation": text})
    assert attested.status_code == 200
    assert attested.json()["attestation"] == text
    assert attested.json()["attested_by"] == "token:owner" and attested.json()["attested_at"]
    assert api.audit_actions().count("source.attest") == 1


def test_evidence_upload_and_download(api: Api, settings: Settings) -> None:
    source_id = api.source()
    data = b"%PDF-1.4 signed contract with the list provider"
    uploaded = api.post(
        f"/sources/{source_id}/evidence", files={"file": ("umowa ../../etc.pdf", data, "application/pdf")}
    )
    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    assert body["sha256"] == sha256_hex(data) and body["size"] == len(data)
    assert "/" not in body["filename"]
    assert (settings.data_dir / "evidence" / body["sha256"][:2] / body["sha256"]).read_bytes() == data
    downloaded = api.get(body["url"].removeprefix("/api/v1"), Role.VIEWER)
    assert downloaded.status_code == 200 and downloaded.content == data
    assert downloaded.headers["content-disposition"].startswith("attachment;")
    assert body["filename"] in downloaded.headers["content-disposition"]
    assert downloaded.headers["x-content-type-options"] == "nosniff"
    assert api.get(f"/sources/{source_id}").json()["evidence"][0]["id"] == body["id"]


def test_too_large_evidence_is_refused_and_nothing_is_kept(
    api: Api, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_id = api.source()
    monkeypatch.setattr(sources, "MAX_EVIDENCE_BYTES", 16)
    before = api.audit_actions()
    response = api.post(f"/sources/{source_id}/evidence", files={"file": ("big.bin", b"x" * 17, "text/plain")})
    assert response.status_code == 422 and error_field(response) == "file"
    assert api.count(SourceEvidence) == 0
    assert api.audit_actions() == before
    assert not (settings.data_dir / "evidence").exists()
    missing = api.post(f"/sources/{source_id}/evidence", data={})
    assert missing.status_code == 422 and error_field(missing) == "file"


def test_evidence_changed_on_disk_is_not_served(api: Api, settings: Settings) -> None:
    source_id = api.source()
    body = api.post(f"/sources/{source_id}/evidence", files={"file": ("a.txt", b"original", "text/plain")}).json()
    stored: Path = settings.data_dir / "evidence" / body["sha256"][:2] / body["sha256"]
    stored.write_bytes(b"tampered")
    response = api.get(body["url"].removeprefix("/api/v1"))
    assert response.status_code == 409 and "no longer matches" in response.json()["detail"]


def test_evidence_of_another_source_or_workspace_is_a_404(api: Api, client: TestClient, session: Session) -> None:
    first, second = api.source("One"), api.source("Two")
    evidence = api.post(f"/sources/{first}/evidence", files={"file": ("a.txt", b"a", "text/plain")}).json()
    assert api.get(f"/sources/{second}/evidence/{evidence['id']}").status_code == 404
    other = Api(client, session)
    assert other.get(f"/sources/{first}/evidence/{evidence['id']}").status_code == 404
    assert other.post(f"/sources/{first}/evidence", files={"file": ("b.txt", b"b", "text/plain")}).status_code == 404


# --- purposes and notices --------------------------------------------------------------------


def test_purposes_come_with_the_workspace_and_can_be_added(api: Api) -> None:
    keys = [p["key"] for p in api.get("/purposes", Role.VIEWER).json()]
    assert keys[:2] == ["email_marketing", "sms_marketing"]
    created = api.post("/purposes", Role.DPO, json={"key": "loyalty_sms", "name": "Loyalty SMS", "channel": "sms"})
    assert created.status_code == 201 and created.json()["validity_days"] is None
    assert api.post("/purposes", json={"key": "loyalty_sms", "name": "Again", "channel": "sms"}).status_code == 409
    bad = api.post("/purposes", json={"key": "Loyalty SMS!", "name": "X", "channel": "sms"})
    assert bad.status_code == 422 and error_field(bad) == "key"
    bad = api.post("/purposes", json={"key": "fax", "name": "Fax", "channel": "fax"})
    assert bad.status_code == 422 and error_field(bad) == "channel"
    assert api.post("/purposes", Role.VIEWER, json={"key": "x_y", "name": "X", "channel": "sms"}).status_code == 403


def test_purpose_validity_is_kept_unless_named(api: Api) -> None:
    purpose_id = api.get("/purposes").json()[0]["id"]
    assert api.patch(f"/purposes/{purpose_id}", json={"validity_days": 730}).json()["validity_days"] == 730
    assert api.patch(f"/purposes/{purpose_id}", json={"name": "Newsletter"}).json()["validity_days"] == 730
    cleared = api.patch(f"/purposes/{purpose_id}", json={"validity_days": None})
    assert cleared.json()["validity_days"] is None and cleared.json()["name"] == "Newsletter"
    too_long = api.patch(f"/purposes/{purpose_id}", json={"validity_days": 99999})
    assert too_long.status_code == 422 and error_field(too_long) == "validity_days"


def test_notices_are_versioned_and_immutable_once_used(api: Api) -> None:
    purpose_id = api.get("/purposes").json()[0]["id"]
    text = "Zgadzam się na otrzymywanie newslettera.\n\n  Administrator: Kawiarnia Zgoda.  \n"
    first = api.post(f"/purposes/{purpose_id}/notices", json={"language": "pl", "title": "Newsletter", "text": text})
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1 and first.json()["text"] == text  # stored exactly, whitespace included
    assert first.json()["sha256"] == sha256_hex(text) and first.json()["used"] is False
    second = api.post(f"/purposes/{purpose_id}/notices", json={"language": "pl", "title": "Newsletter", "text": "v2"})
    english = api.post(f"/purposes/{purpose_id}/notices", json={"language": "en", "title": "News", "text": "I agree"})
    assert (second.json()["version"], english.json()["version"]) == (2, 1)
    bad = api.post(f"/purposes/{purpose_id}/notices", json={"language": "polish", "title": "X", "text": "Y"})
    assert bad.status_code == 422 and error_field(bad) == "language"

    notice_id = first.json()["id"]
    corrected = api.patch(f"/notices/{notice_id}", json={"text": "Zgadzam się."})
    assert corrected.status_code == 200 and corrected.json()["sha256"] == sha256_hex("Zgadzam się.")
    contact_id = api.contact()
    event = api.post(
        f"/contacts/{contact_id}/consents", json={"purpose": "email_marketing", "type": "grant", "notice_id": notice_id}
    )
    assert event.status_code == 201
    assert event.json()["notice_sha256"] == sha256_hex("Zgadzam się.")
    assert api.get(f"/notices/{notice_id}").json()["used"] is True
    refused = api.patch(f"/notices/{notice_id}", json={"text": "Something else"})
    assert refused.status_code == 409 and error_field(refused) == "notice_id"
    assert api.get(f"/notices/{notice_id}").json()["text"] == "Zgadzam się."
    listed = api.get(f"/purposes/{purpose_id}/notices").json()
    assert [(n["language"], n["version"]) for n in listed] == [("en", 1), ("pl", 1), ("pl", 2)]


# --- recording consent -----------------------------------------------------------------------


def _notice(api: Api, purpose_key: str, language: str = "pl") -> int:
    purpose = next(p for p in api.get("/purposes").json() if p["key"] == purpose_key)
    body = {"language": language, "title": "Zgoda", "text": f"Zgoda na {purpose_key} ({language})."}
    return int(api.post(f"/purposes/{purpose['id']}/notices", json=body).json()["id"])


def test_record_and_read_back_consent(api: Api) -> None:
    contact_id = api.contact()
    api.source("Sklep WWW")
    notice_id = _notice(api, "email_marketing")
    now = utcnow()
    granted = api.post(
        f"/contacts/{contact_id}/consents",
        json={
            "purpose": "email_marketing",
            "type": "grant",
            "method": "web_form",
            "source": "Sklep WWW",
            "notice_version": 1,
            "notice_language": "pl",
            "occurred_at": _iso(now - timedelta(days=3)),
            "evidence": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "page_url": "https://sklep.example.pl/"},
            "reference": "order-1234",
        },
    )
    assert granted.status_code == 201, granted.text
    event = granted.json()
    assert (event["notice_id"], event["notice_version"], event["notice_language"]) == (notice_id, 1, "pl")
    assert event["source"] == "Sklep WWW" and event["actor"] == "token:owner" and event["seq"] == 1
    assert event["evidence"]["ip"] == "203.0.113.7"
    withdrawn = api.post(
        f"/contacts/{contact_id}/consents",
        Role.DPO,
        json={"purpose": "email_marketing", "type": "withdraw", "occurred_at": _iso(now - timedelta(days=1))},
    )
    assert withdrawn.status_code == 201 and withdrawn.json()["method"] == "api"
    assert withdrawn.json()["prev_hash"] == event["hash"]

    history = api.get(f"/contacts/{contact_id}/consents", Role.VIEWER).json()
    assert [e["type"] for e in history["events"]] == ["grant", "withdraw"]
    assert history["states"]["email_marketing"]["status"] == "withdrawn"
    assert history["states"]["sms_marketing"]["status"] == "none"
    assert history["events"][0]["evidence"]["page_url"] == "https://sklep.example.pl/"
    assert history["events"][1]["evidence"] is None

    at = api.get(
        f"/contacts/{contact_id}/consents/email_marketing/at", params={"moment": _iso(now - timedelta(days=2))}
    )
    assert at.status_code == 200 and at.json()["status"] == "granted"
    before = api.get(
        f"/contacts/{contact_id}/consents/email_marketing/at", params={"moment": _iso(now - timedelta(days=4))}
    )
    assert before.json()["status"] == "none"
    assert api.count(ConsentEvidence) == 1
    assert api.audit_actions().count("consent.record") == 2


def test_a_late_grant_does_not_override_a_newer_withdrawal(api: Api) -> None:
    contact_id = api.contact()
    now = utcnow()
    for kind, days in (("withdraw", 1), ("grant", 5)):
        body = {"purpose": "sms_marketing", "type": kind, "occurred_at": _iso(now - timedelta(days=days))}
        assert api.post(f"/contacts/{contact_id}/consents", json=body).status_code == 201
    detail = api.get(f"/contacts/{contact_id}/consents").json()
    assert detail["states"]["sms_marketing"]["status"] == "withdrawn"
    assert [e["type"] for e in detail["events"]] == ["grant", "withdraw"]  # time order, not arrival order


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"purpose": "carrier_pigeon"}, "purpose"),
        ({"type": "approve"}, "type"),
        ({"method": "telepathy"}, "method"),
        ({"legal_basis": "because"}, "legal_basis"),
        ({"source": "Nowhere"}, "source"),
        ({"occurred_at": "FUTURE"}, "occurred_at"),
        ({"occurred_at": "2026-01-01T10:00:00"}, "occurred_at"),  # no time zone
        ({"occurred_at": "0001-01-01T00:00:00+02:00"}, "occurred_at"),  # before the first UTC time there is
        ({"evidence": {"user_agent": "x" * 5000}}, "evidence.user_agent"),
        ({"evidence": {"ip": "not-an-ip"}}, "evidence.ip"),
        ({"evidence": {"file_sha256": "abc"}}, "evidence.file_sha256"),
        ({"evidence": {"file_sha256": "ab" * 32, "file_row": 2**31}}, "evidence.file_row"),  # past INTEGER
        ({"notice_id": 10**30}, "notice_id"),
        ({"reference": "a\x00b"}, "reference"),  # PostgreSQL's text refuses NUL
        ({"evidence": {"note": "a\x00b"}}, "evidence.note"),
        ({"notice_id": "SMS_NOTICE"}, "notice_id"),  # a notice of another purpose
        ({"notice_id": "EMAIL_NOTICE", "notice_language": "en"}, "notice_language"),
        ({"notice_version": 7, "notice_language": "pl"}, "notice_version"),
        ({"notice_version": 1}, "notice_language"),
        ({"type": "withdraw", "requires_confirmation": True}, "requires_confirmation"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_event_names_the_field_and_writes_nothing(api: Api, change: dict[str, Any], field: str) -> None:
    contact_id = api.contact()
    references = {"SMS_NOTICE": _notice(api, "sms_marketing"), "EMAIL_NOTICE": _notice(api, "email_marketing")}
    body: dict[str, Any] = {"purpose": "email_marketing", "type": "grant", **change}
    for name in ("notice_id",):
        if isinstance(body.get(name), str):
            body[name] = references[body[name]]
    if body.get("occurred_at") == "FUTURE":
        body["occurred_at"] = _iso(utcnow() + timedelta(hours=1))
    before = api.audit_actions()
    response = api.post(f"/contacts/{contact_id}/consents", json=body)
    assert response.status_code == 422, response.text
    assert error_field(response) == field
    assert api.count(ConsentEvent) == 0 and api.count(ConsentState) == 0 and api.count(ConsentEvidence) == 0
    assert api.audit_actions() == before


def test_who_may_record_consent(api: Api) -> None:
    contact_id = api.contact()
    body = {"purpose": "email_marketing", "type": "grant"}
    assert api.post(f"/contacts/{contact_id}/consents", Role.VIEWER, json=body).status_code == 403
    assert api.post(f"/contacts/{contact_id}/consents", Role.OPERATOR, json=body).status_code == 201
    assert api.get(f"/contacts/{contact_id}/consents", Role.VIEWER).status_code == 200


def test_state_at_needs_a_zoned_moment_and_a_known_purpose(api: Api) -> None:
    contact_id = api.contact()
    naive = api.get(f"/contacts/{contact_id}/consents/email_marketing/at", params={"moment": "2026-01-01T10:00:00"})
    assert naive.status_code == 422 and error_field(naive) == "moment"
    for outside in ("0001-01-01T00:00:00+02:00", "9999-12-31T23:59:59-07:30"):  # no UTC time holds them
        response = api.get(f"/contacts/{contact_id}/consents/email_marketing/at", params={"moment": outside})
        assert response.status_code == 422 and error_field(response) == "moment", outside
    unknown = api.get(f"/contacts/{contact_id}/consents/carrier_pigeon/at", params={"moment": _iso(utcnow())})
    assert unknown.status_code == 404 and error_field(unknown) == "purpose_key"


def test_another_workspaces_contact_is_a_404(api: Api, client: TestClient, session: Session) -> None:
    contact_id = api.contact()
    other = Api(client, session)
    body = {"purpose": "email_marketing", "type": "grant"}
    assert other.post(f"/contacts/{contact_id}/consents", json=body).status_code == 404
    assert other.get(f"/contacts/{contact_id}/consents").status_code == 404
    moment = {"moment": _iso(utcnow())}
    assert other.get(f"/contacts/{contact_id}/consents/email_marketing/at", params=moment).status_code == 404
    assert api.count(ConsentEvent) == 0


def test_a_notice_of_another_workspace_is_unknown(api: Api, client: TestClient, session: Session) -> None:
    other = Api(client, session)
    foreign = _notice(other, "email_marketing")
    contact_id = api.contact()
    response = api.post(
        f"/contacts/{contact_id}/consents", json={"purpose": "email_marketing", "type": "grant", "notice_id": foreign}
    )
    assert response.status_code == 422 and error_field(response) == "notice_id"
    assert api.get(f"/notices/{foreign}").status_code == 404


# --- consent from integrating systems --------------------------------------------------------


def test_inbound_consent_creates_the_contact_then_matches_it(api: Api) -> None:
    api.source("Sklep WWW")
    body = {
        "contact": {"email": "Ewa.Nowak@Example.PL", "external_id": "cust-77", "first_name": "Ewa"},
        "source": "Sklep WWW",
        "purpose": "email_marketing",
        "type": "grant",
        "method": "web_form",
        "requires_confirmation": True,
    }
    first = api.post("/consents", Role.OPERATOR, json=body)
    assert first.status_code == 201, first.text
    answer = first.json()
    assert answer["contact"]["outcome"] == "created"
    assert answer["contact"]["contact"]["email"] == "ewa.nowak@example.pl"
    assert answer["contact"]["contact"]["source"] == "Sklep WWW"
    assert answer["contact"]["contact"]["identities"][0]["external_id"] == "cust-77"
    assert answer["contact"]["contact"]["consents"]["email_marketing"]["status"] == "pending"
    assert answer["event"]["source"] == "Sklep WWW"

    confirm = {**body, "type": "confirm", "method": "double_opt_in", "requires_confirmation": False}
    confirm["contact"] = {"external_id": "cust-77", "source": "Sklep WWW"}
    second = api.post("/consents", json=confirm)
    assert second.status_code == 201, second.text
    assert second.json()["contact"]["outcome"] == "unchanged"
    assert second.json()["contact"]["matched_by"] == "identity"
    assert second.json()["contact"]["contact"]["consents"]["email_marketing"]["status"] == "granted"
    assert api.count(Contact) == 1


def test_inbound_consent_is_one_transaction(api: Api) -> None:
    api.source("Sklep WWW")
    before = api.audit_actions()
    body = {
        "contact": {"email": "jan@example.pl", "external_id": "c-1", "source": "Sklep WWW"},
        "purpose": "email_marketing",
        "type": "grant",
        "occurred_at": _iso(utcnow() + timedelta(days=1)),
    }
    response = api.post("/consents", json=body)
    assert response.status_code == 422 and error_field(response) == "occurred_at"
    assert api.count(Contact) == 0 and api.count(ContactIdentity) == 0 and api.count(ConsentEvent) == 0
    assert api.audit_actions() == before


@pytest.mark.parametrize(
    ("contact", "status", "field"),
    [
        ({"email": "not an address"}, 422, "contact.email"),
        ({"phone": "12"}, 422, "contact.phone"),
        ({"first_name": "Jan"}, 422, "contact.email"),  # no key to find or create anyone by
        ({"email": "jan@example.pl", "source": "Nowhere"}, 422, "contact.source"),
        ({"email": "jan@example.pl", "external_id": "x-1"}, 422, "contact.source"),
        ({"email": "jan@example.pl", "nickname": "J"}, 422, "contact.nickname"),
    ],
)
def test_inbound_contact_errors_are_named(api: Api, contact: dict[str, Any], status: int, field: str) -> None:
    response = api.post("/consents", json={"contact": contact, "purpose": "email_marketing", "type": "grant"})
    assert response.status_code == status, response.text
    assert error_field(response) == field
    assert api.count(Contact) == 0


def test_inbound_keys_naming_two_contacts_are_a_conflict(api: Api) -> None:
    api.contact("one@example.pl")
    other = contacts.upsert_contact(api.scoped(), contacts.ContactData(phone="+48601234567")).contact
    api.session.commit()
    body = {"contact": {"email": "one@example.pl", "phone": "601 234 567"}, "purpose": "sms_marketing", "type": "grant"}
    response = api.post("/consents", json=body)
    assert response.status_code == 409 and error_field(response).startswith("contact.")
    assert api.count(ConsentEvent) == 0
    assert api.scoped().get(Contact, other.id) is not None


def test_workspace_in_scope_is_the_tokens(api: Api, client: TestClient, session: Session) -> None:
    other: Workspace = Api(client, session).workspace
    response = client.get("/api/v1/sources", headers={**api.headers(), "X-Zgoda-Workspace": other.slug})
    assert response.status_code == 404
