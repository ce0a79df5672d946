"""Workspaces, users, memberships, API tokens and sign-ins. Services never commit."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, joinedload

from zgoda.accounts.models import ApiToken, LoginFailure, LoginSession, Membership, User, Workspace
from zgoda.accounts.roles import Role
from zgoda.audit import service as audit
from zgoda.consent.purposes import install_defaults as install_default_purposes
from zgoda.core.clock import utcnow
from zgoda.core.crypto import burn_password_check, hash_password, new_token, sha256_hex, verify_password
from zgoda.core.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound, RateLimited
from zgoda.core.tenancy import Actor, bind_scope, current_workspace_id, unscoped

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
JURISDICTION_PATTERN = re.compile(r"^[A-Z]{2}$")
DEFAULT_JURISDICTION = "PL"
# Workspace.settings["controller"]: consent receipts and email footers read exactly these keys.
CONTROLLER_KEYS = frozenset(
    {"legal_name", "postal_address", "email", "phone", "website", "privacy_policy_url", "dpo_contact"}
)
POSTAL_ADDRESS_KEYS = frozenset({"street", "postal_code", "city", "country"})
API_TOKEN_PREFIX = "zgk_"  # noqa: S105 - a public prefix, not a secret
MIN_PASSWORD_LENGTH = 10


def normalise_login_email(email: str) -> str:
    """A staff login address, validated and lower-cased (no DNS look-up)."""
    try:
        result = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as error:
        raise InvalidInput(f"Not a valid email address: {error}", field="email") from error
    return result.normalized.lower()


# --- workspaces ------------------------------------------------------------------------------


def create_workspace(session: Session, *, slug: str, name: str, owner: User | None = None) -> Workspace:
    """A new workspace (one data controller), optionally with its first owner."""
    slug = slug.strip().lower()
    if not SLUG_PATTERN.match(slug):
        raise InvalidInput("A workspace slug is 1-63 lower-case letters, digits and inner hyphens.", field="slug")
    if not name.strip():
        raise InvalidInput("A workspace needs a name.", field="name")
    if session.scalar(select(Workspace.id).where(Workspace.slug == slug)) is not None:
        raise Conflict(f"A workspace with slug '{slug}' already exists.", field="slug")
    workspace = Workspace(slug=slug, name=name.strip(), settings={})
    session.add(workspace)
    session.flush()
    audit.record(
        session,
        action="workspace.create",
        object_type="workspace",
        object_id=workspace.id,
        summary={"after": {"slug": slug, "name": workspace.name}},
        platform=True,
    )
    install_default_purposes(session, workspace_id=workspace.id)
    if owner is not None:
        add_member(session, workspace=workspace, user=owner, role=Role.OWNER)
    return workspace


def get_workspace_by_slug(session: Session, slug: str) -> Workspace:
    workspace = session.scalar(select(Workspace).where(Workspace.slug == slug))
    if workspace is None:
        raise NotFound(f"There is no workspace '{slug}'.", field="workspace")
    return workspace


def scope_to_workspace(session: Session, slug: str, actor: Actor) -> Workspace:
    """Bind ``session`` to the workspace ``slug`` names (looked up at platform level), acting as ``actor``."""
    bind_scope(session, workspace_id=None, actor=actor)
    workspace = get_workspace_by_slug(session, slug)
    bind_scope(session, workspace_id=workspace.id, actor=actor)
    return workspace


def controller_of(workspace: Workspace) -> dict[str, Any] | None:
    """The data controller's identity stored for ``workspace``, or ``None`` until the owner gives it."""
    controller = (workspace.settings or {}).get("controller")
    return dict(controller) if isinstance(controller, dict) else None


def jurisdiction_of(workspace: Workspace) -> str:
    """The country whose law the controller follows (ISO 3166 alpha-2; Poland unless set)."""
    value = (workspace.settings or {}).get("jurisdiction")
    return value if isinstance(value, str) and value else DEFAULT_JURISDICTION


def update_workspace_settings(
    session: Session,
    *,
    workspace: Workspace,
    controller: dict[str, Any] | None = None,
    jurisdiction: str | None = None,
) -> Workspace:
    """Store the controller identity and/or jurisdiction (``None``: leave as is); audited with before/after."""
    if controller is not None:
        unknown = sorted(set(controller) - CONTROLLER_KEYS)
        if unknown:
            raise InvalidInput(f"Unknown controller field '{unknown[0]}'.", field=f"controller.{unknown[0]}")
        if not str(controller.get("legal_name") or "").strip():
            raise InvalidInput("The controller needs its legal name.", field="controller.legal_name")
        address = controller.get("postal_address")
        if not isinstance(address, dict) or set(address) != POSTAL_ADDRESS_KEYS:
            raise InvalidInput(
                "A postal address has street, postal_code, city and country.", field="controller.postal_address"
            )
    if jurisdiction is not None and not JURISDICTION_PATTERN.match(jurisdiction):
        raise InvalidInput("A jurisdiction is a two-letter country code such as PL.", field="jurisdiction")
    before = {"controller": controller_of(workspace), "jurisdiction": jurisdiction_of(workspace)}
    after = {
        "controller": dict(controller) if controller is not None else before["controller"],
        "jurisdiction": jurisdiction if jurisdiction is not None else before["jurisdiction"],
    }
    if after == before:
        return workspace
    workspace.settings = {**(workspace.settings or {}), **after}  # a new dict: JSON columns track assignment
    session.flush()
    audit.record(
        session,
        workspace_id=workspace.id,
        action="workspace.settings_update",
        object_type="workspace",
        object_id=workspace.id,
        summary={"before": before, "after": after},
    )
    return workspace


