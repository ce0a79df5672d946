"""``zgoda campaign``, ``zgoda domain``, ``zgoda suppression`` and ``zgoda feedback ingest`` on a committed database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.sending import sending_setup
from zgoda.cli import app
from zgoda.core.db import Database
from zgoda.core.settings import get_settings
from zgoda.delivery.sink import SmtpSink

runner = CliRunner()


@pytest.fixture
def workspace_slug(fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ZGODA_DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("ZGODA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ZGODA_SECRET_KEY", "cli-test-secret-0123456789abcdef0123456789")
    monkeypatch.setenv("ZGODA_BASE_URL", "https://zgoda.example.com")
    monkeypatch.delenv("ZGODA_BROKER_URL", raising=False)
    get_settings.cache_clear()
    database = Database.from_url(fresh_database_url)
    with database.transaction() as session:
        slug = sending_setup(session, eligible=3).workspace.slug
    database.engine.dispose()
    yield slug
    get_settings.cache_clear()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_send_waits_and_prints_the_outcome_then_a_second_send_says_so(
    workspace_slug: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SmtpSink(tmp_path / "sink") as sink:
        monkeypatch.setenv("ZGODA_SMTP_PORT", str(sink.port))
        get_settings.cache_clear()
        code, output = invoke("campaign", "send", "Karta zimowa", "--workspace", workspace_slug, "--wait", "--json")
        assert code == 0, output
        outcome = json.loads(output)
        assert (outcome["action"], outcome["sent"], outcome["status"]) == ("started", 3, "sent")
        assert outcome["refused_by_reason"] == {"consent_withdrawn": 1, "no_consent": 1}
        assert sink.received == 3
        code, output = invoke("campaign", "send", "Karta zimowa", "--workspace", workspace_slug, "--json")
        assert code == 0, output
        assert json.loads(output)["action"] == "already_sent"
    code, output = invoke("campaign", "list", "--workspace", workspace_slug, "--json")
    assert code == 0
    (listed,) = json.loads(output)
    assert (listed["campaign"], listed["sent"]) == ("Karta zimowa", 3)


def test_unknown_campaigns_and_bad_times_are_clear_errors(workspace_slug: str) -> None:
    code, output = invoke("campaign", "send", "Nope", "--workspace", workspace_slug)
    assert code == 1 and "no campaign named 'Nope'" in output
    code, output = invoke("campaign", "send", "Karta zimowa", "--workspace", workspace_slug, "--at", "tomorrow")
    assert code == 1 and "--at" in output
    code, output = invoke("campaign", "send", "Karta zimowa", "--workspace", workspace_slug, "--at", "2020-01-01T09:00")
    assert code == 1 and "past" in output


def test_domain_add_prints_the_dns_record(workspace_slug: str) -> None:
    code, output = invoke("domain", "add", "news.kawiarnia.example.pl", "--workspace", workspace_slug, "--json")
    assert code == 0, output
    record = json.loads(output)
    assert record["name"] == f"{record['selector']}._domainkey.news.kawiarnia.example.pl"
    assert record["value"].startswith("v=DKIM1; k=rsa; p=")
    code, output = invoke("domain", "add", "news.kawiarnia.example.pl", "--workspace", workspace_slug)
    assert code == 1 and "already" in output


def test_suppressions_from_the_command_line(workspace_slug: str) -> None:
    assert invoke("suppression", "add", "Ktos@Example.pl", "--workspace", workspace_slug)[0] == 0
    code, output = invoke("suppression", "list", "--workspace", workspace_slug, "--json")
    listed = json.loads(output)
    assert listed["total"] == 1 and listed["entries"][0]["hint"] == "k***@example.pl"
    assert invoke("suppression", "add", "spam@example.org", "--platform", "--reason", "complaint")[0] == 0
    code, output = invoke("suppression", "add", "x@example.org")
    assert code == 1 and "--platform" in output
    assert invoke("suppression", "remove", "ktos@example.pl", "--workspace", workspace_slug)[0] == 0
    assert invoke("suppression", "remove", "spam@example.org", "--platform")[0] == 0
    code, output = invoke("suppression", "remove", "spam@example.org", "--platform")
    assert code == 1 and "not on the list" in output


def test_an_unreachable_smtp_server_is_a_clear_error_and_nothing_is_lost(
    workspace_slug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ZGODA_SMTP_PORT", str(port))
    get_settings.cache_clear()
    code, output = invoke("campaign", "send", "Karta zimowa", "--workspace", workspace_slug, "--wait")
    assert code == 1
    assert "cannot take messages" in output
    code, output = invoke("campaign", "list", "--workspace", workspace_slug, "--json")
    (listed,) = json.loads(output)
    assert (listed["status"], listed["sent"], listed["pending"]) == ("sending", 0, 3)
