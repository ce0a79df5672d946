"""The demo workspace: realistic data so a new user meets every feature.

Idempotent: running it again changes nothing that exists. Each capability adds its
own part here as it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from zgoda.accounts import service as accounts
from zgoda.accounts.models import User, Workspace
from zgoda.accounts.roles import Role
from zgoda.core.db import Database
from zgoda.core.settings import Settings
from zgoda.core.tenancy import Actor, bind_scope
from zgoda.demo.campaigns import seed_campaigns
from zgoda.demo.consent import seed_consent
from zgoda.demo.feedback import seed_sent_campaign
from zgoda.demo.imports import queue_shop_import, run_queued

DEMO_PASSWORD = "zgoda-demo-2026"  # noqa: S105 - the documented demo login, demo data only
DEMO_SLUG = "demo"
SECOND_SLUG = "demo-catering"

DEMO_USERS = [
    # email, name, platform admin
    ("owner@demo.zgoda.example", "Anna Kowalska", False),
    ("operator@demo.zgoda.example", "Piotr Nowak (Agencja Sygnał)", False),
    ("dpo@demo.zgoda.example", "Maria Wiśniewska (IOD)", False),
    ("viewer@demo.zgoda.example", "Jan Zieliński", False),
    ("admin@demo.zgoda.example", "Platform Admin", True),
]
DEMO_MEMBERSHIPS = [
    (DEMO_SLUG, "owner@demo.zgoda.example", Role.OWNER),
    (DEMO_SLUG, "operator@demo.zgoda.example", Role.OPERATOR),
    (DEMO_SLUG, "dpo@demo.zgoda.example", Role.DPO),
    (DEMO_SLUG, "viewer@demo.zgoda.example", Role.VIEWER),
    (SECOND_SLUG, "owner@demo.zgoda.example", Role.OWNER),
]


@dataclass
class DemoInfo:
    workspace_slug: str
    logins: list[tuple[str, str]]
    password: str
    new_api_token: str | None = None
    pending_import: int | None = None
    created: list[str] = field(default_factory=list)
    dkim_record: tuple[str, str] | None = None


def seed_demo(session: Session, *, storage_dir: Path) -> DemoInfo:
    """Create (or complete) the demo workspaces, users and memberships."""
    bind_scope(session, workspace_id=None, actor=Actor.system("demo"))
    info = DemoInfo(
        workspace_slug=DEMO_SLUG, password=DEMO_PASSWORD, logins=[(email, name) for email, name, _ in DEMO_USERS]
    )
    users: dict[str, User] = {}
    for email, name, admin in DEMO_USERS:
        user = accounts.get_user_by_email(session, email)
        if user is None:
            user = accounts.create_user(
                session, email=email, password=DEMO_PASSWORD, name=name, is_platform_admin=admin
            )
            info.created.append(f"user {email}")
        users[email] = user
    workspaces: dict[str, Workspace] = {}
    for slug, name in [(DEMO_SLUG, "Kawiarnia Zgoda sp. z o.o."), (SECOND_SLUG, "Zgoda Catering sp. z o.o.")]:
        existing = session.query(Workspace).filter_by(slug=slug).one_or_none()
        if existing is None:
            existing = accounts.create_workspace(session, slug=slug, name=name)
            info.created.append(f"workspace {slug}")
        workspaces[slug] = existing
    for slug, email, role in DEMO_MEMBERSHIPS:
        if accounts.membership_in(session, user=users[email], slug=slug) is None:
            accounts.add_member(session, workspace=workspaces[slug], user=users[email], role=role)
    demo = workspaces[DEMO_SLUG]
    bind_scope(session, workspace_id=demo.id, actor=Actor.system("demo"))
    if not accounts.list_api_tokens(session):
        issued = accounts.create_api_token(session, name="Sklep internetowy (demo)", role=Role.OPERATOR)
        info.new_api_token = issued.plaintext
    if seed_consent(session, workspace=demo, storage_dir=storage_dir):
        info.created.append("consent data")
    info.pending_import = queue_shop_import(session, storage_dir=storage_dir)
    return info


def seed_demo_database(database: Database, *, storage_dir: Path, settings: Settings | None = None) -> DemoInfo:
    """Seed the demo in its own transactions and run its import job like a worker would; with ``settings``,
    also its audiences and campaigns: one ready to send, and one sent through a local sink with its feedback."""
    with database.transaction() as session:
        info = seed_demo(session, storage_dir=storage_dir)
    run_queued(database, info.pending_import)
    if settings is not None:
        with database.transaction() as session:
            accounts.scope_to_workspace(session, DEMO_SLUG, Actor.system("demo"))
            info.dkim_record = seed_campaigns(session, secret=settings.resolved_secret_key())
        maildir = settings.sink_maildir or settings.data_dir / "sink"
        if seed_sent_campaign(database, settings=settings, workspace_slug=DEMO_SLUG, maildir=maildir):
            info.created.append("a sent campaign with its feedback")
    return info
