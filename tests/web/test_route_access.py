"""Every route, every role, both tenants.

This test walks the application's routes, so a new route is covered the moment it is
added: it must declare ``require(permission)`` or ``public(reason)``, and each path
parameter it takes must have a factory below, or this test fails and says which.
"""

from __future__ import annotations

import io
import itertools
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.feedback.test_views import write_caught
from tests.support.campaigns import make_campaign, make_list, make_segment, make_sending_domain, make_template
from tests.support.factories import TenantPair, as_system, make_member, make_tenant_pair, make_token
from zgoda.accounts import service as accounts
from zgoda.accounts.models import ApiToken, Membership, User, Workspace
from zgoda.accounts.roles import Role, role_allows
from zgoda.audit import service as audit
from zgoda.consent import purposes, sources
from zgoda.consent.models import Source
from zgoda.contacts import service as contacts
from zgoda.core.settings import Settings
from zgoda.feedback import suppression
from zgoda.web.app import iter_routes
from zgoda.web.context import USER_PERMISSION, WORKSPACE_HEADER, _dependant_reads_form, csrf_token_for

MARKER = "SECRET-B-MARKER"
PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


def _mark(workspace: Workspace) -> str:
    """Text a factory puts into the objects it makes, to catch leaks of the other workspace's."""
    return f"MARK-{workspace.slug}-MARK"


def _member_id(session: Session, workspace: Workspace) -> int:
    make_member(session, workspace, Role.VIEWER)
    return max(m.id for m in session.query(Membership).filter_by(workspace_id=workspace.id))


def _token_id(session: Session, workspace: Workspace) -> int:
    make_token(session, workspace, Role.VIEWER, name=f"factory {_mark(workspace)}")
    as_system(session, workspace)
    return max(t.id for t in session.query(ApiToken))


def _audit_entry_id(session: Session, workspace: Workspace) -> int:
    as_system(session, workspace)
    return audit.record(session, action="test.factory", summary={"marker": _mark(workspace)}).id


_numbers = itertools.count(1)
# Evidence files live under the app's data folder; the fixture below points this at it.
EVIDENCE_STORAGE: dict[str, Path] = {}


def _source_id(session: Session, workspace: Workspace) -> int:
    as_system(session, workspace)
    return sources.create_source(session, name=f"Source {next(_numbers)} {_mark(workspace)}", kind="web_form").id


def _evidence_id(session: Session, workspace: Workspace) -> int:
    """Evidence of the newest source, so /sources/{source_id}/evidence/{evidence_id} pairs them up."""
    as_system(session, workspace)
    source_id = session.query(Source.id).order_by(Source.id.desc()).limit(1).scalar() or _source_id(session, workspace)
    as_system(session, workspace)
    return sources.add_evidence(
        session,
        source_id=source_id,
        filename=f"form {_mark(workspace)}.txt",
        content_type="text/plain",
        data=f"evidence {next(_numbers)} {_mark(workspace)}".encode(),
        storage_dir=EVIDENCE_STORAGE["dir"],
    ).id


def _purpose(session: Session, workspace: Workspace) -> tuple[int, str]:
    as_system(session, workspace)
    purpose = purposes.create_purpose(
        session, key=f"factory_{next(_numbers)}", name=f"Purpose {_mark(workspace)}", channel="email"
    )
    return purpose.id, purpose.key


def _notice_id(session: Session, workspace: Workspace) -> int:
    purpose_id, _ = _purpose(session, workspace)
    notice = purposes.create_notice(
        session, purpose_id=purpose_id, language="pl", title=f"Notice {_mark(workspace)}", text="Zgadzam się."
    )
    return notice.id


def _contact_id(session: Session, workspace: Workspace) -> int:
    as_system(session, workspace)
    data = contacts.ContactData(email=f"contact{next(_numbers)}@example.com", first_name=_mark(workspace))
    return contacts.upsert_contact(session, data).contact.id


def _job_id(session: Session, workspace: Workspace) -> int:
    """A queued dry-run import of a one-row file, from a source whose name carries the mark."""
    from zgoda.contacts.imports import service as imports

    source_id = _source_id(session, workspace)
    as_system(session, workspace)
    staged = imports.stage_file(
        io.BytesIO(f"email,imie\nx{next(_numbers)}@example.com,{_mark(workspace)}\n".encode()),
        filename=f"{_mark(workspace)}.csv",
        data_dir=Path(tempfile.mkdtemp()),
    )
    return imports.create_job(session, source_id=source_id, staged=staged, dry_run=True).job.id


def _list_id(session: Session, workspace: Workspace) -> int:
    return make_list(session, workspace, name=f"List {next(_numbers)} {_mark(workspace)}").id


def _segment_id(session: Session, workspace: Workspace) -> int:
    return make_segment(session, workspace, name=f"Segment {next(_numbers)} {_mark(workspace)}").id


