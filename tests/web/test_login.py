"""Signing in and out: CSRF, wrong passwords, rate limit, expired sessions, open redirects."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tests.support.factories import PASSWORD, make_member, make_workspace
from tests.support.web import csrf_from, sign_in
from zgoda.accounts.models import LoginFailure, LoginSession
from zgoda.accounts.roles import Role
from zgoda.audit.models import PlatformAuditEntry
from zgoda.core.clock import utcnow


def _owner(session: Session) -> tuple[str, str]:
    workspace = make_workspace(session)
    user = make_member(session, workspace, Role.OWNER)
    session.commit()
    return user.email, workspace.slug


def test_sign_in_lands_on_the_workspace_and_sign_out_ends_the_session(client: TestClient, session: Session) -> None:
    email, slug = _owner(session)
    form = client.get("/login")
    response = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf_from(form.text)})
    assert response.status_code == 200
    assert response.url.path == f"/w/{slug}/"
    assert "Dashboard" in response.text
    csrf = csrf_from(response.text)

    response = client.post("/logout", data={"csrf_token": csrf})
    assert response.url.path == "/login"
    assert "You have signed out" in response.text
    assert client.get(f"/w/{slug}/").url.path == "/login"
    assert session.scalar(select(func.count()).select_from(LoginSession)) == 0


def test_wrong_password_is_refused_without_a_session(client: TestClient, session: Session) -> None:
    email, _ = _owner(session)
    form = client.get("/login")
    response = client.post(
        "/login", data={"email": email, "password": "wrong-password!", "csrf_token": csrf_from(form.text)}
    )
    assert response.status_code == 401
    assert "Wrong email or password" in response.text
    assert "zgoda_session" not in client.cookies
    assert session.scalar(select(func.count()).select_from(LoginSession)) == 0


def test_unknown_user_gets_the_same_answer_as_a_wrong_password(client: TestClient) -> None:
    form = client.get("/login")
    response = client.post(
        "/login", data={"email": "nobody@example.com", "password": "whatever-123", "csrf_token": csrf_from(form.text)}
    )
    assert response.status_code == 401
    assert "Wrong email or password" in response.text


def test_sign_in_without_csrf_token_is_refused_and_writes_nothing(client: TestClient, session: Session) -> None:
    email, _ = _owner(session)
    client.get("/login")
    before = session.scalar(select(func.count()).select_from(PlatformAuditEntry))
    response = client.post("/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 403
    assert "security token" in response.text
    assert "zgoda_session" not in client.cookies
    assert session.scalar(select(func.count()).select_from(PlatformAuditEntry)) == before


def test_sign_in_is_rate_limited_per_address(client: TestClient, session: Session) -> None:
    email, _ = _owner(session)
    csrf = csrf_from(client.get("/login").text)
    for _ in range(5):
        assert (
            client.post("/login", data={"email": email, "password": "nope-nope-1", "csrf_token": csrf}).status_code
            == 401
        )
    response = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf})
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.text
    assert int(response.headers["retry-after"]) > 0
    assert session.scalar(select(func.count()).select_from(LoginFailure).where(LoginFailure.email == email)) == 5


def test_a_successful_sign_in_clears_earlier_failures(client: TestClient, session: Session) -> None:
    email, _ = _owner(session)
    csrf = csrf_from(client.get("/login").text)
    client.post("/login", data={"email": email, "password": "nope-nope-1", "csrf_token": csrf})
    assert client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf}).status_code == 200
    assert session.scalar(select(func.count()).select_from(LoginFailure).where(LoginFailure.email == email)) == 0


def test_expired_session_asks_to_sign_in_again(client: TestClient, session: Session) -> None:
    email, slug = _owner(session)
    sign_in(client, email)
    session.execute(update(LoginSession).values(expires_at=utcnow() - timedelta(minutes=1)))
    session.commit()
    response = client.get(f"/w/{slug}/")
    assert response.url.path == "/login"
    assert "Your session has expired" in response.text


def test_post_with_a_session_but_no_csrf_token_changes_nothing(client: TestClient, session: Session) -> None:
    email, slug = _owner(session)
    sign_in(client, email)
    response = client.post(f"/w/{slug}/tokens", data={"name": "sneaky", "role": "owner"})
    assert response.status_code == 403
    assert "security token" in response.text
    assert "sneaky" not in client.get(f"/w/{slug}/tokens").text


def test_next_parameter_never_redirects_off_site(client: TestClient, session: Session) -> None:
    email, _ = _owner(session)
    csrf = csrf_from(client.get("/login").text)
    response = client.post(
        "/login",
        data={"email": email, "password": PASSWORD, "csrf_token": csrf, "next": "//evil.example.com/x"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_sign_in_is_recorded_in_the_platform_audit_chain(client: TestClient, session: Session) -> None:
    email, _ = _owner(session)
    sign_in(client, email)
    actions = session.scalars(select(PlatformAuditEntry.action).where(PlatformAuditEntry.actor == email)).all()
    assert "user.sign_in" in actions
