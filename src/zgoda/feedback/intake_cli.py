"""``zgoda feedback ingest`` and ``zgoda feedback poll``: apply what the bounce mailbox received."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from zgoda.core.db import Database
from zgoda.core.settings import get_settings
from zgoda.feedback.intake import ImapSettings, IngestReport, ingest_paths, poll_imap

console = Console()


def _print(report: IngestReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.as_json()))
        return
    outcomes = ", ".join(f"{count} {outcome}" for outcome, count in sorted(report.outcomes.items())) or "nothing"
    console.print(f"{report.messages} messages read: {outcomes}.")
    for why, count in report.ignored_why.most_common():
        console.print(f"  ignored ({count}): {why}")
    for problem in report.unreadable:
        console.print(f"  [red]unreadable:[/red] {problem}")


def ingest(
    paths: Annotated[list[Path], typer.Argument(help=".eml files, mbox files or Maildir folders.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Apply bounces, complaints and mailto unsubscribes from files (idempotent: re-reading changes nothing)."""
    from zgoda.cli import _ensure_schema

    settings = get_settings()
    _ensure_schema(settings)
    database = Database.from_url(settings.resolved_database_url)
    try:
        report = ingest_paths(database, paths, bounce_domain=settings.bounce_domain)
    finally:
        database.engine.dispose()
    _print(report, as_json)
    if report.unreadable:
        raise typer.Exit(1)


def poll(as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False) -> None:
    """Read the bounce mailbox over IMAP (ZGODA_IMAP_*): apply unseen messages and mark them seen."""
    from zgoda.cli import _ensure_schema

    settings = get_settings()
    if not (settings.imap_host and settings.imap_username and settings.imap_password):
        console.print("[red]Error:[/red] set ZGODA_IMAP_HOST, ZGODA_IMAP_USERNAME and ZGODA_IMAP_PASSWORD.")
        raise typer.Exit(1)
    _ensure_schema(settings)
    imap = ImapSettings(
        host=settings.imap_host,
        port=settings.imap_port,
        username=settings.imap_username,
        password=settings.imap_password.get_secret_value(),
        security=settings.imap_security,
        folder=settings.imap_folder,
    )
    database = Database.from_url(settings.resolved_database_url)
    try:
        report = poll_imap(database, imap, bounce_domain=settings.bounce_domain)
    finally:
        database.engine.dispose()
    _print(report, as_json)
