"""HTML pages: sign-in, sign-out, the workspace switcher, dashboard, members and tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from zgoda.accounts import service
from zgoda.accounts.roles import Role
from zgoda.accounts.schemas import WorkspaceSettingsUpdate
from zgoda.audit import service as audit
from zgoda.consent import ledger, purposes
from zgoda.consent.models import ConsentStatus, Purpose
from zgoda.contacts import service as contacts
from zgoda.core.crypto import constant_time_equal, new_token
from zgoda.core.errors import AuthenticationFailed, CsrfFailed, InvalidInput, RateLimited, ZgodaError
from zgoda.core.settings import Settings
from zgoda.core.tenancy import Actor, bind_scope
from zgoda.web.context import (
    CSRF_FIELD,
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    RequestContext,
    client_ip,
    csrf_token_for,
    get_session,
    get_settings_dep,
    public,
    require,
    require_user,
)
from zgoda.web.forms import blank_to_none, error_message
from zgoda.web.templating import render

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _login_page(
    request: Request,
    settings: Settings,
    *,
    status_code: int = 200,
    error: str | None = None,
    email: str = "",
    next_url: str = "/",
) -> HTMLResponse:
    pre = request.cookies.get(PRE_SESSION_COOKIE) or new_token()
    notice = None
    if request.query_params.get("expired"):
        notice = "Your session has expired. Sign in again."
    elif request.query_params.get("signed_out"):
        notice = "You have signed out."
    response = render(
        request,
        "accounts/login.html",
        None,
        status_code=status_code,
        error=error,
        notice=notice,
        email=email,
        next_url=next_url,
        csrf_token=csrf_token_for(settings, pre, pre_login=True),
    )
    response.set_cookie(PRE_SESSION_COOKIE, pre, httponly=True, samesite="lax", secure=settings.cookies_secure)
    return response


@router.get("/login", response_class=HTMLResponse)
@public("the sign-in form")
def login_form(request: Request, settings: Settings = Depends(get_settings_dep)) -> Response:
    if request.cookies.get(SESSION_COOKIE) and not request.query_params.get("expired"):
        return RedirectResponse("/", status_code=303)
    return _login_page(request, settings, next_url=_safe_next(request.query_params.get("next")))


@router.post("/login", response_class=HTMLResponse)
@public("signing in")
def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next_url: Annotated[str, Form(alias="next", max_length=2000)] = "/",
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    pre = request.cookies.get(PRE_SESSION_COOKIE)
    if not pre:
        return _login_page(
            request,
            settings,
            status_code=403,
            email=email,
            next_url=_safe_next(next_url),
            error="Your sign-in form expired. Please try again.",
        )
    if not constant_time_equal(csrf_token, csrf_token_for(settings, pre, pre_login=True)):
        raise CsrfFailed("This form has expired or lacks its security token. Reload the page and try again.")
    ip = client_ip(request)
    bind_scope(session, workspace_id=None, actor=Actor(label=email.strip().lower() or "anonymous", via="ui", ip=ip))
    if not email.strip() or not password:
        return _login_page(
            request,
            settings,
            status_code=422,
            email=email,
            next_url=_safe_next(next_url),
            error="Enter your email address and password.",
        )
    try:
        user = service.authenticate(
            session,
            email=email,
            password=password,
            ip=ip,
            max_failures=settings.login_max_failures,
            window=timedelta(minutes=settings.login_window_minutes),
        )
    except AuthenticationFailed as error:
        session.commit()  # keep the failure for the rate limit
        return _login_page(
            request, settings, status_code=401, error=error.detail, email=email, next_url=_safe_next(next_url)
        )
    except RateLimited as error:
        response = _login_page(
            request, settings, status_code=429, error=error.detail, email=email, next_url=_safe_next(next_url)
        )
        response.headers["Retry-After"] = str(error.retry_after_seconds)
        return response
    bind_scope(session, workspace_id=None, actor=Actor(label=user.email, via="ui", user_id=user.id, ip=ip))
    started = service.start_login_session(
        session,
        user=user,
        lifetime=timedelta(hours=settings.session_hours),
        ip=ip,
        user_agent=request.headers.get("user-agent"),
    )
    redirect = RedirectResponse(_safe_next(next_url), status_code=303)
    redirect.set_cookie(
        SESSION_COOKIE,
        started.token,
        httponly=True,
        samesite="lax",
        secure=settings.cookies_secure,
        max_age=settings.session_hours * 3600,
    )
    redirect.delete_cookie(PRE_SESSION_COOKIE)
    return redirect


@router.post("/logout")
def logout(request: Request, ctx: RequestContext = require_user()) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        service.end_login_session(ctx.session, cookie)
    response = RedirectResponse("/login?signed_out=1", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/")
def home(ctx: RequestContext = require_user()) -> Response:
    if len(ctx.memberships) >= 1:
        return RedirectResponse(f"/w/{ctx.memberships[0].workspace.slug}/", status_code=303)
    return RedirectResponse("/workspaces", status_code=303)


@router.get("/workspaces", response_class=HTMLResponse)
def workspaces(request: Request, ctx: RequestContext = require_user()) -> Response:
    return render(request, "accounts/workspaces.html", ctx)


@router.get("/w/{slug}/", response_class=HTMLResponse)
def dashboard(request: Request, slug: str, ctx: RequestContext = require("workspace.read")) -> Response:
    members = service.list_members(ctx.session)
    figures = {"members": len(members), "audit_entries": audit.count_entries(ctx.session)}
    if ctx.can("tokens.read"):
        figures["api_tokens"] = sum(1 for t in service.list_api_tokens(ctx.session) if t.revoked_at is None)
    if ctx.can("contacts.read"):
        figures["contacts"] = contacts.search_contacts(ctx.session, limit=0)[1]
    consent: list[tuple[Purpose, dict[str, int]]] = []
    if ctx.can("consent.read"):
        counts = ledger.consent_counts(ctx.session)
        consent = [(purpose, counts.get(purpose.id, {})) for purpose in purposes.list_purposes(ctx.session)]
    recent = audit.list_entries(ctx.session, limit=8)
    return render(
        request, "accounts/dashboard.html", ctx, figures=figures, consent=consent, statuses=_STATUSES, recent=recent
    )


# the dashboard's consent columns: what may be sent on first, then what may not
_STATUSES = (
    ConsentStatus.GRANTED.value,
    ConsentStatus.PENDING.value,
    ConsentStatus.EXPIRED.value,
    ConsentStatus.WITHDRAWN.value,
    ConsentStatus.NONE.value,
)


@router.get("/w/{slug}/members", response_class=HTMLResponse)
def members_page(request: Request, slug: str, ctx: RequestContext = require("members.read")) -> Response:
    return render(request, "accounts/members.html", ctx, members=service.list_members(ctx.session), roles=list(Role))


@router.post("/w/{slug}/members", response_class=HTMLResponse)
def members_add(
    request: Request,
    slug: str,
    email: Annotated[str, Form(max_length=320)] = "",
    role: Annotated[str, Form(max_length=16)] = "",
    ctx: RequestContext = require("members.manage"),
) -> Response:
    try:
        user = service.get_user_by_email(ctx.session, email)
        if user is None:
            raise InvalidInput(f"No user has the address {email}; create one with `zgoda user create`.", field="email")
        service.add_member(ctx.session, workspace=ctx.workspace_required, user=user, role=role)
    except ZgodaError as error:
        ctx.session.rollback()
        return render(
            request,
            "accounts/members.html",
            ctx,
            status_code=422,
            error=error.detail,
            members=service.list_members(ctx.session),
            roles=list(Role),
        )
    return RedirectResponse(f"/w/{slug}/members", status_code=303)


@router.post("/w/{slug}/members/{member_id}/remove")
def members_remove(slug: str, member_id: int, ctx: RequestContext = require("members.manage")) -> Response:
    service.remove_member(ctx.session, member_id=member_id)
    return RedirectResponse(f"/w/{slug}/members", status_code=303)


@router.get("/w/{slug}/tokens", response_class=HTMLResponse)
def tokens_page(request: Request, slug: str, ctx: RequestContext = require("tokens.read")) -> Response:
    return render(request, "accounts/tokens.html", ctx, tokens=service.list_api_tokens(ctx.session), roles=list(Role))


@router.post("/w/{slug}/tokens", response_class=HTMLResponse)
def tokens_create(
    request: Request,
    slug: str,
    name: Annotated[str, Form(max_length=100)] = "",
    role: Annotated[str, Form(max_length=16)] = "operator",
    ctx: RequestContext = require("tokens.manage"),
) -> Response:
    try:
        issued = service.create_api_token(
            ctx.session, name=name, role=role, created_by_user_id=ctx.user.id if ctx.user else None
        )
    except ZgodaError as error:
        ctx.session.rollback()
        return render(
            request,
            "accounts/tokens.html",
            ctx,
            status_code=422,
            error=error.detail,
            tokens=service.list_api_tokens(ctx.session),
            roles=list(Role),
        )
    return render(
        request,
        "accounts/tokens.html",
        ctx,
        issued=issued,
        tokens=service.list_api_tokens(ctx.session),
        roles=list(Role),
    )


@router.post("/w/{slug}/tokens/{token_id}/revoke")
def tokens_revoke(slug: str, token_id: int, ctx: RequestContext = require("tokens.manage")) -> Response:
    service.revoke_api_token(ctx.session, token_id=token_id)
    return RedirectResponse(f"/w/{slug}/tokens", status_code=303)


CONTROLLER_FORM_FIELDS = ("legal_name", "email", "phone", "website", "privacy_policy_url", "dpo_contact")
ADDRESS_FORM_FIELDS = ("street", "postal_code", "city", "country")


def _settings_values(workspace: Any) -> dict[str, str]:
    """The stored controller identity as flat form values."""
    controller = service.controller_of(workspace) or {}
    address = controller.get("postal_address") or {}
    values = {name: controller.get(name) or "" for name in CONTROLLER_FORM_FIELDS}
    values.update({name: address.get(name) or "" for name in ADDRESS_FORM_FIELDS})
    values["jurisdiction"] = service.jurisdiction_of(workspace)
    return values


@router.get("/w/{slug}/settings", response_class=HTMLResponse)
def settings_page(request: Request, slug: str, ctx: RequestContext = require("workspace.read")) -> Response:
    """The data controller's identity (owners edit it; everyone else reads it)."""
    workspace = ctx.workspace_required
    return render(
        request,
        "accounts/settings.html",
        ctx,
        values=_settings_values(workspace),
        configured=service.controller_of(workspace) is not None,
        saved=bool(request.query_params.get("saved")),
    )


