"""``zgoda campaign ...`` and ``zgoda domain ...``: list, send (and wait for the outcome), DKIM keys."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from zgoda.accounts import service as accounts
from zgoda.campaigns import domains, sending
from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import CampaignStatus
from zgoda.core.db import Database
from zgoda.core.errors import ZgodaError
from zgoda.core.settings import get_settings

campaign_app = typer.Typer(help="Campaigns: list them, send one and wait for its outcome.", no_args_is_help=True)
domain_app = typer.Typer(help="Sending domains and their DKIM keys.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
FINISHED = (CampaignStatus.SENT, CampaignStatus.CANCELLED, CampaignStatus.PAUSED)


def _database() -> Database:
    from zgoda.cli import _ensure_schema

    settings = get_settings()
    _ensure_schema(settings)
    return Database.from_url(settings.resolved_database_url)


def _scoped(session: Session, slug: str) -> None:
    from zgoda.cli import cli_actor

    accounts.scope_to_workspace(session, slug, cli_actor())


@campaign_app.command("list")
def campaign_list(workspace: WorkspaceOption, as_json: JsonOption = False) -> None:
    """The workspace's campaigns with their status and figures."""
    from zgoda.cli import cli_session

    with cli_session(workspace=workspace) as session:
        rows = [
            (campaign, campaigns.progress(session, campaign_id=campaign.id))
            for campaign in campaigns.list_campaigns(session)
        ]
    if as_json:
        typer.echo(json.dumps([{"id": campaign.id, **figures} for campaign, figures in rows], indent=2))
        return
    table = Table("id", "campaign", "kind", "status", "audience", "sent", "refused", "failed", "pending")
    for campaign, figures in rows:
        table.add_row(
            str(campaign.id),
            campaign.name,
            campaign.kind,
            campaign.status,
            str(figures["total"]),
            str(figures["sent"]),
            str(figures["refused"]),
            str(figures["failed"]),
            str(figures["pending"]),
        )
    console.print(table)


@campaign_app.command("send")
def campaign_send(
    name: Annotated[str, typer.Argument(help="The campaign's name.")],
    workspace: WorkspaceOption,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is sent and print the outcome.")] = False,
    at: Annotated[
        str | None, typer.Option("--at", help="Schedule instead: ISO time, e.g. 2026-12-01T09:00 (workspace zone).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send a campaign (or schedule it); a second call on a started campaign changes nothing and says so.

    Without ZGODA_BROKER_URL the messages are sent by this command itself when ``--wait`` is given
    (or by ``zgoda serve`` when it next runs); with a broker, by the ``zgoda worker`` processes.
    """
    from zgoda.cli import fail

    settings = get_settings()
    scheduled = None
    if at is not None:
        try:
            scheduled = datetime.fromisoformat(at)
        except ValueError:
            raise fail(f"--at: '{at}' is not an ISO date and time (e.g. 2026-12-01T09:00).") from None
    database = _database()
    try:
        with database.transaction() as session:
            _scoped(session, workspace)
            campaign = campaigns.campaign_by_name(session, name)
            request = campaigns.send_campaign(session, campaign_id=campaign.id, at=scheduled)
            campaign_id = campaign.id
        if not as_json:
            console.print(request.message)
        if wait and request.action != "scheduled":
            if not settings.broker_url:
                sending.prepare(database, campaign_id)
                sending.run(database, campaign_id, settings)
            _wait_until_finished(database, workspace, campaign_id)
        with database.transaction() as session:
            _scoped(session, workspace)
            figures = campaigns.progress(session, campaign_id=campaign_id)
    except ZgodaError as error:
        field = f" ({error.field})" if error.field else ""
        raise fail(f"{error.detail}{field}") from None
    except sending.SmtpUnavailable as error:
        raise fail(
            f"The SMTP server ({settings.smtp_host}:{settings.smtp_port}) cannot take messages: {error}. "
            "The campaign stays 'sending'; run the command again (or `zgoda serve`) once it is back."
        ) from None
    finally:
        database.engine.dispose()
    figures["action"] = request.action
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    table = Table("outcome", "messages")
    table.add_row("sent", str(figures["sent"]))
    for reason, count in figures["refused_by_reason"].items():
        table.add_row(f"refused: {reason}", str(count))
    for reason, count in figures["failed_by_reason"].items():
        table.add_row(f"failed: {reason}", str(count))
    table.add_row("not yet sent", str(figures["pending"]))
    console.print(table)


def _wait_until_finished(database: Database, workspace: str, campaign_id: int, poll: float = 0.5) -> None:
    """Poll the campaign until it is sent, paused or cancelled, showing progress on stderr."""
    while True:
        with database.transaction() as session:
            _scoped(session, workspace)
            figures = campaigns.progress(session, campaign_id=campaign_id)
        if figures["status"] in FINISHED:
            return
        err_console.print(
            f"{figures['status']}: {figures['sent']} sent, {figures['refused']} refused, "
            f"{figures['failed']} failed, {figures['pending']} to go",
            highlight=False,
        )
        time.sleep(poll)


@domain_app.command("add")
def domain_add(
    domain: Annotated[str, typer.Argument(help="The domain of the From address, e.g. news.example.com.")],
    workspace: WorkspaceOption,
    as_json: JsonOption = False,
) -> None:
    """Create a DKIM key for a sending domain and print the DNS TXT record to publish."""
    from zgoda.cli import cli_session

    with cli_session(workspace=workspace) as session:
        record = domains.add_sending_domain(session, domain=domain, secret=get_settings().resolved_secret_key())
        name, value = domains.dns_txt(record)
    if as_json:
        typer.echo(json.dumps({"domain": record.domain, "selector": record.selector, "name": name, "value": value}))
        return
    console.print(f"DKIM key created for [bold]{record.domain}[/bold]. Publish this TXT record:")
    typer.echo(f"{name}. IN TXT {value}")
