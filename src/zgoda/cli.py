"""The ``zgoda`` command line: a thin layer over the services; each command owns its transaction."""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from zgoda.accounts import service as accounts
from zgoda.accounts.roles import Role
from zgoda.core.db import Database, is_sqlite
from zgoda.core.errors import ZgodaError
from zgoda.core.migrate import pending_revisions, upgrade
from zgoda.core.settings import Settings, get_settings
from zgoda.core.tenancy import Actor, bind_scope

app = typer.Typer(help="Zgoda: consent-first, white-box marketing automation.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Staff users.", no_args_is_help=True)
workspace_app = typer.Typer(help="Workspaces (one per client, the data controller).", no_args_is_help=True)
member_app = typer.Typer(help="Who has which role in a workspace.", no_args_is_help=True)
token_app = typer.Typer(help="Workspace API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(workspace_app, name="workspace")
app.add_typer(member_app, name="member")
app.add_typer(token_app, name="token")

console = Console()
err_console = Console(stderr=True)

WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def cli_actor() -> Actor:
    return Actor(label=f"cli:{getpass.getuser()}", via="cli")


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]Error:[/red] {message}")
    return typer.Exit(code)


def _ensure_schema(settings: Settings) -> None:
    url = settings.resolved_database_url
    if is_sqlite(url):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(url)
    elif pending_revisions(url):
        raise fail("The database schema is not up to date: run `zgoda db upgrade` first.")


@contextmanager
def cli_session(*, workspace: str | None = None) -> Iterator[Session]:
    """One transaction for one command, scoped to ``workspace`` when given; errors print cleanly."""
    settings = get_settings()
    _ensure_schema(settings)
    database = Database.from_url(settings.resolved_database_url)
    try:
        with database.transaction() as session:
            if workspace is None:
                bind_scope(session, workspace_id=None, actor=cli_actor())
            else:
                accounts.scope_to_workspace(session, workspace, cli_actor())
            yield session
    except ZgodaError as error:
        field = f" ({error.field})" if error.field else ""
        raise fail(f"{error.detail}{field}") from None
    finally:
        database.engine.dispose()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    settings = get_settings()
    if is_sqlite(settings.resolved_database_url):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    console.print("[green]Database schema is up to date.[/green]")


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="Login address.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password: Annotated[str | None, typer.Option(help="Prompted for when omitted; or ZGODA_NEW_PASSWORD.")] = None,
    platform_admin: Annotated[bool, typer.Option("--platform-admin", help="Platform admin.")] = False,
) -> None:
    """Create a staff user."""
    password = (
        password
        or os.environ.get("ZGODA_NEW_PASSWORD")
        or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    )
    with cli_session() as session:
        user = accounts.create_user(
            session, email=email, password=password, name=name, is_platform_admin=platform_admin
        )
        console.print(f"Created user [bold]{user.email}[/bold] (id {user.id}).")


@workspace_app.command("create")
def workspace_create(
    slug: Annotated[str, typer.Option(help="Short name used in URLs, e.g. kawiarnia.")],
    name: Annotated[str, typer.Option(help="The client's legal name.")],
    owner: Annotated[str | None, typer.Option(help="Email of an existing user to make owner.")] = None,
) -> None:
    """Create a workspace for one client (one data controller)."""
    with cli_session() as session:
        owner_user = None
        if owner:
            owner_user = accounts.get_user_by_email(session, owner)
            if owner_user is None:
                raise fail(f"No user has the address {owner}.")
        workspace = accounts.create_workspace(session, slug=slug, name=name, owner=owner_user)
        console.print(f"Created workspace [bold]{workspace.slug}[/bold] ({workspace.name}).")


@member_app.command("add")
def member_add(
    workspace: WorkspaceOption,
    email: Annotated[str, typer.Option(help="Email of an existing user.")],
    role: Annotated[Role, typer.Option(help="owner, operator, dpo or viewer.")],
) -> None:
    """Give a user a role in a workspace."""
    with cli_session(workspace=workspace) as session:
        user = accounts.get_user_by_email(session, email)
        if user is None:
            raise fail(f"No user has the address {email}.")
        target = accounts.get_workspace_by_slug(session, workspace)
        accounts.add_member(session, workspace=target, user=user, role=role)
        console.print(f"{user.email} is now {role.value} in {workspace}.")