@router.post("/w/{slug}/settings", response_class=HTMLResponse)
def settings_save(
    request: Request,
    slug: str,
    legal_name: Annotated[str, Form(max_length=300)] = "",
    street: Annotated[str, Form(max_length=200)] = "",
    postal_code: Annotated[str, Form(max_length=20)] = "",
    city: Annotated[str, Form(max_length=100)] = "",
    country: Annotated[str, Form(max_length=2)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    phone: Annotated[str, Form(max_length=40)] = "",
    website: Annotated[str, Form(max_length=2000)] = "",
    privacy_policy_url: Annotated[str, Form(max_length=2000)] = "",
    dpo_contact: Annotated[str, Form(max_length=300)] = "",
    jurisdiction: Annotated[str, Form(max_length=2)] = "",
    ctx: RequestContext = require("workspace.settings"),
) -> Response:
    """Save the controller identity (owner only); errors re-render the form with what was typed."""
    values = {
        "legal_name": legal_name,
        "street": street,
        "postal_code": postal_code,
        "city": city,
        "country": country.upper(),
        "email": email,
        "phone": phone,
        "website": website,
        "privacy_policy_url": privacy_policy_url,
        "dpo_contact": dpo_contact,
        "jurisdiction": jurisdiction.upper(),
    }
    controller = {name: blank_to_none(values[name]) for name in CONTROLLER_FORM_FIELDS}
    controller["postal_address"] = {name: values[name] for name in ADDRESS_FORM_FIELDS}  # type: ignore[assignment]
    try:
        body = WorkspaceSettingsUpdate.model_validate(
            {"controller": controller, "jurisdiction": blank_to_none(values["jurisdiction"])}
        )
        service.update_workspace_settings(
            ctx.session,
            workspace=ctx.workspace_required,
            controller=body.controller.model_dump() if body.controller else None,
            jurisdiction=body.jurisdiction,
        )
    except (ValidationError, ZgodaError) as error:
        ctx.session.rollback()
        return render(
            request,
            "accounts/settings.html",
            ctx,
            status_code=422,
            error=error_message(error),
            values=values,
            configured=service.controller_of(ctx.workspace_required) is not None,
            saved=False,
        )
    return RedirectResponse(f"/w/{slug}/settings?saved=1", status_code=303)
