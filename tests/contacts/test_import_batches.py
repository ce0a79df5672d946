"""Batched imports: one batch must end exactly as upserting its rows one by one would.

The import reads a batch's contacts in a few queries and matches its rows in memory, so a later row
must see what earlier rows of the same batch created or changed. These tests pin the cases that
depend on it, and compare whole imports with the row-by-row implementation the batching replaced
(``_row_by_row`` below, on ``contacts.service.upsert_contact``) at several batch sizes.
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.factories import as_system, make_workspace
from zgoda.accounts.models import Workspace
from zgoda.consent import ledger, sources
from zgoda.consent.models import ConsentEvent, ConsentEvidence, ConsentState, Purpose, Source
from zgoda.contacts import service as contacts
from zgoda.contacts.imports import service as imports
from zgoda.contacts.imports.mapping import ColumnMapping
from zgoda.contacts.imports.models import ImportJob
from zgoda.contacts.models import Contact, ContactIdentity
from zgoda.core.db import Database
from zgoda.core.errors import Conflict, InvalidInput
from zgoda.core.keys import address_hasher

HEADER = "nr klienta;email;telefon;imię;miasto;email_marketing;zgoda_sms;data_zgody\n"
MAPPING = ColumnMapping(
    email="email",
    phone="telefon",
    external_id="nr klienta",
    first_name="imię",
    consent_time="data_zgody",
    consents={"email_marketing": "email_marketing", "sms_marketing": "zgoda_sms"},
    attributes={"city": "miasto"},
)


def _workspace_with_source(session: Session) -> Source:
    as_system(session, make_workspace(session))
    return sources.create_source(session, name="Sklep", kind="shop")


def _existing(
    session: Session,
    source: Source,
    *,
    email: str | None = None,
    phone: str | None = None,
    external_id: str | None = None,
    first_name: str | None = None,
) -> Contact:
    data = contacts.ContactData(email=email, phone=phone, first_name=first_name, source_id=source.id,
                                external_id=external_id)  # fmt: skip
    return contacts.upsert_contact(session, data).contact


def _import(
    session: Session, db: Database, source: Source, tmp_path: Path, rows: list[str], *, batch_size: int = 1000
) -> ImportJob:
    staged = imports.stage_file(io.BytesIO((HEADER + "".join(rows)).encode()), filename="k.csv", data_dir=tmp_path)
    planned = imports.create_job(session, source_id=source.id, staged=staged, mapping=MAPPING, force=True)
    session.commit()
    job = imports.run_job(db, planned.job.id, batch_size=batch_size)
    assert job.status == "done", job.error
    session.expire_all()  # the import wrote through other sessions
    as_system(session, session.get(Workspace, job.workspace_id))
    return job


def _rejected(session: Session, job: ImportJob) -> list[tuple[int, str, str]]:
    return [(r["row"], r["field"], r["reason"]) for r in imports.report(session, job)["rejected"]]


def _by_email(session: Session, email: str) -> Contact:
    return session.scalars(select(Contact).where(Contact.email == email)).one()


def _snapshot(session: Session, job: ImportJob) -> dict[str, Any]:
    """The workspace's contacts, identities, consent states, events and the job's report, free of ids and clocks."""
    names: dict[int, tuple[Any, ...]] = {}
    external: dict[int, list[str]] = {}
    for contact_id, external_id in session.execute(select(ContactIdentity.contact_id, ContactIdentity.external_id)):
        external.setdefault(contact_id, []).append(external_id)
    for c in session.scalars(select(Contact)):
        names[c.id] = (c.email, c.phone, c.first_name, c.last_name, sorted(c.attributes.items()),
                       sorted(external.get(c.id, [])))  # fmt: skip
    states = sorted(
        [
            (names[s.contact_id], key, s.status, s.legal_basis, s.decided_at)
            for s, key in session.execute(select(ConsentState, Purpose.key).join(Purpose))
        ],
        key=repr,
    )
    events = sorted(
        [
            (names[e.contact_id], key, e.event_type, e.legal_basis, e.occurred_at, evidence.file_row)
            for e, key, evidence in session.execute(
                select(ConsentEvent, Purpose.key, ConsentEvidence).join(Purpose).join(ConsentEvidence)
            )
        ],
        key=repr,
    )

    def described(reason: str) -> str:  # conflict messages name contacts by id: name them by their data
        return re.sub(r"contact (\d+)", lambda m: f"contact {names[int(m.group(1))]}", reason)

    return {
        "counts": job.counts,
        "rejected": [(row, field, described(reason)) for row, field, reason in _rejected(session, job)],
        "contacts": sorted(names.values(), key=repr),
        "states": states,
        "events": events,
    }


def test_a_duplicate_email_in_one_batch_updates_the_contact_the_first_row_created(
    session: Session, db: Database, tmp_path: Path
) -> None:
    source = _workspace_with_source(session)
    rows = ["K1;jan@example.com;;Jan;Łódź;tak;;2025-01-01\n", "K2;Jan@Example.com;;Janek;;;;2025-02-01\n",
            ";jan@example.com;;Janek;Łódź;;;2025-03-01\n"]  # fmt: skip
    job = _import(session, db, source, tmp_path, rows)
    assert job.counts["contacts_created"] == 1
    assert job.counts["contacts_merged"] == 1  # row 3: matched by email, brings K2 (and a new name)
    assert job.counts["contacts_unchanged"] == 1  # row 4: the same again
    jan = _by_email(session, "jan@example.com")
    assert jan.first_name == "Janek" and jan.attributes == {"city": "Łódź"}
    identities = session.scalars(select(ContactIdentity.external_id).where(ContactIdentity.contact_id == jan.id))
    assert sorted(identities) == ["K1", "K2"]


def test_an_external_id_and_an_email_of_two_existing_contacts_are_a_conflict(
    session: Session, db: Database, tmp_path: Path
) -> None:
    source = _workspace_with_source(session)
    anna = _existing(session, source, email="anna@example.com", external_id="K1")
    ewa = _existing(session, source, email="ewa@example.com", external_id="K2")
    job = _import(session, db, source, tmp_path, ["K1;ewa@example.com;;Anna;;;;2025-01-01\n"])
    assert job.counts["conflicts"] == 1 and job.counts["rows_rejected"] == 1
    reason = f"These details match different contacts (identity → contact {anna.id}, email → contact {ewa.id}); "
    assert _rejected(session, job) == [(2, "email", reason + "they are not merged.")]
    assert _by_email(session, "anna@example.com").first_name is None  # nothing merged


def test_a_conflict_with_a_contact_made_earlier_in_the_batch_names_its_id(
    session: Session, db: Database, tmp_path: Path
) -> None:
    source = _workspace_with_source(session)
    anna = _existing(session, source, email="anna@example.com", external_id="K1")
    job = _import(session, db, source, tmp_path, [";nowa@example.com;;;;;;\n", "K1;nowa@example.com;;;;;;\n"])
    nowa = _by_email(session, "nowa@example.com")
    assert job.counts["contacts_created"] == 1 and job.counts["conflicts"] == 1
    [(row, field, reason)] = _rejected(session, job)
    assert (row, field) == (3, "email")
    assert f"(identity → contact {anna.id}, email → contact {nowa.id})" in reason


def test_a_row_matched_by_email_with_a_new_external_id_is_merged(
    session: Session, db: Database, tmp_path: Path
) -> None:
    source = _workspace_with_source(session)
    anna = _existing(session, source, email="anna@example.com")
    job = _import(session, db, source, tmp_path, ["K7;anna@example.com;;;;;;\n"])
    assert job.counts["contacts_merged"] == 1 and job.counts["contacts_created"] == 0
    identity = session.scalars(select(ContactIdentity).where(ContactIdentity.external_id == "K7")).one()
    assert identity.contact_id == anna.id and identity.source_id == source.id


def test_a_phone_shared_by_two_existing_contacts(session: Session, db: Database, tmp_path: Path) -> None:
    source = _workspace_with_source(session)
    _existing(session, source, email="a@example.com", phone="601234567")
    b = _existing(session, source, email="b@example.com")
    contacts.update_contact(session, contact_id=b.id, changes=contacts.ContactData(phone="601 234 567"))
    rows = [
        ";nowy@example.com;601234567;;;;;\n",  # only the shared phone names someone: which one? a conflict
        ";;+48 601 234 567;;;;;\n",
        ";a@example.com;601234567;Ala;;;;\n",  # the email decides; the shared phone is then ignored
    ]
    job = _import(session, db, source, tmp_path, rows)
    assert job.counts["conflicts"] == 2 and job.counts["contacts_updated"] == 1
    reason = "Several contacts share the phone number +48601234567."
    assert _rejected(session, job) == [(2, "phone", reason), (3, "phone", reason)]
    assert _by_email(session, "a@example.com").first_name == "Ala"
    assert session.scalar(select(Contact.id).where(Contact.email == "nowy@example.com")) is None


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_a_phone_stops_being_shared_within_the_batch(
    session: Session, db: Database, tmp_path: Path, batch_size: int
) -> None:
    source = _workspace_with_source(session)
    _existing(session, source, email="a@example.com", phone="601234567")
    b = _existing(session, source, email="b@example.com")
    contacts.update_contact(session, contact_id=b.id, changes=contacts.ContactData(phone="601234567"))
    rows = [
        ";a@example.com;602000000;;;;;\n",  # a@ takes a new number: b@ alone keeps 601 234 567
        ";;601234567;Bea;;;;\n",  # so the number now names b@
    ]
    job = _import(session, db, source, tmp_path, rows, batch_size=batch_size)
    assert job.counts["contacts_updated"] == 2 and job.counts["conflicts"] == 0
    assert _by_email(session, "b@example.com").first_name == "Bea"


def test_addresses_that_move_between_contacts_in_one_batch(session: Session, db: Database, tmp_path: Path) -> None:
    """A and B end with each other's address: the bulk update must never hold one address twice."""
    source = _workspace_with_source(session)
    _existing(session, source, email="a@example.com", external_id="A", first_name="Ala")
    _existing(session, source, email="b@example.com", external_id="B", first_name="Bea")
    rows = ["A;c@example.com;;;;;;\n", "B;a@example.com;;;;;;\n", "A;b@example.com;;;;;;\n",
            ";c@example.com;;Cezary;;;;\n"]  # fmt: skip
    job = _import(session, db, source, tmp_path, rows)
    assert job.counts["contacts_updated"] == 3 and job.counts["contacts_created"] == 1
    assert _by_email(session, "b@example.com").first_name == "Ala"
    assert _by_email(session, "a@example.com").first_name == "Bea"
    assert _by_email(session, "c@example.com").first_name == "Cezary"


