"""The audiences JSON API: lists and their members, segments with the live count, the audience preview."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.support.api import Api, error_field
from tests.support.campaigns import make_list, make_segment
from tests.support.consent import record
from tests.support.factories import make_workspace
from zgoda.accounts.roles import Role
from zgoda.audiences.models import ListMember
from zgoda.contacts import service as contacts
from zgoda.core.clock import utcnow

KRAKOW = {"match": "all", "rules": [{"field": "attribute", "key": "city", "op": "eq", "value": "Kraków"}]}


@pytest.fixture
def api(client: TestClient, session: Session) -> Api:
    return Api(client, session)


def _contact(api: Api, email: str, city: str | None = None, *, consent: bool = False) -> int:
    session = api.scoped()
    attributes = {"city": city} if city else {}
    contact = contacts.upsert_contact(session, contacts.ContactData(email=email, attributes=attributes)).contact
    if consent:
        record(session, contact, "grant", at=utcnow() - timedelta(days=1))
    session.commit()
    return contact.id


def test_create_a_list_add_members_with_their_source_and_read_the_report(api: Api) -> None:
    shop = api.source("Sklep WWW")
    anna, piotr, ewa = (_contact(api, f"{name}@example.pl") for name in ("anna", "piotr", "ewa"))

    created = api.post("/lists", Role.OPERATOR, json={"name": "Newsletter", "description": "Klienci"})
    assert created.status_code == 201, created.text
    list_id = created.json()["id"]
    assert created.json()["members"] == 0 and created.json()["sources"] == []

    added = api.post(f"/lists/{list_id}/members", Role.OPERATOR, json={"contact_ids": [anna, piotr], "source_id": shop})
    assert added.status_code == 200, added.text
    assert added.json() == {"added": 2, "members": 2}
    again = api.post(f"/lists/{list_id}/members", Role.OPERATOR, json={"contact_ids": [anna, ewa]})
    assert again.json() == {"added": 1, "members": 3}

    detail = api.get(f"/lists/{list_id}").json()
    assert detail["members"] == 3
    report = {row["name"]: row["members"] for row in detail["sources"]}
    assert report == {"Sklep WWW": 2, "(unknown)": 1}
    assert [row["attested"] for row in detail["sources"]] == [False, False]

    page = api.get(f"/lists/{list_id}/members", params={"limit": 2, "offset": 0}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    assert page["items"][0]["contact_id"] == ewa  # newest first
    rest = api.get(f"/lists/{list_id}/members", params={"limit": 2, "offset": 2}).json()
    assert [item["source"] for item in rest["items"]] == ["Sklep WWW"]

    removed = api.post(f"/lists/{list_id}/members:remove", Role.OPERATOR, json={"contact_ids": [anna, 999_999]})
    assert removed.json() == {"removed": 1, "members": 2}
    assert api.count(ListMember) == 2
    assert [row["name"] for row in api.get("/lists").json()] == ["Newsletter"]
    assert {"list.create", "list.add_members", "list.remove_members"} <= set(api.audit_actions())


def test_list_input_errors_name_the_field(api: Api) -> None:
    list_id = api.post("/lists", json={"name": "Newsletter"}).json()["id"]
    duplicate = api.post("/lists", json={"name": "Newsletter"})
    assert duplicate.status_code == 409 and error_field(duplicate) == "name"
    unknown = api.post(f"/lists/{list_id}/members", json={"contact_ids": [123_456_789]})
    assert unknown.status_code == 422 and error_field(unknown) == "contact_ids"
    for huge in (2**31, 2**63, 10**30):  # past the id columns: named, not a server error
        beyond = api.post(f"/lists/{list_id}/members", json={"contact_ids": [huge]})
        assert beyond.status_code == 422 and error_field(beyond) == "contact_ids", huge
        beyond = api.post(f"/lists/{list_id}/members", json={"source_id": huge})
        assert beyond.status_code == 422 and error_field(beyond) == "source_id", huge
    nothing = api.post(f"/lists/{list_id}/members", json={})
    assert nothing.status_code == 422 and error_field(nothing) == "contact_ids"
    bad_source = api.post(
        f"/lists/{list_id}/members", json={"contact_ids": [_contact(api, "a@example.pl")], "source_id": 987_654}
    )
    assert bad_source.status_code in (404, 422) and error_field(bad_source) == "source_id"
    assert api.post("/lists", Role.VIEWER, json={"name": "Nope"}).status_code == 403


def test_another_workspaces_list_is_not_found(api: Api, session: Session) -> None:
    other = make_list(session, make_workspace(session), name="Their list")
    session.commit()
    assert api.get(f"/lists/{other.id}").status_code == 404
    response = api.post(f"/lists/{other.id}/members", json={"contact_ids": [1]})
    assert response.status_code == 404
    assert "Their list" not in response.text


def test_segment_create_count_update_and_add_to_a_list(api: Api) -> None:
    _contact(api, "anna@example.pl", "Kraków")
    _contact(api, "piotr@example.pl", "kraków")
    _contact(api, "ewa@example.pl", "Gdańsk")

    count = api.post("/segments:count", Role.VIEWER, json={"definition": KRAKOW})
    assert count.status_code == 200 and count.json() == {"count": 2}

    created = api.post("/segments", Role.OPERATOR, json={"name": "Kraków", "definition": KRAKOW})
    assert created.status_code == 201, created.text
    segment = created.json()
    assert segment["matching"] == 2 and segment["definition"]["rules"][0]["value"] == "Kraków"

    gdansk = {"match": "any", "rules": [{"field": "attribute", "key": "city", "op": "in", "value": ["Gdańsk"]}]}
    updated = api.client.put(
        f"/api/v1/segments/{segment['id']}", headers=api.headers(Role.OPERATOR), json={"definition": gdansk}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["matching"] == 1 and updated.json()["name"] == "Kraków"
    assert api.get(f"/segments/{segment['id']}").json()["matching"] == 1
    assert [s["name"] for s in api.get("/segments").json()] == ["Kraków"]

    list_id = api.post("/lists", json={"name": "Z segmentu"}).json()["id"]
    added = api.post(f"/lists/{list_id}/members", json={"segment_id": segment["id"]})
    assert added.json() == {"added": 1, "members": 1}
    both = api.post(f"/lists/{list_id}/members", json={"segment_id": segment["id"], "contact_ids": [1]})
    assert both.status_code == 422 and error_field(both) == "segment_id"


def test_a_bad_definition_names_the_rule(api: Api) -> None:
    bad = {"match": "all", "rules": [{"field": "email", "op": "like", "value": "x"}]}
    count = api.post("/segments:count", json={"definition": bad})
    assert count.status_code == 422 and error_field(count) == "definition.rules[0].op"
    created = api.post("/segments", json={"name": "Zły", "definition": bad})
    assert created.status_code == 422 and error_field(created) == "definition.rules[0].op"
    empty = api.post("/segments", json={"name": "Pusty", "definition": {"rules": []}})
    assert empty.status_code == 422 and error_field(empty) == "definition.rules"


def test_preview_counts_eligible_and_excluded_by_reason(api: Api) -> None:
    anna = _contact(api, "anna@example.pl", "Kraków", consent=True)
    piotr = _contact(api, "piotr@example.pl", "Kraków")
    list_id = api.post("/lists", json={"name": "Newsletter"}).json()["id"]
    api.post(f"/lists/{list_id}/members", json={"contact_ids": [anna, piotr]})

    preview = api.post("/audience:preview", Role.VIEWER, json={"purpose": "email_marketing", "list_id": list_id})
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert (body["total"], body["eligible"]) == (2, 1)
    assert body["excluded"]["no_consent"] == 1 and sum(body["excluded"].values()) == 1

    segment_id = api.post("/segments", json={"name": "Kraków", "definition": KRAKOW}).json()["id"]
    by_segment = api.get(f"/segments/{segment_id}/preview", params={"purpose": "email_marketing"}).json()
    assert (by_segment["total"], by_segment["eligible"], by_segment["excluded"]["no_consent"]) == (2, 1, 1)

    neither = api.post("/audience:preview", json={"purpose": "email_marketing"})
    assert neither.status_code == 422 and error_field(neither) == "list_id"
    unknown = api.post("/audience:preview", json={"purpose": "nope", "list_id": list_id})
    assert unknown.status_code == 422 and error_field(unknown) == "purpose"


def test_another_workspaces_segment_is_not_found(api: Api, session: Session) -> None:
    other = make_segment(session, make_workspace(session), name="Their segment")
    session.commit()
    assert api.get(f"/segments/{other.id}").status_code == 404
    assert api.get(f"/segments/{other.id}/preview").status_code == 404
    preview = api.post("/audience:preview", json={"purpose": "email_marketing", "segment_id": other.id})
    assert preview.status_code == 404 and error_field(preview) == "segment_id"
