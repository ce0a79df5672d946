"""`zgoda proof` against a real, committed database: JSON, Kantara and HTML output, and clear errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from tests.consent.test_proof import NOTICE_TEXT, Scenario, build_scenario, docs_verifier
from zgoda.accounts.models import Workspace
from zgoda.audit.models import AuditEntry
from zgoda.cli import app
from zgoda.consent.proof import kantara_schema
from zgoda.core.db import Database
from zgoda.core.settings import get_settings
from zgoda.core.tenancy import unscoped

runner = CliRunner()


@pytest.fixture
def cli_env(fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ZGODA_DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("ZGODA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ZGODA_SECRET_KEY", "cli-test-secret-0123456789abcdef0123456789")
    get_settings.cache_clear()
    yield fresh_database_url
    get_settings.cache_clear()


@pytest.fixture
def seeded(cli_env: str, tmp_path: Path) -> Iterator[Scenario]:
    database = Database.from_url(cli_env)
    with database.transaction() as session:
        scenario = build_scenario(session, tmp_path / "files")
    yield scenario
    database.engine.dispose()


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def test_proof_prints_a_bundle_that_the_documented_procedure_verifies(seeded: Scenario, cli_env: str) -> None:
    result = invoke("proof", "--workspace", seeded.workspace.slug, "--contact", "Jan.Kowalski@Example.pl")
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    assert bundle["format"] == "zgoda-consent-proof/1"
    assert bundle["contact"]["email"] == "jan.kowalski@example.pl"
    assert [e["payload"]["event_type"] for e in bundle["events"]] == ["grant", "withdraw", "grant", "confirm"]
    assert bundle["events"][0]["notice"]["text"] == NOTICE_TEXT
    assert docs_verifier()(bundle) == []

    database = Database.from_url(cli_env)
    with database.transaction() as session, unscoped(session):
        logged = session.scalars(select(AuditEntry).where(AuditEntry.action == "contact.proof")).all()
    database.engine.dispose()
    assert [(e.object_id, e.summary["format"]) for e in logged] == [(str(seeded.contact.id), "json")]


def test_proof_exports_kantara_receipts(seeded: Scenario) -> None:
    result = invoke("proof", "-w", seeded.workspace.slug, "--contact", "jan.kowalski@example.pl", "--format", "kantara")
    assert result.exit_code == 0, result.output
    receipts = json.loads(result.stdout)
    assert [r["x-zgoda"]["eventId"] for r in receipts] == [seeded.first_grant.id, seeded.confirmation.id]
    for receipt in receipts:
        jsonschema.validate(receipt, kantara_schema(), cls=jsonschema.Draft202012Validator)
        assert receipt["piiControllers"][0]["piiController"] == "Sklep Przykładowy sp. z o.o."


def test_proof_writes_a_printable_html_page(seeded: Scenario, tmp_path: Path) -> None:
    target = tmp_path / "proof.html"
    result = invoke(
        "proof",
        "-w",
        seeded.workspace.slug,
        "--contact",
        "jan.kowalski@example.pl",
        "--format",
        "html",
        "-o",
        str(target),
    )
    assert result.exit_code == 0, result.output
    html = target.read_text(encoding="utf-8")
    assert html.lstrip().startswith("<!doctype html>") and "Consent proof" in html
    assert "203.0.113.7" in html and seeded.confirmation.hash in html
    assert "Wrote the html proof" in result.output and "<html" not in result.stdout


def test_unknown_contact_or_workspace_is_a_clear_error(seeded: Scenario) -> None:
    result = invoke("proof", "-w", seeded.workspace.slug, "--contact", "nobody@example.pl")
    assert result.exit_code == 1 and "No contact nobody@example.pl" in result.output
    result = invoke("proof", "-w", seeded.workspace.slug, "--contact", "not-an-address@")
    assert result.exit_code == 1 and "not a valid email address" in result.output
    result = invoke("proof", "-w", "nope", "--contact", "jan.kowalski@example.pl")
    assert result.exit_code == 1 and "There is no workspace 'nope'" in result.output
    result = invoke("proof", "-w", seeded.workspace.slug, "--contact", "jan.kowalski@example.pl", "--format", "pdf")
    assert result.exit_code == 2


def test_kantara_without_controller_details_says_what_to_fill(seeded: Scenario, cli_env: str) -> None:
    database = Database.from_url(cli_env)
    with database.transaction() as session:
        workspace = session.get(Workspace, seeded.workspace.id)
        assert workspace is not None
        workspace.settings = {}
    database.engine.dispose()
    result = invoke("proof", "-w", seeded.workspace.slug, "--contact", "jan.kowalski@example.pl", "--format", "kantara")
    assert result.exit_code == 1
    assert "controller" in result.output and "legal_name" in result.output and "workspace settings" in result.output
    assert invoke("proof", "-w", seeded.workspace.slug, "--contact", "jan.kowalski@example.pl").exit_code == 0