DUPLICATES = [
    "K1;ola@example.com;601000001;Ola;Kraków;tak;;2025-01-01\n",
    "K2;piotr@example.com;601000002;Piotr;;nie;tak;2025-01-02\n",
    "K1;ola@example.com;601000001;Aleksandra;;;nie;2025-01-03\n",  # duplicate of row 2
    "K3;piotr@example.com;;;Gdańsk;2025-01-04;;2025-01-04\n",  # merge K3 into piotr
    "K4;ola@example.com;;;;;;2025-01-05\n",  # merge K4 into ola
    "K3;ola@example.com;;;;;;2025-01-06\n",  # K3 is piotr, the email is ola: conflict
    ";zenon@example.com;601000002;Zenon;;tak;tak;2025-01-07\n",  # piotr's phone: piotr takes the address
    ";;601000002;;;;nie;2025-01-08\n",
    "K5;;601000009;;;;tak;2025-01-09\n",
    "K5;hania@example.com;;Hania;;tak;;2025-01-10\n",
]


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batch_boundaries_in_the_middle_of_duplicates_change_nothing(
    session: Session, db: Database, tmp_path: Path, batch_size: int
) -> None:
    whole = _import(session, db, _workspace_with_source(session), tmp_path, DUPLICATES, batch_size=1000)
    expected = _snapshot(session, whole)
    split = _import(session, db, _workspace_with_source(session), tmp_path, DUPLICATES, batch_size=batch_size)
    assert _snapshot(session, split) == expected
    assert expected["counts"]["conflicts"] == 1 and expected["counts"]["contacts_merged"] == 2


