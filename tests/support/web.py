"""Driving the app like a browser: sign in, carry the CSRF token."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.support.factories import PASSWORD

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
