"""Imports over HTTP: upload and poll, the contacts batch endpoint, signed form submissions, the pages."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.factories import as_system, make_member, make_token, make_workspace
from tests.support.web import sign_in
from zgoda.accounts.models import Workspace
from zgoda.accounts.roles import Role
from zgoda.consent import sources
from zgoda.consent.models import ConsentState
from zgoda.contacts.connectors import inbound, signing
from zgoda.contacts.imports import service as imports
from zgoda.contacts.models import Contact
from zgoda.core.db import Database

CSV = "email;imię;email_marketing\nola@example.com;Ola;tak\nbad;X;tak\n"


def _setup(session: Session) -> tuple[Workspace, dict[str, str]]:
    workspace = make_workspace(session)
    token = make_token(session, workspace, Role.OPERATOR)
    as_system(session, workspace)
    sources.create_source(session, name="Sklep", kind="shop")
    session.commit()
    return workspace, {"Authorization": f"Bearer {token}"}


def test_upload_queues_a_job_that_runs_and_reports(client: TestClient, session: Session, db: Database) -> None:
    _, headers = _setup(session)
    response = client.post(
        "/api/v1/imports",
        headers=headers,
        data={"source": "Sklep"},
        files={"file": ("k.csv", CSV.encode(), "text/csv")},
    )
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["status"] == "queued"
    assert started["mapped"] == {"email": "email", "imię": "first_name", "email_marketing": "consent:email_marketing"}
    imports.run_job(db, started["job_id"])  # what the worker does
    report = client.get(f"/api/v1/imports/{started['job_id']}", headers=headers).json()
    assert report["status"] == "done"
    assert report["counts"]["contacts_created"] == 1 and report["rejected"][0]["row"] == 3
    exported = client.get(f"/api/v1/imports/{started['job_id']}/rejected.csv", headers=headers)
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.text.splitlines()[0] == "row,column,reason" and exported.text.splitlines()[1].startswith("3,email,")
    history = client.get("/api/v1/imports", headers=headers).json()
    assert [job["job_id"] for job in history] == [started["job_id"]]


def test_contacts_batch_endpoint(client: TestClient, session: Session) -> None:
    workspace, headers = _setup(session)
    records = [
        {"email": "a@example.com", "first_name": "A", "email_marketing": "2026-01-05T10:00:00+01:00"},
        {"email": "b@example.com", "email_marketing": "nie"},
        {"email": "not-an-email"},
    ]
    response = client.post("/api/v1/contacts:batch", params={"source": "Sklep"}, headers=headers, json=records)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["counts"]["contacts_created"] == 2 and report["counts"]["consents_granted"] == 1
    assert report["rejected"] == [{"row": 3, "field": "email", "reason": report["rejected"][0]["reason"]}]
    ndjson = b'{"email": "c@example.com"}\n{"email": "d@example.com"}\n'
    response = client.post(
        "/api/v1/contacts:batch",
        params={"source": "Sklep", "dry_run": "true"},
        content=ndjson,
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    assert response.json()["counts"]["contacts_created"] == 2
    as_system(session, workspace)
    assert session.scalar(select(func.count(Contact.id))) == 2  # the dry run wrote nothing


def test_contacts_batch_rejects_bad_bodies(client: TestClient, session: Session) -> None:
    _, headers = _setup(session)
    for body, message in [(b"[]", "empty"), (b'{"email": "x"}', "array of objects"), (b"[{", "Malformed JSON")]:
        response = client.post(
            "/api/v1/contacts:batch",
            params={"source": "Sklep"},
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422 and message in response.json()["detail"]
    response = client.post(
        "/api/v1/contacts:batch", params={"source": "Nope"}, headers=headers, json=[{"email": "a@b.pl"}]
    )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "source"


def test_signed_form_submissions(client: TestClient, session: Session) -> None:
    workspace, headers = _setup(session)
    source = session.scalars(select(sources.Source)).one()
    secret = client.post(f"/api/v1/sources/{source.id}/inbound-secret", headers=headers).json()["secret"]
    body = json.dumps(
        {
            "submission_id": "s-1",
            "contact": {"email": "form@example.com"},
            "consents": [{"purpose": "email_marketing", "granted": True}],
            "evidence": {"ip": "198.51.100.9"},
        }
    ).encode()
    url = f"/api/v1/sources/{source.id}/submissions"
    signed = {"Content-Type": "application/json", signing.HEADER: signing.sign(secret, body)}
    first = client.post(url, content=body, headers=signed)
    assert first.status_code == 200, first.text
    assert first.json()["events"] == 1
    assert client.post(url, content=body, headers=signed).json()["duplicate"] is True
    forged = {**signed, signing.HEADER: signing.sign("wrong-secret", body)}
    assert client.post(url, content=body, headers=forged).status_code == 401
    stale = {**signed, signing.HEADER: signing.sign(secret, body, timestamp=1_600_000_000)}
    assert client.post(url, content=body, headers=stale).status_code == 401
    bad = json.dumps({"submission_id": "s-2", "contact": {"email": "x@example.com"}, "extra": 1}).encode()
    response = client.post(url, content=bad, headers={**signed, signing.HEADER: signing.sign(secret, bad)})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "extra"
    nul = json.dumps({"submission_id": "s-3", "contact": {"email": "n@example.com", "first_name": "A\x00"}}).encode()
    response = client.post(url, content=nul, headers={**signed, signing.HEADER: signing.sign(secret, nul)})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "contact.first_name"
    as_system(session, workspace)
    assert session.scalars(select(ConsentState.status)).all() == ["granted"]


def test_a_submission_signed_for_another_workspace_is_refused(client: TestClient, session: Session) -> None:
    ours_workspace, headers = _setup(session)
    other = make_workspace(session)
    as_system(session, other)
    theirs = sources.create_source(session, name="Their form", kind="web_form")
    their_secret = inbound.rotate_secret(session, source_id=theirs.id)
    session.commit()
    as_system(session, ours_workspace)
    ours = session.scalars(select(sources.Source).where(sources.Source.name == "Sklep")).one()
    client.post(f"/api/v1/sources/{ours.id}/inbound-secret", headers=headers)
    body = b'{"submission_id": "x", "contact": {"email": "y@example.com"}}'
    response = client.post(
        f"/api/v1/sources/{ours.id}/submissions",
        content=body,
        headers={signing.HEADER: signing.sign(their_secret, body)},
    )
    assert response.status_code == 401


def test_the_upload_and_mapping_pages(client: TestClient, session: Session, db: Database) -> None:
    workspace, _ = _setup(session)
    user = make_member(session, workspace, Role.OPERATOR)
    session.commit()
    sign_in(client, user.email)
    as_system(session, workspace)
    page = client.get(f"/w/{workspace.slug}/imports")
    assert page.status_code == 200 and "Upload and map columns" in page.text
    csrf = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    source = session.scalars(select(sources.Source)).one()
    mapping = client.post(
        f"/w/{workspace.slug}/imports/upload",
        data={"csrf_token": csrf, "source_id": str(source.id)},
        files={"file": ("k.csv", CSV.encode(), "text/csv")},
    )
    assert mapping.status_code == 200 and "ola@example.com" in mapping.text  # sample values shown
    staged_name = mapping.text.split('name="staged_name" value="')[1].split('"')[0]
    form = {
        "csrf_token": csrf,
        "staged_name": staged_name,
        "filename": "k.csv",
        "source_id": str(source.id),
        "column:email": "email",
        "column:imię": "first_name",
        "column:email_marketing": "consent:email_marketing",
        "mode": "dry_run",
    }
    started = client.post(f"/w/{workspace.slug}/imports/start", data=form, follow_redirects=False)
    assert started.status_code == 303
    job_id = int(started.headers["location"].rsplit("/", 1)[1])
    imports.run_job(db, job_id)
    job_page = client.get(f"/w/{workspace.slug}/imports/{job_id}")
    assert "Import it for real" in job_page.text and "is not a valid email address" in job_page.text
    traversal = {**form, "staged_name": "../../etc/passwd"}
    assert client.post(f"/w/{workspace.slug}/imports/start", data=traversal).status_code == 422
    for wrong in ("abc", "99999999999999999999"):  # not a source id: named, not a server error
        refused = client.post(f"/w/{workspace.slug}/imports/start", data={**form, "source_id": wrong})
        assert refused.status_code == 422 and "source_id" in refused.text, wrong