def _template_id(session: Session, workspace: Workspace) -> int:
    return make_template(session, workspace, name=f"Template {next(_numbers)} {_mark(workspace)}").id


def _campaign_id(session: Session, workspace: Workspace) -> int:
    return make_campaign(session, workspace, name=f"Campaign {next(_numbers)} {_mark(workspace)}").id


def _domain_id(session: Session, workspace: Workspace) -> int:
    return make_sending_domain(session, workspace).id


def _suppression_id(session: Session, workspace: Workspace) -> int:
    as_system(session, workspace)
    entry, _ = suppression.suppress(
        session, address=f"suppressed{next(_numbers)}@example.com", reason="operator", detail=_mark(workspace)
    )
    return entry.id


# The sink's Maildir (platform-wide); the fixture below points the app's settings at it.
SINK_MAILDIR: dict[str, Path] = {}


def _message_key(session: Session, workspace: Workspace) -> str:
    """A message the sink caught for a new campaign of the workspace (its List-Id names the workspace)."""
    campaign_id = _campaign_id(session, workspace)
    return write_caught(
        SINK_MAILDIR["dir"], slug=workspace.slug, campaign_id=campaign_id, subject=f"Caught {_mark(workspace)}"
    )


# One factory per path parameter name used anywhere in the app: it makes an object in
# the given workspace and returns its id (or key). A route with an unknown parameter fails below.
ID_FACTORIES: dict[str, Callable[[Session, Workspace], int | str]] = {
    "member_id": _member_id,
    "token_id": _token_id,
    "entry_id": _audit_entry_id,
    "source_id": _source_id,
    "evidence_id": _evidence_id,
    "purpose_id": lambda session, workspace: _purpose(session, workspace)[0],
    "purpose_key": lambda session, workspace: _purpose(session, workspace)[1],
    "notice_id": _notice_id,
    "contact_id": _contact_id,
    "job_id": _job_id,
    "list_id": _list_id,
    "segment_id": _segment_id,
    "template_id": _template_id,
    "campaign_id": _campaign_id,
    "domain_id": _domain_id,
    "suppression_id": _suppression_id,
    "message_key": _message_key,
    "token": lambda session, workspace: "not-a-signed-token",  # public pages and hooks: the token is the credential
}


def _permission_of(dependant: Dependant) -> str | None:
    for dependency in dependant.dependencies:
        permission = getattr(dependency.call, "zgoda_permission", None)
        if permission is not None:
            return str(permission)
        nested = _permission_of(dependency)
        if nested is not None:
            return nested
    return None


@dataclass(frozen=True)
class Walked:
    """A route with its full path (prefix included)."""

    path: str
    route: APIRoute

    @property
    def methods(self) -> set[str]:
        return set(self.route.methods)

    @property
    def dependant(self) -> Dependant:
        return self.route.dependant

    @property
    def endpoint(self) -> Callable[..., Any]:
        return self.route.endpoint


def _routes(app: FastAPI) -> list[Walked]:
    return [Walked(path, route) for path, route in iter_routes(app)]


def _calls(route: Walked) -> list[tuple[str, Walked]]:
    return [(method, route) for method in sorted(route.methods - {"HEAD"})]


def _is_api(route: Walked) -> bool:
    return route.path.startswith("/api/")


class Caller:
    """Builds credentials for users and tokens without going through the (slow) password form."""

    def __init__(self, client: TestClient, session: Session, settings: Settings) -> None:
        self.client = client
        self.session = session
        self.settings = settings

    def browser(self, user: User) -> dict[str, str]:
        as_system(self.session)
        started = accounts.start_login_session(
            self.session, user=user, lifetime=timedelta(hours=1), ip=None, user_agent="route-walker"
        )
        self.session.commit()
        return {
            "Cookie": f"zgoda_session={started.token}",
            "X-CSRF-Token": csrf_token_for(self.settings, started.token),
        }

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, headers: dict[str, str]) -> Any:
        kwargs: dict[str, Any] = {"headers": headers, "follow_redirects": False}
        if method in {"POST", "PUT", "PATCH"}:
            if path.startswith("/api/"):
                kwargs["json"] = {}
            else:
                kwargs["data"] = {}
        return self.client.request(method, path, **kwargs)


def _protected_routes(app: FastAPI) -> list[Walked]:
    """The routes that declare a permission with require(...), not public(...)."""
    return [route for route in _routes(app) if _permission_of(route.dependant) is not None]


def _owner(caller: Caller, pair: TenantPair, route: Walked) -> dict[str, str]:
    """Workspace A's owner: a bearer token for the API, a signed-in browser for the pages."""
    return caller.bearer(pair.tokens_a[Role.OWNER]) if _is_api(route) else caller.browser(pair.users_a[Role.OWNER])


