"""``zgoda suppression ...``: the suppression lists from the command line (a workspace's, or the platform's)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from zgoda.feedback import suppression

suppression_app = typer.Typer(help="Suppression lists: addresses that must not be mailed.", no_args_is_help=True)
console = Console()

WorkspaceOption = Annotated[
    str | None, typer.Option("--workspace", "-w", help="Workspace slug (omit with --platform).")
]
PlatformOption = Annotated[bool, typer.Option("--platform", help="The platform-wide list (every workspace).")]


def _target(workspace: str | None, platform: bool) -> str | None:
    from zgoda.cli import fail

    if platform == (workspace is not None):
        raise fail("Name a workspace with --workspace, or use --platform.")
    return workspace


@suppression_app.command("add")
def add(
    address: Annotated[str, typer.Argument(help="The email address.")],
    workspace: WorkspaceOption = None,
    platform: PlatformOption = False,
    reason: Annotated[str, typer.Option(help=f"One of {', '.join(suppression.REASONS)}.")] = "operator",
    detail: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    """Suppress an address (kept as a keyed hash; audited)."""
    from zgoda.cli import cli_session

    slug = _target(workspace, platform)
    with cli_session(workspace=slug) as session:
        if slug is None:
            _, new = suppression.suppress_platform(session, address=address, reason=reason, detail=detail)
        else:
            _, new = suppression.suppress(session, address=address, reason=reason, detail=detail)
    console.print("Suppressed." if new else "Already suppressed; nothing changed.")


@suppression_app.command("remove")
def remove(
    address: Annotated[str, typer.Argument(help="The email address.")],
    workspace: WorkspaceOption = None,
    platform: PlatformOption = False,
    note: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    """Take an address off a list (a complaint's entry needs a fresh consent first)."""
    from zgoda.cli import cli_session, fail

    slug = _target(workspace, platform)
    with cli_session(workspace=slug) as session:
        if slug is None:
            removed = suppression.remove_platform_suppression(session, address=address, note=note)
        else:
            entry = suppression.is_suppressed(session, address)
            removed = entry is not None
            if entry is not None:
                suppression.remove_suppression(session, suppression_id=entry.id, note=note)
    if not removed:
        raise fail("That address is not on the list.")
    console.print("Removed.")


@suppression_app.command("list")
def list_entries(
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug.")],
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The workspace's suppression list, newest first."""
    from zgoda.cli import cli_session

    with cli_session(workspace=workspace) as session:
        rows, total = suppression.list_suppressions(session, reason=reason, limit=limit)
        entries = [
            {
                "id": row.id,
                "hint": row.hint,
                "reason": row.reason,
                "detail": row.detail,
                "created_by": row.created_by,
                "created_at": row.created_at.isoformat(),
            }
            for row in rows
        ]
    if as_json:
        typer.echo(json.dumps({"total": total, "entries": entries}, indent=2))
        return
    table = Table("id", "address", "reason", "detail", "by", "when")
    for entry in entries:
        table.add_row(
            *(str(entry[key] or "") for key in ("id", "hint", "reason", "detail", "created_by", "created_at"))
        )
    console.print(table)
    console.print(f"{total} in all.")