@token_app.command("create")
def token_create(
    workspace: WorkspaceOption,
    name: Annotated[str, typer.Option(help="What the token is for.")],
    role: Annotated[Role, typer.Option(help="The role the token acts with.")] = Role.OPERATOR,
    as_json: JsonOption = False,
) -> None:
    """Create an API token and print it once."""
    with cli_session(workspace=workspace) as session:
        issued = accounts.create_api_token(session, name=name, role=role)
    if as_json:
        typer.echo(json.dumps({"id": issued.token.id, "name": name, "role": role.value, "token": issued.plaintext}))
    else:
        console.print(f"Token [bold]{name}[/bold] ({role.value}) for {workspace}. Store it now; it is not shown again:")
        typer.echo(issued.plaintext)


@app.command()
def verify(
    audit_only: Annotated[bool, typer.Option("--audit", help="Check only the audit chains.")] = False,
    ledger_only: Annotated[bool, typer.Option("--ledger", help="Check only the consent ledger and state.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Check every hash chain and the consent state; exit 1 and name the first entry that does not match."""
    from zgoda.verification import verify_everything

    with cli_session() as session:
        results = verify_everything(session, audit_only=audit_only, ledger_only=ledger_only)
    failed = [r for r in results if not r.ok]
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "chains": [r.as_dict() for r in results]}, indent=2))
    else:
        table = Table("check", "scope", "entries", "head", "result")
        for r in results:
            table.add_row(
                r.check,
                r.scope,
                str(r.entries),
                r.head[:16],
                "[green]ok[/green]" if r.ok else f"[red]{r.problem}[/red]",
            )
        console.print(table)
        if failed:
            first = failed[0]
            err_console.print(f"[red]Verification failed:[/red] {first.check} of {first.scope}: {first.problem}")
        else:
            console.print("[green]Every chain verified.[/green]")
    if failed:
        raise typer.Exit(1)


class ProofFormat(StrEnum):
    JSON = "json"
    KANTARA = "kantara"
    HTML = "html"


@app.command()
def proof(
    workspace: WorkspaceOption,
    contact: Annotated[str, typer.Option("--contact", help="The contact's email address (or phone number).")],
    output_format: Annotated[
        ProofFormat,
        typer.Option("--format", help="json: the proof bundle; kantara: consent receipts; html: a printable page."),
    ] = ProofFormat.JSON,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead.")] = None,
) -> None:
    """The consent proof of one contact: every event, its notice and evidence, and the hashes to verify them."""
    from zgoda.audit import service as audit
    from zgoda.consent.proof import build_proof, kantara_receipts, proof_html
    from zgoda.contacts.service import find_contact

    settings = get_settings()
    with cli_session(workspace=workspace) as session:
        if "@" in contact:
            found = find_contact(session, email=contact)
        else:
            found = find_contact(session, phone=contact, region=settings.default_phone_region)
        if found is None:
            raise fail(f"No contact {contact} in workspace '{workspace}'.")
        if output_format is ProofFormat.KANTARA:
            receipts = kantara_receipts(session, contact_id=found.id, settings=settings)
            text = json.dumps(receipts, indent=2, ensure_ascii=False)
        else:
            bundle = build_proof(session, contact_id=found.id, settings=settings)
            text = (
                proof_html(bundle)
                if output_format is ProofFormat.HTML
                else json.dumps(bundle, indent=2, ensure_ascii=False)
            )
        audit.record(
            session,
            action="contact.proof",
            object_type="contact",
            object_id=found.id,
            summary={"format": output_format.value, "to_file": output is not None},
        )
        contact_id = found.id
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        err_console.print(f"Wrote the {output_format.value} proof of contact {contact_id} to {output}.")


@app.command()
def demo() -> None:
    """Create the demo workspaces, users and data (idempotent)."""
    from zgoda.demo import seed_demo_database

    settings = get_settings()
    _ensure_schema(settings)
    database = Database.from_url(settings.resolved_database_url)
    try:
        info = seed_demo_database(database, storage_dir=settings.data_dir, settings=settings)
    finally:
        database.engine.dispose()
    _print_demo(info, settings.base_url)


