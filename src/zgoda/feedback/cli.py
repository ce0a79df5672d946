"""``zgoda feedback``: read bounces, complaints and auto-replies from files, mbox files or Maildirs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from zgoda.feedback.parsing import iter_messages, parse_message

feedback_app = typer.Typer(help="Feedback: bounces, complaints and automatic replies.", no_args_is_help=True)

_COLUMNS = ("kind", "recipient", "class", "reason", "status", "feedback_type", "send_ref")


@feedback_app.callback()
def _group() -> None:
    """Feedback: bounces, complaints and automatic replies."""


@feedback_app.command("parse")
def parse(
    files: Annotated[list[Path], typer.Argument(help=".eml files, mbox files or Maildir folders.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per recipient per line.")] = False,
    bounce_domain: Annotated[
        str | None, typer.Option("--bounce-domain", help="Only accept VERP refs at bounces+<ref>@<this domain>.")
    ] = None,
) -> None:
    """Classify each message: one line per recipient it is about. Unreadable paths are reported and skipped."""
    out = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    failures: list[str] = []

    def report_error(name: str, error: OSError) -> None:
        failures.append(name)
        err.print(f"[red]Error:[/red] cannot read {name}: {error.strerror or error}", markup=True, highlight=False)

    table = Table()
    for column in ("file", *_COLUMNS):
        wrap = column in {"file", "recipient", "send_ref"}
        table.add_column(column, overflow="fold" if wrap else "ellipsis", no_wrap=not wrap)
    for path in files:
        for name, raw in iter_messages(path, on_error=report_error):
            for report in parse_message(raw, bounce_domain=bounce_domain):
                row = {"file": name, **report.to_json()}
                if as_json:
                    typer.echo(json.dumps(row, ensure_ascii=False))
                else:
                    table.add_row(name, *(str(row[column]) if row[column] is not None else "—" for column in _COLUMNS))
    if not as_json and table.row_count:
        out.print(table)
    if failures:
        raise typer.Exit(1)
