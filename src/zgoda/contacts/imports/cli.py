"""``zgoda import``: a file into a workspace, with a progress bar and a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from zgoda.consent import sources
from zgoda.contacts.imports import service as imports
from zgoda.contacts.imports.mapping import ColumnMapping
from zgoda.contacts.imports.models import ImportJob
from zgoda.core.db import Database
from zgoda.core.settings import get_settings

console = Console(stderr=True)


def import_file(
    file: Annotated[Path, typer.Argument(help="CSV, XLSX or JSON Lines file.")],
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug.")],
    source: Annotated[str, typer.Option(help="Name of the source the file comes from.")],
    mapping: Annotated[
        Path | None, typer.Option(help="JSON mapping file; default: the source's saved mapping or automatic.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would happen; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    file_format: Annotated[str | None, typer.Option("--format", help="csv, xlsx or jsonl (default: detected).")] = None,
    encoding: Annotated[
        str | None, typer.Option(help="utf-8, utf-8-sig, cp1250 or iso-8859-2 (default: detected).")
    ] = None,
    delimiter: Annotated[str | None, typer.Option(help="',', ';' or 'tab' (default: detected).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Import even if this file was imported before.")] = False,
) -> None:
    """Import contacts and their consents from a file (the same rules as the web upload)."""
    from zgoda.cli import cli_session, fail

    settings = get_settings()
    column_mapping = ColumnMapping.load(mapping) if mapping else None
    with cli_session(workspace=workspace) as session:
        found = sources.source_by_name(session, source)
        staged = imports.stage_path(file, data_dir=settings.data_dir)
        planned = imports.create_job(session, source_id=found.id, staged=staged, mapping=column_mapping,
                                     dry_run=dry_run, file_format=file_format, encoding=encoding,
                                     delimiter="\t" if delimiter == "tab" else delimiter, force=force)  # fmt: skip
        job_id = planned.job.id
        if not as_json:
            console.print("Mapped: " + ", ".join(f"[bold]{h}[/bold] → {t}" for h, t in planned.mapped.items()))
            console.print("Ignored: " + (", ".join(planned.ignored) or "none"))
    database = Database.from_url(settings.resolved_database_url)
    try:
        job = _run_with_progress(database, job_id, quiet=as_json)
        with database.transaction() as session:
            from zgoda.contacts.imports.service import _load_for_run

            job = _load_for_run(session, job_id)
            report = imports.report(session, job)
    finally:
        database.engine.dispose()
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print_report(report)
    if job.status == "failed":
        raise fail(job.error or "the import failed")


def _run_with_progress(database: Database, job_id: int, *, quiet: bool) -> ImportJob:
    settings = get_settings()
    if quiet:
        return imports.run_job(database, job_id, region=settings.default_phone_region)
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("Importing", total=None)

        def show(job: ImportJob) -> None:
            done = job.counts.get("rows_read", 0)
            progress.update(task, completed=done, total=max(job.rows_estimate or 0, done) or None)

        return imports.run_job(database, job_id, region=settings.default_phone_region, on_progress=show)


def _print_report(report: dict[str, object]) -> None:
    out = Console()
    status = report["status"]
    title = "Dry run (nothing was changed)" if report["dry_run"] else f"Import {status}"
    table = Table("what", "count", title=title)
    counts = report["counts"]
    assert isinstance(counts, dict)
    for key, value in counts.items():
        table.add_row(key.replace("_", " "), str(value))
    out.print(table)
    rejected = report["rejected"]
    assert isinstance(rejected, list)
    if rejected:
        rows = Table("row", "field", "reason", title="Rejected rows")
        for item in rejected[:50]:
            rows.add_row(str(item["row"]), item["field"], item["reason"])
        out.print(rows)
        if len(rejected) > 50:
            out.print(f"... and {report['rejected_total'] - 50} more (see --json or the web report)")  # type: ignore[operator]
    if report.get("error"):
        out.print(f"[yellow]{report['error']}[/yellow]")


def register(app: typer.Typer) -> None:
    app.command("import")(import_file)
