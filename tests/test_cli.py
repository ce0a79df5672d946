"""The command line against a real, committed database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from zgoda.cli import app
from zgoda.core.chain import drop_append_only_ddl
from zgoda.core.db import make_engine
from zgoda.core.settings import get_settings

runner = CliRunner()


@pytest.fixture
def cli_env(fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ZGODA_DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("ZGODA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ZGODA_SECRET_KEY", "cli-test-secret-0123456789abcdef0123456789")
    get_settings.cache_clear()
    yield fresh_database_url
    get_settings.cache_clear()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"ZGODA_NEW_PASSWORD": "a-long-password-1"})
    return result.exit_code, result.output


def test_users_workspaces_members_tokens_and_verify(cli_env: str) -> None:
    assert invoke("user", "create", "--email", "ola@agency.example.com", "--name", "Ola")[0] == 0
    code, output = invoke(
        "workspace", "create", "--slug", "sklep", "--name", "Sklep sp. z o.o.", "--owner", "ola@agency.example.com"
    )
    assert code == 0, output
    assert invoke("user", "create", "--email", "op@agency.example.com")[0] == 0
    assert (
        invoke("member", "add", "--workspace", "sklep", "--email", "op@agency.example.com", "--role", "operator")[0]
        == 0
    )
    code, output = invoke("token", "create", "--workspace", "sklep", "--name", "shop", "--json")
    assert code == 0, output
    issued = json.loads(output)
    assert issued["token"].startswith("zgk_") and issued["role"] == "operator"

    code, output = invoke("verify", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["ok"]
    sklep = next(c for c in report["chains"] if c["scope"] == "sklep")
    assert sklep["entries"] == 3  # owner added, operator added, token created


def test_verify_fails_and_names_the_tampered_entry(cli_env: str) -> None:
    invoke("user", "create", "--email", "ola@agency.example.com")
    invoke("workspace", "create", "--slug", "sklep", "--name", "Sklep", "--owner", "ola@agency.example.com")
    invoke("token", "create", "--workspace", "sklep", "--name", "one")
    invoke("token", "create", "--workspace", "sklep", "--name", "two")
    engine = make_engine(cli_env)
    with engine.begin() as connection:
        for statement in drop_append_only_ddl("audit_entries", connection.dialect.name):
            connection.execute(text(statement))
        connection.execute(text("UPDATE audit_entries SET actor = 'nobody' WHERE seq = 2"))
    engine.dispose()
    code, output = invoke("verify", "--audit")
    assert code == 1
    assert "sklep" in output and "entry #2 was altered" in output


def test_errors_are_clear_and_exit_non_zero(cli_env: str) -> None:
    code, output = invoke("token", "create", "--workspace", "nope", "--name", "x")
    assert code == 1 and "There is no workspace 'nope'" in output
    code, output = invoke("user", "create", "--email", "not-an-email")
    assert code == 1 and "Not a valid email address" in output


def test_demo_is_idempotent(cli_env: str) -> None:
    code, first = invoke("demo")
    assert code == 0, first
    assert "owner@demo.zgoda.example" in first and "Demo API token" in first
    code, second = invoke("demo")
    assert code == 0 and "Demo API token" not in second
    code, output = invoke("verify", "--json")
    assert code == 0, output
    chains = {(c["check"], c["scope"]): c for c in json.loads(output)["chains"]}
    assert chains[("ledger", "demo")]["entries"] > 50
    assert chains[("consent_state", "demo")]["ok"]
    assert chains[("audit", "demo-catering")]["entries"] == 1
    audit_after_first = chains[("audit", "demo")]["entries"]
    invoke("demo")
    code, output = invoke("verify", "--json")
    chains = {(c["check"], c["scope"]): c for c in json.loads(output)["chains"]}
    assert chains[("audit", "demo")]["entries"] == audit_after_first  # a second run adds nothing


def test_the_demo_has_a_ready_campaign_and_a_sent_one_with_its_feedback(cli_env: str) -> None:
    code, output = invoke("demo")
    assert code == 0, output
    assert "IN TXT v=DKIM1; k=rsa; p=" in output
    code, output = invoke("campaign", "list", "--workspace", "demo", "--json")
    assert code == 0, output
    campaigns = {c["campaign"]: c for c in json.loads(output)}
    assert campaigns["Karta zimowa 2026"]["status"] == "draft"
    sent = campaigns["Jesienna kawa 2026"]
    assert sent["status"] == "sent" and sent["sent"] > 10
    assert sent["refused_by_reason"].get("no_consent", 0) > 0  # the gate had work
    code, output = invoke("suppression", "list", "--workspace", "demo", "--json")
    reasons = sorted(entry["reason"] for entry in json.loads(output)["entries"])
    assert reasons == ["complaint", "hard_bounce"]  # from a real DSN and a real ARF report, parsed and applied


def test_the_demo_consent_request_asks_pending_and_granted_contacts_with_a_confirmation_link(
    cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zgoda.delivery.sink import SmtpSink

    assert invoke("demo")[0] == 0
    code, output = invoke("campaign", "list", "--workspace", "demo", "--json")
    listed = {c["campaign"]: c for c in json.loads(output)}
    assert listed["Potwierdź zapis na newsletter"]["kind"] == "consent_request"
    with SmtpSink(tmp_path / "sink") as sink:
        monkeypatch.setenv("ZGODA_SMTP_PORT", str(sink.port))
        get_settings.cache_clear()
        command = ("campaign", "send", "Potwierdź zapis na newsletter", "--workspace", "demo", "--wait", "--json")
        code, output = invoke(*command)
        assert code == 0, output
        outcome = json.loads(output)
    assert outcome["sent"] > 0 and outcome["sent"] == sink.received
    assert outcome["refused_by_reason"].get("no_consent", 0) > 0  # nobody without consent is asked
    assert "consent_pending" not in outcome["refused_by_reason"]  # the pending sign-ups are whom it is for
    bodies = [path.read_bytes() for path in (tmp_path / "sink" / "new").iterdir()]
    assert all(b"/confirm/" in body for body in bodies)
