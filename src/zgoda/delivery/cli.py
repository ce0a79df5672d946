"""The ``zgoda smtp-sink`` command; register it with ``app.command("smtp-sink")(smtp_sink)``.

Also runnable on its own: ``python -m zgoda.delivery.cli --port 2525 --maildir zgoda-data/sink``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zgoda.delivery.sink import sink_command


def smtp_sink(
    port: Annotated[int, typer.Option("--port", help="Port to listen on; 0 picks a free one.")] = 2525,
    maildir: Annotated[
        Path | None,
        typer.Option("--maildir", help="Maildir to store messages in (default: <data_dir>/sink)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    discard: Annotated[bool, typer.Option("--discard", help="Count messages, store nothing (benchmarks).")] = False,
) -> None:
    """Run a local SMTP server that catches every message into a Maildir, for the demo and tests."""
    if maildir is None:
        from zgoda.core.settings import get_settings

        maildir = get_settings().data_dir / "sink"
    try:
        sink_command(port, maildir, host, discard)
    except OSError as error:
        typer.echo(f"Error: {error.strerror or error}", err=True)
        raise typer.Exit(1) from error


if __name__ == "__main__":
    typer.run(smtp_sink)