def _fill(route: Walked, session: Session, workspace: Workspace, slug: str | None = None) -> str:
    path = route.path
    for name in PATH_PARAM.findall(route.path):
        if name == "slug":
            value = slug or workspace.slug
        else:
            value = str(ID_FACTORIES[name](session, workspace))
        path = re.sub(r"{" + name + r"(?::[^}]+)?}", value, path)
    session.commit()
    return path


@pytest.fixture
def pair(session: Session, settings: Settings) -> TenantPair:
    EVIDENCE_STORAGE["dir"] = settings.data_dir
    SINK_MAILDIR["dir"] = settings.sink_maildir = settings.data_dir / "sink"
    return make_tenant_pair(session)


@pytest.fixture
def caller(client: TestClient, session: Session, settings: Settings) -> Caller:
    return Caller(client, session, settings)


def test_every_route_declares_who_may_call_it(app: FastAPI) -> None:
    routes = _routes(app)
    assert len(routes) >= 15, "the walker found suspiciously few routes"
    undeclared = [
        f"{sorted(r.methods)} {r.path}"
        for r in routes
        if _permission_of(r.dependant) is None and getattr(r.endpoint, "zgoda_public", None) is None
    ]
    assert not undeclared, f"routes without require(...) or public(...): {undeclared}"
    unknown = sorted(
        {name for r in routes for name in PATH_PARAM.findall(r.path) if name != "slug" and name not in ID_FACTORIES}
    )
    assert not unknown, f"path parameters with no factory in ID_FACTORIES: {unknown}"


def test_every_protected_route_refuses_anonymous_callers(
    app: FastAPI, caller: Caller, pair: TenantPair, session: Session
) -> None:
    checked = 0
    for route in _protected_routes(app):
        for method, _ in _calls(route):
            response = caller.call(method, _fill(route, session, pair.a), {})
            if _is_api(route):
                assert response.status_code == 401, f"{method} {route.path}: {response.status_code}"
                assert response.headers["content-type"].startswith("application/problem+json")
            else:
                assert response.status_code == 303, f"{method} {route.path}: {response.status_code}"
                assert response.headers["location"].startswith("/login")
            checked += 1
    assert checked >= 15


def test_every_route_with_every_role(app: FastAPI, caller: Caller, pair: TenantPair, session: Session) -> None:
    """Allowed roles get through (no 401/403/404); others get 403 — via the browser and via tokens."""
    checked = 0
    for route in _routes(app):
        permission = _permission_of(route.dependant)
        if permission is None:
            continue
        for method, _ in _calls(route):
            for role in Role:
                if _is_api(route):
                    headers = caller.bearer(pair.tokens_a[role])
                else:
                    headers = caller.browser(pair.users_a[role])
                response = caller.call(method, _fill(route, session, pair.a), headers)
                allowed = permission == USER_PERMISSION or role_allows(role, permission)
                where = f"{method} {route.path} as {role.value} ({permission})"
                if allowed:
                    assert response.status_code not in {401, 403, 404}, f"{where}: refused {response.status_code}"
                    assert response.status_code < 500, f"{where}: failed {response.status_code}"
                else:
                    assert response.status_code == 403, f"{where}: expected 403, got {response.status_code}"
                checked += 1
    assert checked >= 60


def test_no_route_reaches_another_workspace(app: FastAPI, caller: Caller, pair: TenantPair, session: Session) -> None:
    """A's owner asking for B's objects gets 404, and A's lists never show B's data."""
    b_emails = [user.email for user in pair.users_b.values()]
    for route in _protected_routes(app):
        params = PATH_PARAM.findall(route.path)
        for method, _ in _calls(route):
            headers = _owner(caller, pair, route)
            where = f"{method} {route.path}"
            if "slug" in params:
                response = caller.call(method, _fill(route, session, pair.b), headers)
                assert response.status_code == 404, f"{where} with B's slug: {response.status_code}"
            if any(name != "slug" for name in params):
                # own workspace in the URL, the other workspace's object ids
                path = route.path
                for name in params:
                    value = pair.a.slug if name == "slug" else str(ID_FACTORIES[name](session, pair.b))
                    path = re.sub(r"{" + name + r"(?::[^}]+)?}", value, path)
                session.commit()
                response = caller.call(method, path, headers)
                assert response.status_code == 404, f"{where} with B's ids: {response.status_code}"
            if method == "GET":
                response = caller.call(method, _fill(route, session, pair.a), headers)
                assert MARKER not in response.text, f"{where} leaked workspace B's data"
                assert _mark(pair.b) not in response.text, f"{where} leaked an object of workspace B"
                for email in b_emails:
                    assert email not in response.text, f"{where} leaked a member of workspace B"


