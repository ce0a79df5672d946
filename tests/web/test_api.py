"""The JSON API: problem details for bad input, nothing written, OpenAPI published."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.factories import as_system, make_member, make_token, make_workspace
from zgoda.accounts.models import ApiToken, Workspace
from zgoda.accounts.roles import Role
from zgoda.audit import service as audit_service
from zgoda.audit.models import AuditEntry


def _owner_token(session: Session) -> tuple[Workspace, dict[str, str]]:
    workspace = make_workspace(session)
    token = make_token(session, workspace, Role.OWNER)
    session.commit()
    return workspace, {"Authorization": f"Bearer {token}"}


def _audit_count(session: Session, workspace: Workspace) -> int:
    as_system(session, workspace)
    return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def test_malformed_json_is_a_problem_that_writes_nothing(client: TestClient, session: Session) -> None:
    workspace, headers = _owner_token(session)
    before = _audit_count(session, workspace)
    response = client.post(
        "/api/v1/tokens", content=b'{"name": "x",', headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "Malformed JSON" in response.json()["detail"]
    assert _audit_count(session, workspace) == before


def test_unknown_fields_are_named(client: TestClient, session: Session) -> None:
    workspace, headers = _owner_token(session)
    response = client.post("/api/v1/tokens", json={"name": "crm", "scope": "everything"}, headers=headers)
    assert response.status_code == 422
    assert {"field": "scope", "message": "Unknown field."} in response.json()["errors"]
    as_system(session, workspace)
    assert session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.name == "crm")) == 0


def test_invalid_values_are_named(client: TestClient, session: Session) -> None:
    _, headers = _owner_token(session)
    response = client.post("/api/v1/members", json={"email": "someone@example.com", "role": "emperor"}, headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "role"


def test_token_round_trip(client: TestClient, session: Session) -> None:
    workspace, headers = _owner_token(session)
    created = client.post("/api/v1/tokens", json={"name": "crm", "role": "viewer"}, headers=headers)
    assert created.status_code == 201
    secret = created.json()["token"]
    me = client.get("/api/v1/workspace", headers={"Authorization": f"Bearer {secret}"})
    assert me.json()["slug"] == workspace.slug and me.json()["your_role"] == "viewer"
    assert "members.manage" not in me.json()["permissions"]
    listed = client.get("/api/v1/tokens", headers=headers).json()
    assert all("token" not in item for item in listed)
    assert client.delete(f"/api/v1/tokens/{created.json()['id']}", headers=headers).status_code == 204
    assert client.get("/api/v1/workspace", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_members_api_and_audit_trail(client: TestClient, session: Session) -> None:
    workspace, headers = _owner_token(session)
    other = make_member(session, make_workspace(session), Role.VIEWER)
    session.commit()
    added = client.post("/api/v1/members", json={"email": other.email, "role": "dpo"}, headers=headers)
    assert added.status_code == 201 and added.json()["role"] == "dpo"
    again = client.post("/api/v1/members", json={"email": other.email, "role": "dpo"}, headers=headers)
    assert again.status_code == 409
    audit = client.get("/api/v1/audit", params={"action": "member."}, headers=headers).json()
    assert audit[0]["action"] == "member.add" and audit[0]["actor"].startswith("token:")
    for literal in ("member_", "member%", "%"):  # letters, not wildcards
        assert client.get("/api/v1/audit", params={"action": literal}, headers=headers).json() == [], literal
    as_system(session, workspace)
    assert audit_service.list_entries(session, actor="token_") == []  # the audit page's actor filter
    assert audit_service.list_entries(session, actor="token:")
    verify = client.get("/api/v1/audit/verify", headers=headers).json()
    assert verify["ok"] and verify["entries"] >= 2


def test_unknown_member_is_a_404_problem(client: TestClient, session: Session) -> None:
    _, headers = _owner_token(session)
    response = client.post("/api/v1/members", json={"email": "ghost@example.com", "role": "viewer"}, headers=headers)
    assert response.status_code == 404
    assert response.json()["errors"][0]["field"] == "email"


def test_openapi_is_published(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/audit" in spec["paths"]
    assert not any(path.startswith("/w/") for path in spec["paths"])


def test_health(client: TestClient) -> None:
    assert client.get("/health").json()["database"] == "ok"


def test_unknown_pages_are_404_without_a_stack_trace(client: TestClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "Traceback" not in response.text and "There is nothing at this address" in response.text
