"""Who is asking, in which workspace, with which role: resolved once per request."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

from fastapi import Depends, Request, params
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from zgoda.accounts import service as accounts
from zgoda.accounts.models import ApiToken, Membership, User, Workspace
from zgoda.accounts.roles import Role, role_allows
from zgoda.core.crypto import constant_time_equal, keyed_hash
from zgoda.core.db import MAX_BIGINT, NUL
from zgoda.core.errors import AuthenticationRequired, CsrfFailed, InvalidInput, NotFound, PermissionDenied
from zgoda.core.settings import Settings
from zgoda.core.tenancy import Actor, bind_scope
from zgoda.web.forms import whole_number

SESSION_COOKIE = "zgoda_session"
PRE_SESSION_COOKIE = "zgoda_pre"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
WORKSPACE_HEADER = "x-zgoda-workspace"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
USER_PERMISSION = "user"  # signed in, no workspace needed


class SessionExpired(AuthenticationRequired):
    """The browser's sign-in ran out; the page asks to sign in again."""


def get_settings_dep(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A session for this request: committed when the handler succeeds, rolled back otherwise."""
    session: Session = request.app.state.database.factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def csrf_token_for(settings: Settings, session_token: str, *, pre_login: bool = False) -> str:
    """The CSRF token bound to a sign-in (or a pre-sign-in cookie): an HMAC, nothing stored."""
    return keyed_hash(settings.resolved_secret_key(), "csrf-pre" if pre_login else "csrf", session_token)


async def submitted_csrf(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def request_body(request: Request) -> bytes:
    """The raw body, as a dependency read on the event loop.

    Handlers that do blocking work (the database, Argon2, signatures) are plain ``def`` and run in the
    thread pool; as ``async def`` they would stall every other request of the process meanwhile.
    """
    return await request.body()


async def request_form(request: Request) -> FormData:
    """The posted form, as a dependency read on the event loop (see :func:`request_body`)."""
    return await request.form()


@dataclass
class RequestContext:
    """Everything a handler needs to know about the caller; the session is scoped to the workspace."""

    session: Session
    settings: Settings
    actor: Actor
    user: User | None = None
    token: ApiToken | None = None
    workspace: Workspace | None = None
    role: Role | None = None
    csrf_token: str | None = None
    memberships: list[Membership] = field(default_factory=list)

    @property
    def workspace_required(self) -> Workspace:
        if self.workspace is None:
            raise NotFound("Name a workspace for this request.", field="workspace")
        return self.workspace

    def can(self, permission: str) -> bool:
        return self.role is not None and role_allows(self.role, permission)


def _workspace_slug(request: Request) -> str | None:
    slug = request.path_params.get("slug")
    if slug is None:
        slug = request.headers.get(WORKSPACE_HEADER)
    return str(slug) if slug else None


def _resolve(
    request: Request, session: Session, settings: Settings, permission: str, submitted_csrf: str | None
) -> RequestContext:
    ip = client_ip(request)
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        token = accounts.resolve_api_token(session, authorization[7:].strip())
        if token is None:
            raise AuthenticationRequired("The API token is unknown or revoked.")
        workspace = session.get(Workspace, token.workspace_id)
        assert workspace is not None
        slug = _workspace_slug(request)
        if slug is not None and slug != workspace.slug:
            raise NotFound(f"There is no workspace '{slug}'.", field="workspace")
        actor = Actor(label=f"token:{token.name}", via="api", role=token.role, ip=ip)
        context = RequestContext(
            session=session, settings=settings, actor=actor, token=token, workspace=workspace, role=Role(token.role)
        )
    else:
        context = _resolve_browser(request, session, settings, ip, submitted_csrf)
    if permission != USER_PERMISSION:
        if context.role is None:
            raise NotFound("Name a workspace for this request.", field="workspace")
        if not role_allows(context.role, permission):
            raise PermissionDenied(f"Your role ({context.role}) does not allow this ({permission}).")
    bind_scope(session, workspace_id=context.workspace.id if context.workspace else None, actor=context.actor)
    return context


def _resolve_browser(
    request: Request, session: Session, settings: Settings, ip: str | None, submitted_csrf: str | None
) -> RequestContext:
    cookie = request.cookies.get(SESSION_COOKIE)
    login = accounts.resolve_login_session(session, cookie) if cookie else None
    if login is None:
        if cookie and accounts.login_session_expired(session, cookie):
            raise SessionExpired("Your session has expired. Sign in again.")
        raise AuthenticationRequired("Sign in to continue.")
    assert cookie is not None
    user = login.user
    csrf = csrf_token_for(settings, cookie)
    if request.method not in SAFE_METHODS and not constant_time_equal(submitted_csrf or "", csrf):
        raise CsrfFailed("This form has expired or lacks its security token. Reload the page and try again.")
    memberships = list(accounts.memberships_of(session, user))
    context = RequestContext(
        session=session,
        settings=settings,
        user=user,
        csrf_token=csrf,
        memberships=memberships,
        actor=Actor(label=user.email, via="ui", user_id=user.id, ip=ip),
    )
    slug = _workspace_slug(request)
    if slug is not None:
        membership = next((m for m in memberships if m.workspace.slug == slug), None)
        if membership is None:
            raise NotFound(f"There is no workspace '{slug}', or you are not a member of it.", field="workspace")
        context.workspace = membership.workspace
        context.role = Role(membership.role)
        context.actor = Actor(label=user.email, via="ui", user_id=user.id, role=membership.role, ip=ip)
    return context


Dependency = Callable[..., Coroutine[Any, Any, RequestContext]]


def require(permission: str) -> Any:
    """A route dependency: the caller must hold ``permission`` in the request's workspace.

    The permission is kept on the dependency so the access test can walk every route.
    """

    async def dependency(
        request: Request,
        session: Session = Depends(get_session),
        settings: Settings = Depends(get_settings_dep),
    ) -> RequestContext:
        # the body is read on the event loop; the database work runs in the thread pool, so a slow
        # query or a lock wait never stalls the other requests of the process
        submitted = await submitted_csrf(request) if request.method not in SAFE_METHODS else None
        return await run_in_threadpool(_resolve, request, session, settings, permission, submitted)

    dependency.zgoda_permission = permission  # type: ignore[attr-defined]
    return Depends(dependency)


def is_row_id(raw: str) -> bool:
    """Whether a path segment is a number a row could have: ASCII digits (``str.isdigit`` also takes "²"
    and "٣") up to :data:`MAX_BIGINT`. A larger one is no row, and binding it to a query would fail as an
    OverflowError."""
    return raw.isascii() and raw.isdigit() and int(raw) <= MAX_BIGINT


async def bindable_input(request: Request) -> None:
    """An application-wide dependency: every value of the address and of a posted form is one the database
    can bind, so that none fails in a query as a 500; one check here covers every route, present and future.

    Validation takes integers of any size, and a number past 64 bits fails as an OverflowError; PostgreSQL's
    text refuses a NUL character (SQLite would keep it). A path value that is not a row id, or holds a NUL,
    answers 404; a query parameter or form field that does answers 422 naming it. (JSON bodies: StrictInput.)
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    for param in route.dependant.path_params:
        raw = str(request.path_params.get(param.name, ""))
        if NUL in raw or (param.field_info.annotation is int and not is_row_id(raw)):
            raise NotFound("There is nothing at this address.", field=param.name)
    for name, raw in request.query_params.multi_items():
        _refuse_nul(name, raw)
    for param in route.dependant.query_params:
        if not _takes_int(param.field_info.annotation):
            continue
        for raw in request.query_params.getlist(param.alias):
            number = whole_number(raw)
            if number is not None and abs(number) > MAX_BIGINT:
                raise InvalidInput(f"{param.alias} is out of range.", field=param.alias)
    if _reads_form(route):
        for name, value in (await request.form()).multi_items():
            _refuse_nul(name, value)


def _refuse_nul(name: str, value: object) -> None:
    if NUL in name or (isinstance(value, str) and NUL in value):
        field = name.replace(NUL, "")
        raise InvalidInput(f"{field} holds a NUL character.", field=field)


def _takes_int(annotation: Any) -> bool:
    return annotation is int or int in get_args(annotation)


def _reads_form(route: APIRoute) -> bool:
    """Whether the route reads a posted form (Form parameters, or :func:`request_form`); only then is the
    body read here: a webhook verifies the signature of its raw body, which reading a form would consume.
    Worked out once per route and kept on it."""
    found = route.__dict__.get("zgoda_reads_form")
    if found is None:
        found = route.__dict__["zgoda_reads_form"] = _dependant_reads_form(route.dependant)
    return bool(found)


def _dependant_reads_form(dependant: Dependant) -> bool:
    if any(isinstance(param.field_info, params.Form) for param in dependant.body_params):
        return True
    return any(sub.call is request_form or _dependant_reads_form(sub) for sub in dependant.dependencies)


def require_existing(permission: str, **lookups: Callable[[Session, int], object]) -> Any:
    """Like :func:`require`, and each named path id must be an object of the caller's workspace.

    Checked before the request body is validated, so another workspace's id answers 404 whatever
    the body holds. Each lookup raises ``NotFound`` (a service's ``get_...``).
    """
    guard = require(permission)

    def dependency(request: Request, ctx: RequestContext = guard) -> RequestContext:
        for name, lookup in lookups.items():
            raw = str(request.path_params.get(name, ""))
            if not is_row_id(raw):
                raise NotFound("There is nothing at this address.", field=name)
            lookup(ctx.session, int(raw))
        return ctx

    return Depends(dependency)


def require_user() -> Any:
    """A route dependency: any signed-in user or API token, no workspace needed."""
    return require(USER_PERMISSION)


def public(reason: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a route as open to anyone, with the reason (checked by the access test)."""

    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        endpoint.zgoda_public = reason  # type: ignore[attr-defined]
        return endpoint

    return mark