def test_a_token_cannot_be_pointed_at_another_workspace(caller: Caller, pair: TenantPair) -> None:
    headers = {**caller.bearer(pair.tokens_a[Role.OWNER]), WORKSPACE_HEADER: pair.b.slug}
    response = caller.call("GET", "/api/v1/members", headers)
    assert response.status_code == 404
    assert MARKER not in response.text


def test_a_browser_session_cannot_name_a_workspace_it_is_not_in(caller: Caller, pair: TenantPair) -> None:
    headers = {**caller.browser(pair.users_a[Role.OWNER]), WORKSPACE_HEADER: pair.b.slug}
    assert caller.call("GET", "/api/v1/members", headers).status_code == 404
    headers[WORKSPACE_HEADER] = pair.a.slug
    response = caller.call("GET", "/api/v1/members", headers)
    assert response.status_code == 200
    assert pair.users_a[Role.VIEWER].email in response.text


def test_revoked_tokens_are_refused(caller: Caller, pair: TenantPair, session: Session) -> None:
    as_system(session, pair.a)
    token = session.query(ApiToken).filter_by(name="a-owner").one()
    accounts.revoke_api_token(session, token_id=token.id)
    session.commit()
    response = caller.call("GET", "/api/v1/workspace", caller.bearer(pair.tokens_a[Role.OWNER]))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


@pytest.mark.parametrize("beyond", ["99999999999999999999", "9223372036854775808", "\u0663"])
def test_an_id_no_database_column_holds_is_not_found(
    app: FastAPI, caller: Caller, pair: TenantPair, session: Session, beyond: str
) -> None:
    """An id past the 64-bit integer range (SQLite's, PostgreSQL's bigint) or not in ASCII digits: 404, not a 500."""
    checked = 0
    for route in _protected_routes(app):
        params = [param.name for param in route.dependant.path_params if param.field_info.annotation is int]
        if not params:
            continue
        for method, _ in _calls(route):
            headers = _owner(caller, pair, route)
            for wrong in params:
                path = route.path
                for name in PATH_PARAM.findall(route.path):
                    value = (
                        pair.a.slug
                        if name == "slug"
                        else beyond
                        if name == wrong
                        else str(ID_FACTORIES[name](session, pair.a))
                    )
                    path = re.sub(r"{" + name + r"(?::[^}]+)?}", value, path)
                session.commit()
                response = caller.call(method, path, headers)
                assert response.status_code == 404, (
                    f"{method} {route.path} with {wrong}={beyond}: {response.status_code}"
                )
                checked += 1
    assert checked >= 30


def test_an_integer_query_parameter_past_64_bits_is_named(
    app: FastAPI, caller: Caller, pair: TenantPair, session: Session
) -> None:
    """Every integer query parameter (offsets, limits, ids) answers 422 naming itself, not a 500."""
    checked = 0
    for route in _protected_routes(app):
        names = [
            param.alias
            for param in route.dependant.query_params
            if param.field_info.annotation is int or int in get_args(param.field_info.annotation)
        ]
        for method, _ in _calls(route):
            headers = _owner(caller, pair, route)
            for name in names:
                path = _fill(route, session, pair.a)
                session.commit()
                response = caller.call(method, f"{path}?{name}=99999999999999999999", headers)
                assert response.status_code == 422, f"{method} {route.path}?{name}=...: {response.status_code}"
                if _is_api(route):
                    assert response.json()["errors"][0]["field"] == name
                checked += 1
    assert checked >= 10


def test_a_nul_character_anywhere_in_the_request_is_refused(
    app: FastAPI, caller: Caller, pair: TenantPair, session: Session
) -> None:
    """PostgreSQL's text refuses NUL (SQLite keeps it): in a query parameter or a form field it is named (422),
    in the address it is nothing there (404), on every route; never a 500 from the database."""
    checked = 0
    for route in _protected_routes(app):
        headers = _owner(caller, pair, route)
        for method, _ in _calls(route):
            path = _fill(route, session, pair.a)
            where = f"{method} {route.path}"
            response = caller.client.request(method, f"{path}?note=a%00b", headers=headers, follow_redirects=False)
            assert response.status_code == 422, f"{where} with a NUL in the query: {response.status_code}"
            if "slug" in PATH_PARAM.findall(route.path):
                response = caller.call(method, _fill(route, session, pair.a, slug="a%00b"), headers)
                assert response.status_code == 404, f"{where} with a NUL in the slug: {response.status_code}"
            if method == "POST" and _dependant_reads_form(route.dependant):
                response = caller.client.post(path, data={"name": "a\x00b"}, headers=headers, follow_redirects=False)
                assert response.status_code == 422, f"{where} with a NUL in a form field: {response.status_code}"
                assert "name holds a NUL character" in response.text, where
            checked += 1
    assert checked >= 100