def _row_by_row(
    session: Session,
    context: Any,
    batch: list[tuple[int, dict[str, str], str | None]],
    counts: dict[str, int],
    rejections: list[tuple[int, str, str]],
) -> None:
    """The import before batching: ``upsert_contact`` row by row. The oracle the batched import must equal."""
    accepted: list[tuple[Any, Contact]] = []
    for number, values, problem in batch:
        counts["rows_read"] += 1
        try:
            if problem is not None:
                raise imports._Rejected("row", problem)
            row = imports._parse_row(context, number, values)
            try:
                result = contacts.upsert_contact(session, row.data, region=context.region, audit_changes=False)
            except Conflict as error:
                counts["conflicts"] += 1
                raise imports._Rejected(error.field or "email", error.detail) from None
            except InvalidInput as error:
                raise imports._Rejected(error.field or "row", error.detail) from None
        except imports._Rejected as rejected:
            counts["rows_rejected"] += 1
            rejections.append((number, rejected.field_name, rejected.reason))
            continue
        if result.outcome == "created":
            counts["contacts_created"] += 1
        elif result.matched_by in ("email", "phone") and result.identity_added:
            counts["contacts_merged"] += 1
        elif result.outcome == "updated":
            counts["contacts_updated"] += 1
        else:
            counts["contacts_unchanged"] += 1
        accepted.append((row, result.contact))
    known = {contact.id for _, contact in accepted}
    ledger.record_events(session, imports._consent_events(session, context, accepted, counts, known), now=context.now)


