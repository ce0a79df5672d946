"""The local SMTP sink: what the transport sends lands in a Maildir; the CLI starts and stops cleanly."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.delivery.conftest import message
from zgoda.delivery.dkim import DkimSigner, dns_record, generate_key, verify
from zgoda.delivery.sink import SmtpSink, find_caught, read_maildir
from zgoda.delivery.transport import SmtpConnection, SmtpSettings, send_message

SENDER = "bounces+c1@zgoda.example"


def settings(sink: SmtpSink) -> SmtpSettings:
    return SmtpSettings(host=sink.host, port=sink.port)


def test_messages_land_in_the_maildir_with_their_envelope(tmp_path: Path) -> None:
    maildir = tmp_path / "sink"
    with SmtpSink(maildir) as sink, SmtpConnection(settings(sink)) as conn:
        for i in range(3):
            outcome = send_message(conn, SENDER, f"c{i}@example.org", message(f"Oferta {i}", to=f"c{i}@example.org"))
            assert outcome.accepted
            assert re.fullmatch(r"2\.0\.0 Ok: queued as \S+", outcome.text)
        assert sink.received == 3
    assert sorted(p.name for p in maildir.iterdir()) == ["cur", "new", "tmp"]
    assert list((maildir / "tmp").iterdir()) == []
    files = sorted((maildir / "new").iterdir())
    assert len(files) == 3
    stored = files[0].read_bytes()
    assert stored.startswith(b"Return-Path: <bounces+c1@zgoda.example>\r\nDelivered-To: c0@example.org\r\nFrom: ")
    assert stored.endswith(message("Oferta 0", to="c0@example.org"))

    caught = read_maildir(maildir)
    assert [c.subject for c in caught] == ["Oferta 2", "Oferta 1", "Oferta 0"]
    newest = caught[0]
    assert newest.envelope_from == SENDER
    assert newest.envelope_to == ("c2@example.org",)
    assert newest.from_ == "Kawiarnia Zgoda <news@zgoda.example>"
    assert newest.to == "c2@example.org"
    assert newest.message_id == "<Oferta.2@zgoda.example>"
    assert newest.size == newest.path.stat().st_size
    assert caught[0].received_at >= caught[1].received_at >= caught[2].received_at
    assert newest.load().get_content().strip() == "Dzień dobry!"
    assert newest.raw().endswith(message("Oferta 2", to="c2@example.org"))

    assert [c.subject for c in read_maildir(maildir, limit=2)] == ["Oferta 2", "Oferta 1"]
    assert find_caught(maildir, caught[1].key) == caught[1]
    assert find_caught(maildir, "../sink/new/" + caught[1].key) is None
    assert find_caught(maildir, "no-such-key") is None


def test_read_maildir_decodes_subjects_and_survives_a_missing_folder(tmp_path: Path) -> None:
    assert read_maildir(tmp_path / "nothing-here") == []
    raw = (
        b"From: =?utf-8?q?Kawiarnia_=C5=BBubr?= <a@zgoda.example>\r\nTo: b@example.org\r\n"
        b"Subject: =?utf-8?b?WmHFvMOzxYLEhyBnxJnFm2zEhSBqYcW6xYQ=?=\r\n\r\nx\r\n"
    )
    with SmtpSink(tmp_path) as sink, SmtpConnection(settings(sink)) as conn:
        assert send_message(conn, SENDER, "b@example.org", raw).accepted
    (caught,) = read_maildir(tmp_path)
    assert caught.subject == "Zażółć gęślą jaźń"
    assert caught.from_ == "Kawiarnia Żubr <a@zgoda.example>"


def test_discard_mode_counts_and_stores_nothing(tmp_path: Path) -> None:
    with SmtpSink(None, discard=True) as sink, SmtpConnection(settings(sink)) as conn:
        for _ in range(4):
            assert send_message(conn, SENDER, "a@example.org", message()).accepted
        assert sink.wait_for(4)
        assert sink.received == 4
    with SmtpSink(tmp_path / "ignored", discard=True) as sink, SmtpConnection(settings(sink)) as conn:
        assert send_message(conn, SENDER, "a@example.org", message()).accepted
    assert not (tmp_path / "ignored").exists()
    with pytest.raises(ValueError, match="needs a Maildir"):
        SmtpSink(None)


def test_a_signed_message_still_verifies_after_the_sink(tmp_path: Path) -> None:
    key = generate_key()
    name, value = dns_record("zgoda.example", "s2026", key.public_key_b64)
    signed = DkimSigner("zgoda.example", "s2026", key.private_key_pem).sign(message())
    with SmtpSink(tmp_path) as sink, SmtpConnection(settings(sink)) as conn:
        assert send_message(conn, SENDER, "a@example.org", signed).accepted
    (caught,) = read_maildir(tmp_path)
    assert verify(caught.raw(), {name: value}.get)


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with SmtpSink(tmp_path) as first, pytest.raises(OSError, match=rf"Cannot listen on 127\.0\.0\.1:{first.port}"):
        SmtpSink(tmp_path, port=first.port).start()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_command_runs_until_a_signal_and_exits_cleanly(tmp_path: Path, stop_signal: signal.Signals) -> None:
    maildir = tmp_path / "caught"
    command = [sys.executable, "-m", "zgoda.delivery.cli", "--port", "0", "--maildir", str(maildir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+), storing into the Maildir (.+)\. ", banner)
        assert match, banner
        assert match.group(2) == str(maildir)
        with SmtpConnection(SmtpSettings(host="127.0.0.1", port=int(match.group(1)))) as conn:
            assert send_message(conn, SENDER, "a@example.org", message("via the command")).accepted
        assert process.stdout.readline().strip() == "1 message received"
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "Stopped; 1 message received in all." in out
    assert err == ""
    assert [c.subject for c in read_maildir(maildir)] == ["via the command"]
    with socket.socket() as probe:  # nobody listens there any more (SO_REUSEADDR passes over TIME_WAIT)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", int(match.group(1))))


def test_the_typer_command_registers_with_its_options() -> None:
    import typer
    from typer.testing import CliRunner

    from zgoda.delivery.cli import smtp_sink

    app = typer.Typer()
    app.command("smtp-sink")(smtp_sink)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["smtp-sink", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--maildir", "--host", "--discard"):
        assert option in result.output


def test_a_sink_that_cannot_store_answers_with_a_temporary_failure(tmp_path: Path) -> None:
    with SmtpSink(tmp_path / "box") as sink, SmtpConnection(settings(sink)) as conn:
        (tmp_path / "box" / "tmp").rmdir()
        outcome = send_message(conn, SENDER, "a@example.org", message())
        assert (outcome.accepted, outcome.code, outcome.permanent) == (False, 451, False)
        assert "could not store" in outcome.text
        (tmp_path / "box" / "tmp").mkdir()
        assert send_message(conn, SENDER, "a@example.org", message()).accepted
