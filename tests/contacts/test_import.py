"""File imports: formats, encodings, mapping, provenance, idempotency, dry runs, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.factories import as_system, make_workspace
from zgoda.accounts.models import Workspace
from zgoda.consent import sources
from zgoda.consent.models import ConsentEvent, ConsentEvidence, ConsentState, Purpose, Source
from zgoda.contacts.imports import service as imports
from zgoda.contacts.imports.mapping import ColumnMapping
from zgoda.contacts.imports.models import ImportJob
from zgoda.contacts.imports.reader import detect_encoding
from zgoda.contacts.models import Contact
from zgoda.core.db import Database
from zgoda.core.errors import InvalidInput

HEADER = "email;telefon;imię;nazwisko;email_marketing;zgoda_sms;data_zgody\n"
ROWS = [
    "anna.nowak@example.com;601 234 567;Anna;Nowak;tak;nie;2025-05-01 10:00\n",
    "piotr.wisniewski@example.com;;Piotr;Wiśniewski;1;;2025-06-02\n",
    "zofia@example.com;+48 602 345 678;Zofia;Łęcka;nie;tak;01.07.2025\n",
]


@pytest.fixture
def workspace(session: Session) -> Workspace:
    workspace = make_workspace(session)
    as_system(session, workspace)
    return workspace


@pytest.fixture
def source(session: Session, workspace: Workspace) -> Source:
    return sources.create_source(session, name="Sklep", kind="shop")


def _import(
    session: Session,
    db: Database,
    source: Source,
    tmp_path: Path,
    content: bytes | str,
    *,
    name: str = "kontakty.csv",
    dry_run: bool = False,
    mapping: ColumnMapping | None = None,
    batch_size: int = 1000,
    **kwargs: object,
) -> ImportJob:
    data = content.encode() if isinstance(content, str) else content
    staged = imports.stage_file(io.BytesIO(data), filename=name, data_dir=tmp_path)
    planned = imports.create_job(
        session, source_id=source.id, staged=staged, dry_run=dry_run, mapping=mapping, **kwargs
    )  # type: ignore[arg-type]
    session.commit()
    if planned.job.status != "queued":
        return planned.job
    job = imports.run_job(db, planned.job.id, batch_size=batch_size)
    as_system(session, session.get(Workspace, job.workspace_id))
    return job


def _states(session: Session) -> dict[tuple[str, str], str]:
    rows = session.execute(
        select(Contact.email, Purpose.key, ConsentState.status)
        .join(Contact, Contact.id == ConsentState.contact_id)
        .join(Purpose, Purpose.id == ConsentState.purpose_id)
    )
    return {(r[0], r[1]): r[2] for r in rows}


def test_a_polish_csv_is_mapped_automatically_and_imported(
    session: Session, db: Database, source: Source, tmp_path: Path
) -> None:
    job = _import(session, db, source, tmp_path, HEADER + "".join(ROWS))
    assert job.status == "done", job.error
    assert job.counts["contacts_created"] == 3 and job.counts["rows_rejected"] == 0
    states = _states(session)
    assert states[("anna.nowak@example.com", "email_marketing")] == "granted"
    assert states[("zofia@example.com", "sms_marketing")] == "granted"
    assert ("zofia@example.com", "email_marketing") not in states  # "nie" with no prior consent records nothing
    # the phone column exists but the file has no phone_marketing column: recorded with basis unknown
    assert states[("anna.nowak@example.com", "phone_marketing")] == "none"
    anna = session.scalars(select(Contact).where(Contact.email == "anna.nowak@example.com")).one()
    assert anna.phone == "+48601234567" and anna.first_name == "Anna"


def test_provenance_on_every_event(session: Session, db: Database, source: Source, tmp_path: Path) -> None:
    job = _import(session, db, source, tmp_path, HEADER + "".join(ROWS))
    event = session.scalars(
        select(ConsentEvent).where(ConsentEvent.event_type == "grant", ConsentEvent.legal_basis == "consent").limit(1)
    ).one()
    evidence = session.get(ConsentEvidence, event.id)
    assert event.source_id == source.id and event.method == "import" and event.reference == f"import:{job.id}"
    assert evidence is not None and evidence.file_sha256 == job.file_sha256 and evidence.file_row in (2, 3, 4)
    assert event.actor == "test"


def test_the_same_file_again_changes_nothing_and_says_so(
    session: Session, db: Database, source: Source, tmp_path: Path
) -> None:
    _import(session, db, source, tmp_path, HEADER + "".join(ROWS))
    events = session.scalar(select(func.count(ConsentEvent.id)))
    again = _import(session, db, source, tmp_path, HEADER + "".join(ROWS))
    assert again.status == "duplicate" and "already imported" in (again.error or "")
    forced = _import(session, db, source, tmp_path, HEADER + "".join(ROWS), force=True)
    assert forced.status == "done"
    assert forced.counts["contacts_unchanged"] == 3 and forced.counts["consents_granted"] == 0
    assert session.scalar(select(func.count(ConsentEvent.id))) == events


def test_dry_run_reports_what_the_real_run_does_and_writes_nothing(
    session: Session, db: Database, source: Source, tmp_path: Path
) -> None:
    content = HEADER + "".join(ROWS) + "bad-address;;X;Y;tak;;\n" + ROWS[0]
    dry = _import(session, db, source, tmp_path, content, dry_run=True)
    assert dry.status == "done" and dry.dry_run
    assert session.scalar(select(func.count(Contact.id))) == 0
    assert session.scalar(select(func.count(ConsentEvent.id))) == 0
    real = _import(session, db, source, tmp_path, content)
    assert real.counts == dry.counts
    rejected = imports.report(session, real)["rejected"]
    assert rejected == [{"row": 5, "field": "email", "reason": rejected[0]["reason"]}]
    assert "not a valid email address" in rejected[0]["reason"]


def test_a_withdrawal_in_a_later_file_beats_an_older_grant(
    session: Session, db: Database, source: Source, tmp_path: Path
) -> None:
    _import(session, db, source, tmp_path, HEADER + ROWS[0])
    crm = sources.create_source(session, name="CRM", kind="crm")
    _import(session, db, crm, tmp_path, "email;email_marketing;data_zgody\nanna.nowak@example.com;nie;2025-09-01\n")
    assert _states(session)[("anna.nowak@example.com", "email_marketing")] == "withdrawn"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1250", "iso-8859-2"])
def test_polish_encodings_are_detected(
    session: Session, db: Database, source: Source, tmp_path: Path, encoding: str
) -> None:
    content = (HEADER + "".join(ROWS)).encode(encoding)
    assert detect_encoding(content) == encoding
    job = _import(session, db, source, tmp_path, content)
    assert job.status == "done"
    zofia = session.scalars(select(Contact).where(Contact.email == "zofia@example.com")).one()
    assert zofia.last_name == "Łęcka"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiters_and_quoted_newlines(
    session: Session, db: Database, source: Source, tmp_path: Path, delimiter: str
) -> None:
    d = delimiter
    content = (
        f'email{d}first_name{d}email_marketing\n"a@example.com"{d}"Ala\nma kota"{d}yes\nb@example.com{d}Bob{d}no\n'
    )
    job = _import(session, db, source, tmp_path, content)
    assert job.status == "done" and job.counts["contacts_created"] == 2
    ala = session.scalars(select(Contact).where(Contact.email == "a@example.com")).one()
    assert ala.first_name == "Ala\nma kota"


def test_xlsx_and_jsonl(session: Session, db: Database, source: Source, tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["E-mail", "Imię", "email_marketing"])
    sheet.append(["xl@example.com", "Ksenia", "TAK"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    job = _import(session, db, source, tmp_path, buffer.getvalue(), name="kontakty.xlsx")
    assert job.status == "done" and job.counts["consents_granted"] == 1
    lines = [
        json.dumps({"email": "j1@example.com", "email_marketing": True}),
        json.dumps({"email": "j2@example.com", "email_marketing": "2025-01-02T03:04:05Z"}),
        "{broken",
    ]
    job = _import(session, db, source, tmp_path, "\n".join(lines) + "\n", name="kontakty.jsonl")
    assert job.counts["contacts_created"] == 2 and job.counts["rows_rejected"] == 1


def test_formula_like_cells_are_stored_as_text(session: Session, db: Database, source: Source, tmp_path: Path) -> None:
    content = 'email,first_name,last_name\nf@example.com,=HYPERLINK("http://x"),+48\n'
    _import(session, db, source, tmp_path, content)
    contact = session.scalars(select(Contact).where(Contact.email == "f@example.com")).one()
    assert contact.first_name == '=HYPERLINK("http://x")' and contact.last_name == "+48"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"email,first_name\n", None),  # header only: a job with nothing to do
        (b"first_name,last_name\nAla,Kot\n", "Map an email or a phone column"),
        (b"email,Email\na@example.com,b@example.com\n", "appears twice"),
        (b"email,na\x00me\na@example.com,Ala\n", "column 2 holds a NUL character"),
    ],
)
def test_bad_files_get_a_clear_error(
    session: Session, db: Database, source: Source, tmp_path: Path, content: bytes, message: str | None
) -> None:
    if message is None:
        job = _import(session, db, source, tmp_path, content)
        assert job.status == "done" and job.counts["rows_read"] == 0
        return
    with pytest.raises(InvalidInput, match=message):
        _import(session, db, source, tmp_path, content)


def test_a_huge_single_line_fails_cleanly_and_writes_nothing(
    session: Session, db: Database, source: Source, tmp_path: Path
) -> None:
    content = b"email,first_name\nok@example.com,Ok\nx@example.com," + b"a" * (20 * 1024 * 1024) + b"\n"
    job = _import(session, db, source, tmp_path, content, batch_size=1)
    assert job.status == "failed" and "Row 3" in (job.error or "")
    # the first batch (row 2) committed; the failing row wrote nothing
    assert session.scalar(select(func.count(Contact.id))) == 1


def test_bad_rows_are_reported_and_the_rest_imported(
    session: Session, db: Database, source: Source, tmp_path: Path
) -> None:
    content = (
        "email,telefon,email_marketing\n"
        "good@example.com,,tak\n"
        "not-an-email,,tak\n"
        "p@example.com,123,tak\n"
        "q@example.com,,perhaps\n"
        "r@example.com,,2999-01-01\n"
        "s@example.com,,01.01.0001\n"  # a placeholder date, east of Greenwich: no UTC time exists for it
        "t@example.com\x00,,tak\n"  # PostgreSQL's text refuses NUL
    )
    job = _import(session, db, source, tmp_path, content)
    rejected = {(r["row"], r["field"]) for r in imports.report(session, job)["rejected"]}
    assert rejected == {
        (3, "email"),
        (4, "telefon"),
        (5, "email_marketing"),
        (6, "email_marketing"),
        (7, "email_marketing"),
        (8, "row"),
    }
    reasons = {r["row"]: r["reason"] for r in imports.report(session, job)["rejected"]}
    assert reasons[8] == "the cell under 'email' holds a NUL character"
    assert job.counts["contacts_created"] == 1


def test_mixed_encodings_reject_the_broken_rows(session: Session, db: Database, source: Source, tmp_path: Path) -> None:
    content = "email,last_name\nu@example.com,Łęcka\n".encode() + "w@example.com,Łęcka\n".encode("cp1250") * 1
    content = content + ("v@example.com,Żółć\n" * 200).encode()
    job = _import(session, db, source, tmp_path, content)
    rejected = imports.report(session, job)["rejected"]
    assert [r["row"] for r in rejected] == [3] and "mixes encodings" in rejected[0]["reason"]


def test_a_source_of_another_workspace_is_not_found(
    session: Session, db: Database, source: Source, tmp_path: Path
) -> None:
    other = make_workspace(session)
    as_system(session, other)
    staged = imports.stage_file(io.BytesIO(b"email\na@example.com\n"), filename="a.csv", data_dir=tmp_path)
    with pytest.raises(Exception, match="no such source"):
        imports.create_job(session, source_id=source.id, staged=staged)


def test_cancel_stops_between_batches_and_keeps_whole_batches(
    session: Session, db: Database, source: Source, tmp_path: Path
) -> None:
    content = "email\n" + "".join(f"c{n}@example.com\n" for n in range(10))
    staged = imports.stage_file(io.BytesIO(content.encode()), filename="c.csv", data_dir=tmp_path)
    planned = imports.create_job(session, source_id=source.id, staged=staged)
    session.commit()

    def cancel_after_first(job: ImportJob) -> None:
        with db.transaction() as other:
            as_system(other, other.get(Workspace, job.workspace_id))
            imports.cancel_job(other, job_id=job.id)

    job = imports.run_job(db, planned.job.id, batch_size=3, on_progress=cancel_after_first)
    assert job.status == "cancelled" and job.rows_done == 4  # rows 2-4: one whole batch
    as_system(session, session.get(Workspace, job.workspace_id))
    assert session.scalar(select(func.count(Contact.id))) == 3


def test_a_failed_import_resumes_after_its_last_committed_batch(
    session: Session, db: Database, source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = "email\n" + "".join(f"r{n}@example.com\n" for n in range(9))
    staged = imports.stage_file(io.BytesIO(content.encode()), filename="r.csv", data_dir=tmp_path)
    planned = imports.create_job(session, source_id=source.id, staged=staged)
    session.commit()
    original = imports._process_batch
    calls = {"n": 0}

    def crash_on_second_batch(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker lost its database connection")
        original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(imports, "_process_batch", crash_on_second_batch)
    with pytest.raises(RuntimeError):
        imports.run_job(db, planned.job.id, batch_size=3)
    as_system(session, session.get(Workspace, planned.job.workspace_id))
    session.expire_all()
    failed = imports.get_job(session, job_id=planned.job.id)
    assert failed.status == "failed" and failed.rows_done == 4 and "connection" in (failed.error or "")
    assert session.scalar(select(func.count(Contact.id))) == 3  # the first batch only, whole
    monkeypatch.setattr(imports, "_process_batch", original)
    resumed = imports.run_job(db, planned.job.id, batch_size=3)
    assert resumed.status == "done" and resumed.counts["contacts_created"] == 9
    as_system(session, session.get(Workspace, resumed.workspace_id))
    assert session.scalar(select(func.count(Contact.id))) == 9


def test_csv_exports_neutralise_formulas() -> None:
    from zgoda.core.csvsafe import write_csv

    text = write_csv(["row", "reason"], [[2, '=HYPERLINK("http://x")'], [3, "+48 601"], [4, "plain"], [5, "@SUM(A1)"]])
    assert "'=HYPERLINK" in text and "'+48 601" in text and "'@SUM" in text and ",plain" in text