def _messy_file(seed: int, rows: int = 240) -> list[str]:
    """Rows drawn from small pools of ids, addresses and numbers: duplicates, merges and conflicts galore."""
    rng = random.Random(seed)
    cells = ["tak", "nie", "", "", "2024-03-01", "01.06.2025"]
    lines = []
    for n in range(rows):
        external = f"K{rng.randrange(25)}" if rng.random() < 0.6 else ""
        email = f"p{rng.randrange(40)}@example.com" if rng.random() < 0.8 else ""
        if email and rng.random() < 0.1:
            email = email.upper()
        phone = f"60100{rng.randrange(30):04d}" if rng.random() < 0.5 or not email else ""
        if rng.random() < 0.03:
            email = "broken@"  # a rejected row
        name = rng.choice(["Ala", "Ola", "Żaneta", "Łucja", ""])
        city = rng.choice(["Łódź", "Kraków", ""])
        lines.append(f"{external};{email};{phone};{name};{city};{rng.choice(cells)};{rng.choice(cells)};"
                     f"2025-{1 + n // 30:02d}-{1 + n % 28:02d} 12:00\n")  # fmt: skip
    return lines


def _seed(session: Session, source: Source) -> None:
    """Existing contacts the file will meet: identities, addresses, numbers, and one number shared by two."""
    for n in range(0, 40, 4):
        _existing(session, source, email=f"p{n}@example.com", phone=f"60100{n % 30:04d}" if n % 8 else None,
                  external_id=f"K{n // 2}" if n % 3 else None, first_name="Stary")  # fmt: skip
    shared = _existing(session, source, email="inna@example.com")
    contacts.update_contact(session, contact_id=shared.id, changes=contacts.ContactData(phone="601000004"))


