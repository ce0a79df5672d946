"""Workspace settings: the data controller's identity, through the API and the page."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.api import Api, error_field
from tests.support.factories import make_member
from tests.support.web import sign_in
from zgoda.accounts.models import Workspace
from zgoda.accounts.roles import Role
from zgoda.audit.models import AuditEntry

CONTROLLER: dict[str, Any] = {
    "legal_name": "Kawiarnia Zgoda sp. z o.o.",
    "postal_address": {"street": "ul. Długa 1", "postal_code": "00-001", "city": "Warszawa", "country": "PL"},
    "email": "biuro@kawiarnia.example.pl",
    "phone": "+48 22 123 45 67",
    "website": "https://kawiarnia.example.pl",
    "privacy_policy_url": "https://kawiarnia.example.pl/prywatnosc",
    "dpo_contact": "iod@kawiarnia.example.pl",
}


@pytest.fixture
def api(client: TestClient, session: Session) -> Api:
    return Api(client, session)


def _stored(api: Api) -> dict[str, Any]:
    api.session.expire_all()
    settings = api.session.scalars(select(Workspace.settings).where(Workspace.id == api.workspace.id)).one()
    return dict(settings)


def test_settings_start_empty_in_poland(api: Api) -> None:
    answer = api.get("/workspace/settings", Role.VIEWER)
    assert answer.status_code == 200
    assert answer.json() == {"controller": None, "jurisdiction": "PL"}


def test_owner_sets_the_controller_identity_and_it_is_audited(api: Api) -> None:
    saved = api.patch("/workspace/settings", json={"controller": CONTROLLER})
    assert saved.status_code == 200, saved.text
    stored = _stored(api)
    assert set(stored["controller"]) == {
        "legal_name",
        "postal_address",
        "email",
        "phone",
        "website",
        "privacy_policy_url",
        "dpo_contact",
    }
    assert stored["controller"]["phone"] == "+48221234567"
    assert stored["controller"]["postal_address"]["city"] == "Warszawa"
    assert stored["jurisdiction"] == "PL"
    entry = api.scoped().scalars(select(AuditEntry).where(AuditEntry.action == "workspace.settings_update")).one()
    assert entry.summary["before"]["controller"] is None
    assert entry.summary["after"]["controller"]["legal_name"] == CONTROLLER["legal_name"]
    assert entry.actor == "token:owner"

    again = api.patch("/workspace/settings", json={"controller": CONTROLLER})
    assert again.status_code == 200
    assert api.audit_actions().count("workspace.settings_update") == 1  # nothing changed, nothing logged
    moved = api.patch("/workspace/settings", json={"jurisdiction": "DE"})
    assert moved.json()["jurisdiction"] == "DE" and moved.json()["controller"]["legal_name"] == CONTROLLER["legal_name"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "biuro(at)kawiarnia"}, "controller.email"),
        ({"website": "kawiarnia.example.pl"}, "controller.website"),
        ({"privacy_policy_url": "javascript:alert(1)"}, "controller.privacy_policy_url"),
        ({"phone": "22 123"}, "controller.phone"),
        ({"legal_name": ""}, "controller.legal_name"),
        (
            {"postal_address": {"street": "Długa 1", "postal_code": "00-001", "city": "Warszawa"}},
            "controller.postal_address.country",
        ),
        (
            {"postal_address": {**CONTROLLER["postal_address"], "country": "Poland"}},
            "controller.postal_address.country",
        ),
        ({"vat_id": "PL123"}, "controller.vat_id"),
    ],
)
def test_bad_settings_name_the_field_and_change_nothing(api: Api, change: dict[str, Any], field: str) -> None:
    response = api.patch("/workspace/settings", json={"controller": {**CONTROLLER, **change}})
    assert response.status_code == 422, response.text
    assert error_field(response) == field
    assert "controller" not in _stored(api)
    assert "workspace.settings_update" not in api.audit_actions()


def test_bad_jurisdiction_is_named(api: Api) -> None:
    response = api.patch("/workspace/settings", json={"jurisdiction": "pl-PL"})
    assert response.status_code == 422 and error_field(response) == "jurisdiction"


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.DPO, Role.VIEWER])
def test_only_the_owner_changes_settings(api: Api, role: Role) -> None:
    assert api.patch("/workspace/settings", role, json={"controller": CONTROLLER}).status_code == 403
    assert api.get("/workspace/settings", role).status_code == 200


def test_settings_page(api: Api, client: TestClient, session: Session) -> None:
    owner = make_member(session, api.workspace, Role.OWNER)
    viewer = make_member(session, api.workspace, Role.VIEWER)
    session.commit()
    slug = api.workspace.slug
    csrf = sign_in(client, owner.email)
    form = {
        "csrf_token": csrf,
        "legal_name": "Zgoda Catering",
        "street": "ul. Krótka 2",
        "postal_code": "30-001",
        "city": "Kraków",
        "country": "pl",
        "email": "kontakt@catering.example.pl",
        "phone": "",
        "website": "",
        "privacy_policy_url": "https://catering.example.pl/rodo",
        "dpo_contact": "",
        "jurisdiction": "PL",
    }
    bad = client.post(f"/w/{slug}/settings", data={**form, "email": "nope"})
    assert bad.status_code == 422 and "controller.email" in bad.text
    assert 'value="Zgoda Catering"' in bad.text  # the form keeps what was typed
    assert "controller" not in _stored(api)
    saved = client.post(f"/w/{slug}/settings", data=form)
    assert saved.status_code == 200 and 'id="settings-saved"' in saved.text
    controller = _stored(api)["controller"]
    assert controller["postal_address"]["country"] == "PL" and controller["phone"] is None

    client.cookies.clear()
    csrf = sign_in(client, viewer.email)
    page = client.get(f"/w/{slug}/settings")
    assert page.status_code == 200 and "Zgoda Catering" in page.text and "<fieldset disabled>" in page.text
    assert client.post(f"/w/{slug}/settings", data={**form, "csrf_token": csrf}).status_code == 403
