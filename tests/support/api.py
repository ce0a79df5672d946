"""Calling the JSON API as each role of one workspace, and reading back what it wrote."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.factories import as_system, make_token, make_workspace
from zgoda.accounts.roles import Role
from zgoda.audit.models import AuditEntry
from zgoda.consent import sources
from zgoda.contacts import service as contacts


class Api:
    """A workspace with a token per role, and a few shortcuts for calling the API as one of them."""

    def __init__(self, client: TestClient, session: Session) -> None:
        self.client = client
        self.session = session
        self.workspace = make_workspace(session)
        self.tokens = {role: make_token(session, self.workspace, role, name=role.value) for role in Role}
        session.commit()

    def headers(self, role: Role = Role.OWNER) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, path: str, role: Role = Role.OWNER, **kwargs: Any) -> Any:
        return self.client.get("/api/v1" + path, headers=self.headers(role), **kwargs)

    def post(self, path: str, role: Role = Role.OWNER, **kwargs: Any) -> Any:
        return self.client.post("/api/v1" + path, headers=self.headers(role), **kwargs)

    def patch(self, path: str, role: Role = Role.OWNER, **kwargs: Any) -> Any:
        return self.client.patch("/api/v1" + path, headers=self.headers(role), **kwargs)

    def scoped(self) -> Session:
        as_system(self.session, self.workspace)
        return self.session

    def count(self, model: Any, *where: Any) -> int:
        return self.scoped().scalar(select(func.count()).select_from(model).where(*where)) or 0

    def audit_actions(self) -> list[str]:
        return list(self.scoped().scalars(select(AuditEntry.action).order_by(AuditEntry.seq)))

    def contact(self, email: str = "anna@example.pl") -> int:
        contact = contacts.upsert_contact(self.scoped(), contacts.ContactData(email=email)).contact
        self.session.commit()
        return contact.id

    def source(self, name: str = "Sklep WWW") -> int:
        source = sources.create_source(self.scoped(), name=name, kind="web_form")
        self.session.commit()
        return source.id


def error_field(response: Any) -> str:
    """The field the first error of a problem answer names."""
    return str(response.json()["errors"][0]["field"])
