"""The contacts JSON API: upsert with identity resolution, search and paging, changes, tenancy."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.api import Api, error_field
from zgoda.accounts.roles import Role
from zgoda.audit.models import AuditEntry
from zgoda.contacts.models import Contact, ContactIdentity


@pytest.fixture
def api(client: TestClient, session: Session) -> Api:
    return Api(client, session)


def _upsert(api: Api, role: Role = Role.OPERATOR, **body: Any) -> Any:
    return api.post("/contacts", role, json=body)


def test_upsert_creates_updates_and_leaves_unchanged(api: Api) -> None:
    created = _upsert(api, email=" Anna.Kowalska@Example.PL ", phone="601 234 567", first_name="Anna")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["outcome"] == "created" and body["matched_by"] is None
    contact = body["contact"]
    assert (contact["email"], contact["phone"]) == ("anna.kowalska@example.pl", "+48601234567")
    assert contact["consents"]["email_marketing"]["status"] == "none"

    updated = _upsert(api, email="anna.kowalska@example.pl", last_name="Kowalska", attributes={"city": "Kraków"})
    assert updated.status_code == 200
    assert updated.json()["outcome"] == "updated" and updated.json()["matched_by"] == "email"
    assert sorted(updated.json()["changed_fields"]) == ["attributes", "last_name"]
    assert updated.json()["contact"]["id"] == contact["id"]

    same = _upsert(api, phone="+48 601 234 567", first_name="Anna")
    assert same.status_code == 200
    assert (same.json()["outcome"], same.json()["matched_by"]) == ("unchanged", "phone")
    assert api.count(Contact) == 1
    actions = api.audit_actions()
    assert actions.count("contact.create") == 1 and actions.count("contact.update") == 1


def test_identity_in_a_source_is_recorded_and_matched_first(api: Api) -> None:
    api.source("CRM")
    first = _upsert(api, email="piotr@example.pl", source="CRM", external_id="crm-42")
    assert first.status_code == 201
    assert first.json()["contact"]["identities"] == [
        {
            "source_id": first.json()["contact"]["source_id"],
            "source": "CRM",
            "external_id": "crm-42",
            "created_at": first.json()["contact"]["identities"][0]["created_at"],
        }
    ]
    moved = _upsert(api, email="piotr.nowy@example.pl", source="CRM", external_id="crm-42")
    assert moved.status_code == 200
    assert moved.json()["matched_by"] == "identity" and moved.json()["contact"]["email"] == "piotr.nowy@example.pl"
    assert api.count(Contact) == 1 and api.count(ContactIdentity) == 1


def test_merge_by_email_adds_the_identity_and_is_audited_as_a_merge(api: Api) -> None:
    api.source("Sklep")
    _upsert(api, email="ola@example.pl")
    merged = _upsert(api, email="ola@example.pl", source="Sklep", external_id="k-9")
    assert merged.json()["outcome"] == "updated" and merged.json()["identity_added"] is True
    assert "contact.merge" in api.audit_actions()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "anna@@example"}, "email"),
        ({"email": "anna@example.pl", "phone": "123"}, "phone"),
        ({"phone": "+48 601 234 56789 1"}, "phone"),
        ({"first_name": "Anna"}, "email"),
        ({"email": "anna@example.pl", "external_id": "x"}, "source"),
        ({"email": "anna@example.pl", "source": "No such source"}, "source"),
        ({"email": "anna@example.pl", "first_name": "A" * 201}, "first_name"),
        ({"email": "anna@example.pl", "ssn": "123"}, "ssn"),
    ],
)
def test_bad_contacts_name_the_field_and_write_nothing(api: Api, body: dict[str, Any], field: str) -> None:
    before = api.audit_actions()
    response = api.post("/contacts", json=body)
    assert response.status_code == 422, response.text
    assert error_field(response) == field
    assert api.count(Contact) == 0 and api.audit_actions() == before


def test_keys_of_two_contacts_are_a_conflict_not_a_merge(api: Api) -> None:
    _upsert(api, email="a@example.pl")
    _upsert(api, email="b@example.pl", phone="+48 601 000 111")
    response = _upsert(api, email="a@example.pl", phone="601 000 111", first_name="Who")
    assert response.status_code == 409
    assert "different contacts" in response.json()["detail"]
    names = api.scoped().scalars(select(Contact.first_name)).all()
    assert names == [None, None]


def test_national_numbers_follow_the_workspace_jurisdiction(api: Api) -> None:
    assert api.patch("/workspace/settings", json={"jurisdiction": "DE"}).status_code == 200
    created = _upsert(api, phone="030 1234567")
    assert created.status_code == 201 and created.json()["contact"]["phone"] == "+49301234567"


def test_search_and_paging(api: Api) -> None:
    for number in range(7):
        _upsert(api, email=f"klient{number}@example.pl", first_name="Klient" if number % 2 else "Gość")
    _upsert(api, email="zofia@example.com", last_name="Zielińska")
    page = api.get("/contacts", Role.VIEWER, params={"limit": 3}).json()
    assert page["total"] == 8 and len(page["items"]) == 3 and page["items"][0]["email"] == "zofia@example.com"
    rest = api.get("/contacts", params={"limit": 3, "offset": 6}).json()
    assert [c["email"] for c in rest["items"]] == ["klient1@example.pl", "klient0@example.pl"]
    found = api.get("/contacts", params={"q": "ZIELIŃ"}).json()
    assert found["total"] == 1 and found["items"][0]["last_name"] == "Zielińska"
    by_domain = api.get("/contacts", params={"q": "example.pl"}).json()
    assert by_domain["total"] == 7
    assert api.get("/contacts", params={"limit": 0}).status_code == 422
    _upsert(api, email="jan_nowak@example.com", last_name="100% Arabica")
    _upsert(api, email="janxnowak@example.com", last_name="100 lat")
    for literal, email in (("jan_", "jan_nowak@example.com"), ("100%", "jan_nowak@example.com")):
        found = api.get("/contacts", params={"q": literal}).json()  # _ and % are letters here, not wildcards
        assert [c["email"] for c in found["items"]] == [email], literal
    assert api.get("/contacts", params={"q": "a\\"}).json()["total"] == 0  # a backslash is a letter too


def test_list_items_carry_consent_state(api: Api) -> None:
    contact_id = _upsert(api, email="jan@example.pl").json()["contact"]["id"]
    api.post(f"/contacts/{contact_id}/consents", json={"purpose": "email_marketing", "type": "grant"})
    [item] = api.get("/contacts").json()["items"]
    assert item["consents"]["email_marketing"]["status"] == "granted"
    assert item["consents"]["sms_marketing"]["status"] == "none"


def test_patch_changes_details_and_refuses_a_taken_address(api: Api) -> None:
    first = _upsert(api, email="a@example.pl").json()["contact"]["id"]
    _upsert(api, email="b@example.pl")
    changed = api.patch(f"/contacts/{first}", json={"first_name": "Adam", "attributes": {"vip": True}})
    assert changed.status_code == 200 and changed.json()["first_name"] == "Adam"
    assert changed.json()["attributes"] == {"vip": True}
    taken = api.patch(f"/contacts/{first}", json={"email": "B@example.pl"})
    assert taken.status_code == 409 and error_field(taken) == "email"
    bad = api.patch(f"/contacts/{first}", json={"phone": "not a phone"})
    assert bad.status_code == 422 and error_field(bad) == "phone"
    assert api.get(f"/contacts/{first}").json()["email"] == "a@example.pl"
    assert api.patch(f"/contacts/{first}", Role.DPO, json={"first_name": "X"}).status_code == 403
    summaries = api.scoped().scalars(select(AuditEntry.summary).where(AuditEntry.action == "contact.update")).all()
    assert summaries == [{"fields": ["first_name", "attributes"]}]  # ids and field names, no personal data


def test_another_workspaces_contacts_are_invisible(api: Api, client: TestClient, session: Session) -> None:
    contact_id = _upsert(api, email="tajne@example.pl").json()["contact"]["id"]
    other = Api(client, session)
    assert other.get(f"/contacts/{contact_id}").status_code == 404
    assert other.patch(f"/contacts/{contact_id}", json={"first_name": "X"}).status_code == 404
    assert other.get("/contacts", params={"q": "tajne"}).json()["total"] == 0
    # the same address is a separate contact there
    assert other.post("/contacts", json={"email": "tajne@example.pl"}).json()["outcome"] == "created"