def _print_demo(info: object, base_url: str) -> None:
    from zgoda.demo import DemoInfo

    assert isinstance(info, DemoInfo)
    console.print(f"Demo workspace [bold]{info.workspace_slug}[/bold] is ready at {base_url}/w/{info.workspace_slug}/")
    table = Table("login", "who", "password")
    for email, name in info.logins:
        table.add_row(email, name, info.password)
    console.print(table)
    if info.new_api_token:
        console.print(f"Demo API token (shown once): {info.new_api_token}")
    if info.dkim_record:
        name, value = info.dkim_record
        console.print("DKIM key of the demo's sending domain; publish this TXT record for a real domain:")
        console.print(f"{name}. IN TXT {value}", highlight=False, soft_wrap=True)
    console.print("Ready to send: campaign 'Karta zimowa 2026' (Campaigns, or `zgoda campaign send`).")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    with_demo: Annotated[bool, typer.Option("--demo", help="Create the demo workspace first.")] = False,
) -> None:
    """Run the web application (migrating the embedded SQLite database first)."""
    import uvicorn

    from zgoda.web.app import create_app

    settings = get_settings()
    if "base_url" not in settings.model_fields_set:
        settings.base_url = f"http://{host}:{port}"
    _ensure_schema(settings)
    from zgoda.core.tasks import configure as configure_tasks

    configure_tasks(settings)  # before anything publishes a task (the demo does)
    if with_demo:
        from zgoda.demo import seed_demo_database

        database = Database.from_url(settings.resolved_database_url)
        try:
            info = seed_demo_database(database, storage_dir=settings.data_dir, settings=settings)
        finally:
            database.engine.dispose()
        _print_demo(info, settings.base_url)
    if with_demo and settings.smtp_host in ("127.0.0.1", "localhost"):
        _start_demo_sink(settings)
    application = create_app(settings)
    if not settings.broker_url:
        from zgoda.core.tasks import start_embedded_worker

        start_embedded_worker()
        console.print("Background tasks run in this process (set ZGODA_BROKER_URL to use `zgoda worker`).")
    from zgoda.campaigns.tasks import resume_unfinished_campaigns, start_scheduler

    if not settings.broker_url:
        resume_unfinished_campaigns()
    start_scheduler()
    console.print(f"Zgoda is listening on [bold]{settings.base_url}[/bold]  (Ctrl+C stops it)")
    uvicorn.run(application, host=host, port=port, log_level="info")


def _start_demo_sink(settings: Settings) -> None:
    """The demo sends to a local SMTP sink in this process, which keeps every message in a Maildir."""
    from zgoda.delivery.sink import SmtpSink

    maildir = settings.sink_maildir or settings.data_dir / "sink"
    sink = SmtpSink(maildir, host=settings.smtp_host, port=settings.smtp_port)
    try:
        sink.start()
    except OSError as error:
        console.print(f"No local SMTP sink started ({error}); is `zgoda smtp-sink` already running?")
        return
    settings.sink_maildir = maildir
    console.print(f"Demo mail goes to a local SMTP sink on {settings.smtp_host}:{sink.port}, kept in {maildir}.")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Tasks run at once in this process.")] = 2,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING.")] = "INFO",
) -> None:
    """Run background tasks from ZGODA_BROKER_URL (RabbitMQ or Redis); start as many as you like."""
    from zgoda.core.tasks import configure

    settings = get_settings()
    if not settings.broker_url:
        raise fail("Set ZGODA_BROKER_URL (amqp://... or redis://...); without it `zgoda serve` runs tasks itself.")
    _ensure_schema(settings)
    celery = configure(settings)
    from zgoda.campaigns.tasks import start_scheduler

    start_scheduler()
    # a node name unique per process: two workers on one host must not share Celery's control queue
    node = f"zgoda-{os.getpid()}@{socket.gethostname()}"
    pool = "prefork" if concurrency > 1 else "solo"
    celery.Worker(hostname=node, concurrency=concurrency, loglevel=loglevel, pool=pool).start()


def _register_domain_commands() -> None:
    from zgoda.campaigns.cli import campaign_app, domain_app
    from zgoda.contacts.imports.cli import register as register_import
    from zgoda.delivery.cli import smtp_sink

    register_import(app)
    app.add_typer(campaign_app, name="campaign")
    app.add_typer(domain_app, name="domain")
    app.command("smtp-sink")(smtp_sink)
    from zgoda.feedback.cli import feedback_app
    from zgoda.feedback.intake_cli import ingest, poll

    feedback_app.command("ingest")(ingest)
    feedback_app.command("poll")(poll)
    app.add_typer(feedback_app, name="feedback")
    from zgoda.feedback.suppression_cli import suppression_app

    app.add_typer(suppression_app, name="suppression")


_register_domain_commands()


if __name__ == "__main__":
    app()
