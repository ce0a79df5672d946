"""Driving the app like a browser: sign in, carry the CSRF token."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.factories import PASSWORD, as_system, make_member, make_workspace
from zgoda.accounts.models import Workspace
from zgoda.accounts.roles import Role

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "page has no CSRF token"
    return match.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the CSRF token of the new session."""
    form = client.get("/login")
    assert form.status_code == 200
    response = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": csrf_from(form.text), "next": "/workspaces"}
    )
    assert response.status_code == 200, response.text[:500]
    return csrf_from(response.text)


class Browser:
    """A workspace with one member per role; signs in as one of them and drives its pages."""

    def __init__(self, client: TestClient, session: Session) -> None:
        self.client = client
        self.session = session
        self.workspace: Workspace = make_workspace(session, name="Kawiarnia Zgoda")
        self.users = {role: make_member(session, self.workspace, role) for role in Role}
        session.commit()
        self.slug = self.workspace.slug
        self.csrf = ""

    def sign_in(self, role: Role) -> Browser:
        self.client.cookies.clear()
        self.csrf = sign_in(self.client, self.users[role].email)
        return self

    def page(self, path: str) -> str:
        response = self.client.get(f"/w/{self.slug}{path}")
        assert response.status_code == 200, response.text[:500]
        return response.text

    def post(self, path: str, **data: str) -> Response:
        return self.client.post(f"/w/{self.slug}{path}", data={"csrf_token": self.csrf, **data})

    def scoped(self) -> Session:
        as_system(self.session, self.workspace)
        return self.session

    def count(self, model: Any, *where: Any) -> int:
        return self.scoped().scalar(select(func.count()).select_from(model).where(*where)) or 0