# --- users -----------------------------------------------------------------------------------


def create_user(
    session: Session, *, email: str, password: str, name: str = "", is_platform_admin: bool = False
) -> User:
    """A new staff user with an Argon2-hashed password."""
    email = normalise_login_email(email)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.", field="password")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"A user with email {email} already exists.", field="email")
    user = User(
        email=email, name=name.strip(), password_hash=hash_password(password), is_platform_admin=is_platform_admin
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        action="user.create",
        object_type="user",
        object_id=user.id,
        summary={"after": {"email": email, "platform_admin": is_platform_admin}},
        platform=True,
    )
    return user


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email.strip().lower()))


def set_password(session: Session, *, user: User, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.", field="password")
    user.password_hash = hash_password(password)
    audit.record(session, action="user.password_set", object_type="user", object_id=user.id, platform=True)


# --- memberships -----------------------------------------------------------------------------


def add_member(session: Session, *, workspace: Workspace, user: User, role: Role | str) -> Membership:
    """Give ``user`` a role in ``workspace`` (recorded in that workspace's audit log)."""
    try:
        role = Role(role)
    except ValueError as error:
        raise InvalidInput(f"Unknown role '{role}'; use one of {', '.join(Role)}.", field="role") from error
    existing = session.scalar(
        select(Membership).where(Membership.user_id == user.id, Membership.workspace_id == workspace.id)
    )
    if existing is not None:
        raise Conflict(f"{user.email} is already a member ({existing.role}).", field="email")
    membership = Membership(user_id=user.id, workspace_id=workspace.id, role=role.value)
    session.add(membership)
    session.flush()
    audit.record(
        session,
        workspace_id=workspace.id,
        action="member.add",
        object_type="membership",
        object_id=membership.id,
        summary={"after": {"user_id": user.id, "email": user.email, "role": role.value}},
    )
    return membership


def list_members(session: Session) -> Sequence[Membership]:
    """Members of the session's workspace, with their users."""
    return session.scalars(
        select(Membership)
        .where(Membership.workspace_id == current_workspace_id(session))
        .options(joinedload(Membership.user))
        .order_by(Membership.id)
    ).all()


def get_member(session: Session, *, member_id: int) -> Membership:
    membership = session.scalar(
        select(Membership).where(Membership.id == member_id, Membership.workspace_id == current_workspace_id(session))
    )
    if membership is None:
        raise NotFound("There is no such member in this workspace.", field="member_id")
    return membership


def remove_member(session: Session, *, member_id: int) -> None:
    """Remove a membership; the last owner cannot be removed (a controller always has one)."""
    membership = get_member(session, member_id=member_id)
    if membership.role == Role.OWNER:
        owners = session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.workspace_id == membership.workspace_id, Membership.role == Role.OWNER.value)
        )
        if (owners or 0) <= 1:
            raise Conflict("The last owner of a workspace cannot be removed.", field="member_id")
    summary = {"before": {"user_id": membership.user_id, "role": membership.role}}
    session.delete(membership)
    session.flush()
    audit.record(session, action="member.remove", object_type="membership", object_id=member_id, summary=summary)


def memberships_of(session: Session, user: User) -> Sequence[Membership]:
    """Every workspace ``user`` belongs to, for the switcher."""
    return session.scalars(
        select(Membership)
        .where(Membership.user_id == user.id)
        .options(joinedload(Membership.workspace))
        .join(Workspace)
        .order_by(Workspace.name)
    ).all()


def membership_in(session: Session, *, user: User, slug: str) -> Membership | None:
    return session.scalar(
        select(Membership)
        .join(Workspace)
        .where(Membership.user_id == user.id, Workspace.slug == slug)
        .options(joinedload(Membership.workspace))
    )


# --- API tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    plaintext: str


