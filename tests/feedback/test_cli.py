"""``zgoda feedback parse`` through typer's CliRunner (feedback_app on its own; src/zgoda/cli.py wires it)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from zgoda.feedback.cli import feedback_app

SAMPLES = Path(__file__).parent / "samples"
runner = CliRunner()
KEYS = {"file", "kind", "recipient", "class", "reason", "status", "feedback_type", "send_ref"}


def test_json_lines_one_per_recipient() -> None:
    result = runner.invoke(
        feedback_app, ["parse", "--json", "--bounce-domain", "bounce.zgoda.example", str(SAMPLES / "qmail")]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 5  # four files, one of them about two recipients
    assert all(set(row) >= KEYS for row in rows)
    two = [row for row in rows if row["file"].endswith("two_recipients.eml")]
    assert [(row["recipient"], row["class"]) for row in two] == [
        ("w.michalski@example.com", "hard"),
        ("d.kaczmarek@example.org", "soft"),
    ]


def test_absent_values_are_null() -> None:
    result = runner.invoke(feedback_app, ["parse", "--json", str(SAMPLES / "other/newsletter_not_feedback.eml")])
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["kind"] == "not_feedback"
    assert row["recipient"] is None
    assert row["class"] is None
    assert row["send_ref"] is None


def test_table_output() -> None:
    digest = str(SAMPLES / "arf/digest_three_reports.eml")
    result = runner.invoke(feedback_app, ["parse", digest], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert result.stdout.count("complaint") == 3
    assert "send_ref" in result.stdout


def test_unreadable_path_is_reported_and_the_rest_still_printed(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.eml"
    garbage.write_bytes(bytes(range(256)) * 50)
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.eml"
    result = runner.invoke(
        feedback_app, ["parse", "--json", str(missing), str(garbage), str(empty), str(SAMPLES / "gmail/disabled.eml")]
    )
    assert result.exit_code == 1
    assert f"cannot read {missing}" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["kind"] for row in rows] == ["not_feedback", "not_feedback", "bounce"]
    assert rows[2]["reason"] == "mailbox_disabled"


def test_mbox_input(tmp_path: Path) -> None:
    box = tmp_path / "bounces.mbox"
    parts = [
        b"From MAILER-DAEMON Tue Apr 14 10:12:33 2026\n" + (SAMPLES / name).read_bytes() + b"\n"
        for name in ("exim/user_unknown.eml", "yahoo/mailbox_full.eml")
    ]
    box.write_bytes(b"".join(parts))
    result = runner.invoke(feedback_app, ["parse", "--json", str(box)])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(row["file"], row["class"]) for row in rows] == [(f"{box}#1", "hard"), (f"{box}#2", "soft")]