@pytest.mark.parametrize(("seed", "batch_size"), [(1, 1), (2, 7), (3, 50), (4, 1000), (5, 1000)])
def test_the_batched_import_equals_the_row_by_row_import(
    session: Session, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, batch_size: int
) -> None:
    rows = _messy_file(seed)
    with monkeypatch.context() as patched:
        patched.setattr(imports, "_process_batch", _row_by_row)
        source = _workspace_with_source(session)
        _seed(session, source)
        expected = _snapshot(session, _import(session, db, source, tmp_path, rows, batch_size=batch_size))
    source = _workspace_with_source(session)
    _seed(session, source)
    batched = _snapshot(session, _import(session, db, source, tmp_path, rows, batch_size=batch_size))
    assert batched["counts"] == expected["counts"]
    assert batched["rejected"] == expected["rejected"]
    assert batched == expected
    counts = expected["counts"]
    assert counts["conflicts"] > 0 and counts["contacts_merged"] > 0 and counts["contacts_updated"] > 0


@pytest.mark.parametrize(
    "raw",
    ["Jan.Kowalski@Gmail.COM", "a+tag@sub.Example.pl", "o'reilly@example.com", "x@xn--mnchen-3ya.de", "Δ@example.gr"],
)
def test_an_address_normalised_once_is_normalised(raw: str) -> None:
    """The batch skips upsert_contact's second normalisation of lower-case ASCII addresses: it must be a no-op."""
    once = contacts.normalise_email(raw)
    assert contacts.normalise_email(once) == once


@pytest.mark.parametrize(
    "raw", ["+48 601 234 567", "601-234-567", "0048601234567", "+44 20 7946 0958", "(22) 123 45 67"]
)
def test_a_number_normalised_once_is_normalised(raw: str) -> None:
    """The batch never normalises a phone number twice (upsert_contact does): E.164 must come back unchanged."""
    once = contacts.normalise_phone(raw)
    assert contacts.normalise_phone(once) == once


def test_contacts_written_in_bulk_are_stored_as_upsert_contact_stores_them(
    session: Session, db: Database, tmp_path: Path
) -> None:
    """The import writes contacts and identities in bulk (COPY on PostgreSQL): every column as the ORM would."""
    source = _workspace_with_source(session)
    by_hand = _existing(session, source, email="reczny@example.com", phone="601000999", external_id="K-1")
    session.commit()
    rows = ["K7;Żaneta.Nowak@Example.com;+48 601 000 111;Żaneta;Łódź;tak;nie;2025-03-01 12:00\n"]
    job = _import(session, db, source, tmp_path, rows)
    assert job.counts["contacts_created"] == 1
    imported = _by_email(session, "żaneta.nowak@example.com")
    hand = session.get(Contact, by_hand.id)
    assert hand is not None
    address_hash = address_hasher(session)
    assert imported.email_hash == address_hash("żaneta.nowak@example.com")
    assert hand.email_hash == address_hash("reczny@example.com")
    assert imported.phone == "+48601000111"
    assert (imported.first_name, imported.last_name) == ("Żaneta", None)
    assert imported.attributes == {"city": "Łódź"}
    assert imported.source_id == source.id and imported.workspace_id == source.workspace_id
    assert len(imported.ref) == 32 and imported.ref != hand.ref
    assert imported.erased_at is None and imported.restricted_at is None
    assert hand.created_at <= imported.created_at == imported.updated_at
    assert imported.created_at.tzinfo is not None
    [identity] = imported.identities
    assert (identity.external_id, identity.source_id, identity.workspace_id) == ("K7", source.id, source.workspace_id)
    assert identity.created_at >= imported.created_at
    assert ledger.states_of(session, contact_id=imported.id)  # the ledger references the new id