def create_api_token(
    session: Session, *, name: str, role: Role | str = Role.OPERATOR, created_by_user_id: int | None = None
) -> IssuedToken:
    """A new API token for the session's workspace; the plaintext exists only in the return value."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("A token needs a name of 1-100 characters.", field="name")
    try:
        role = Role(role)
    except ValueError as error:
        raise InvalidInput(f"Unknown role '{role}'; use one of {', '.join(Role)}.", field="role") from error
    plaintext = new_token(API_TOKEN_PREFIX)
    token = ApiToken(
        name=name,
        role=role.value,
        token_hash=sha256_hex(plaintext),
        display_prefix=plaintext[:10],
        created_by_user_id=created_by_user_id,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        action="token.create",
        object_type="api_token",
        object_id=token.id,
        summary={"after": {"name": name, "role": role.value}},
    )
    return IssuedToken(token=token, plaintext=plaintext)


def list_api_tokens(session: Session) -> Sequence[ApiToken]:
    return session.scalars(select(ApiToken).order_by(ApiToken.id)).all()


def revoke_api_token(session: Session, *, token_id: int) -> ApiToken:
    token = session.scalar(select(ApiToken).where(ApiToken.id == token_id))
    if token is None:
        raise NotFound("There is no such API token in this workspace.", field="token_id")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(
            session,
            action="token.revoke",
            object_type="api_token",
            object_id=token.id,
            summary={"before": {"name": token.name}},
        )
    return token


def resolve_api_token(session: Session, plaintext: str) -> ApiToken | None:
    """The live token matching ``plaintext``, looked up across workspaces by its hash."""
    if not plaintext.startswith(API_TOKEN_PREFIX):
        return None
    with unscoped(session):
        token = session.scalar(select(ApiToken).where(ApiToken.token_hash == sha256_hex(plaintext)))
    if token is None or token.revoked_at is not None:
        return None
    return token


# --- sign-in ---------------------------------------------------------------------------------


def authenticate(
    session: Session, *, email: str, password: str, ip: str | None, max_failures: int, window: timedelta
) -> User:
    """The user whose credentials these are; rate-limited per address and per IP.

    Failures are counted in a table (not memory) so every process and machine agrees.
    """
    email_key = email.strip().lower()
    since = utcnow() - window
    recent = (
        session.scalar(
            select(func.count())
            .select_from(LoginFailure)
            .where(LoginFailure.email == email_key, LoginFailure.at >= since)
        )
        or 0
    )
    recent_ip = 0
    if ip:
        recent_ip = (
            session.scalar(
                select(func.count()).select_from(LoginFailure).where(LoginFailure.ip == ip, LoginFailure.at >= since)
            )
            or 0
        )
    if recent >= max_failures or recent_ip >= max_failures * 4:
        minutes = int(window.total_seconds() // 60)
        raise RateLimited(
            f"Too many failed sign-ins; try again in {minutes} minutes.",
            retry_after_seconds=int(window.total_seconds()),
        )
    user = get_user_by_email(session, email_key)
    if user is None or not user.is_active:
        burn_password_check(password)
        ok = False
    else:
        ok = verify_password(user.password_hash, password)
    if not ok or user is None:
        session.add(LoginFailure(email=email_key, ip=ip))
        session.flush()
        raise AuthenticationFailed("Wrong email or password.", field="password")
    session.execute(delete(LoginFailure).where(LoginFailure.email == email_key))
    return user


@dataclass(frozen=True)
class StartedSession:
    login: LoginSession
    token: str


def start_login_session(
    session: Session, *, user: User, lifetime: timedelta, ip: str | None, user_agent: str | None
) -> StartedSession:
    token = new_token()
    login = LoginSession(
        token_hash=sha256_hex(token),
        user_id=user.id,
        expires_at=utcnow() + lifetime,
        ip=ip,
        user_agent=(user_agent or "")[:400],
    )
    session.add(login)
    session.flush()
    audit.record(session, action="user.sign_in", object_type="user", object_id=user.id, platform=True)
    return StartedSession(login=login, token=token)


def resolve_login_session(session: Session, token: str) -> LoginSession | None:
    """The live sign-in for a cookie token, or ``None`` when unknown or expired."""
    login = session.scalar(
        select(LoginSession).where(LoginSession.token_hash == sha256_hex(token)).options(joinedload(LoginSession.user))
    )
    if login is None or not login.user.is_active:
        return None
    if login.expires_at <= utcnow():
        return None
    return login


def login_session_expired(session: Session, token: str) -> bool:
    login = session.scalar(select(LoginSession).where(LoginSession.token_hash == sha256_hex(token)))
    return login is not None and login.expires_at <= utcnow()


def end_login_session(session: Session, token: str) -> None:
    login = session.scalar(select(LoginSession).where(LoginSession.token_hash == sha256_hex(token)))
    if login is not None:
        user_id = login.user_id
        session.delete(login)
        session.flush()
        audit.record(session, action="user.sign_out", object_type="user", object_id=user_id, platform=True)
