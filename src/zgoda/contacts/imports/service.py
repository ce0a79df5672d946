"""Import jobs: stage the file, map its columns, then import it in all-or-nothing batches.

A real run commits each batch together with the job's resume point, so a crash or a
cancellation leaves whole batches only and the job resumes where it stopped. A dry run
processes every batch the same way and rolls each one back, so its report predicts the
real run's (see docs/imports.md for the one approximation). Re-importing a file the source
already delivered does nothing and says so.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import ARRAY, ColumnElement, Table, any_, bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session

from zgoda.accounts.models import Workspace
from zgoda.audit import service as audit
from zgoda.consent import ledger, purposes, sources
from zgoda.consent.models import ConsentState, Purpose, Source
from zgoda.contacts import service as contacts
from zgoda.contacts.imports.mapping import (
    ColumnMapping,
    ConsentCell,
    auto_map,
    parse_consent,
    parse_legal_basis,
    parse_time,
)
from zgoda.contacts.imports.models import ImportJob, ImportRejection, ImportStatus
from zgoda.contacts.imports.reader import FileInfo, inspect, read_rows
from zgoda.contacts.models import Contact, ContactIdentity
from zgoda.core.clock import utcnow
from zgoda.core.db import Database
from zgoda.core.errors import Conflict, InvalidInput, NotFound, ZgodaError
from zgoda.core.keys import address_hasher
from zgoda.core.tenancy import Actor, bind_scope, current_actor, current_workspace_id, unscoped

BATCH_SIZE = 1000
MAX_STORED_REJECTIONS = 100_000
REPORT_REJECTIONS = 1000
COUNT_KEYS = (
    "rows_read",
    "rows_rejected",
    "contacts_created",
    "contacts_updated",
    "contacts_unchanged",
    "contacts_merged",
    "conflicts",
    "consents_granted",
    "consents_withdrawn",
    "consents_left",
    "consents_unknown_basis",
)
CHANNEL_PURPOSES = {"email": ("email",), "phone": ("sms", "phone")}


@dataclass(frozen=True)
class StagedFile:
    path: Path
    sha256: str
    size: int
    filename: str


def stage_file(stream: IO[bytes], *, filename: str, data_dir: Path) -> StagedFile:
    """Copy an upload into the data folder, hashing it on the way (streamed: any size)."""
    folder = data_dir / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    temporary = folder / f"upload-{utcnow().timestamp():.6f}.part"
    size = 0
    with temporary.open("wb") as out:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    suffix = Path(filename).suffix.lower()[:8]
    final = folder / f"{digest.hexdigest()}{suffix}"
    temporary.replace(final)
    return StagedFile(path=final, sha256=digest.hexdigest(), size=size, filename=Path(filename).name[:255])


def stage_path(path: Path, *, data_dir: Path) -> StagedFile:
    """Stage a file given by path (the CLI)."""
    if not path.is_file():
        raise InvalidInput(f"There is no file at {path}.", field="file")
    with path.open("rb") as handle:
        return stage_file(handle, filename=path.name, data_dir=data_dir)


@dataclass
class PlannedJob:
    job: ImportJob
    mapped: dict[str, str]
    ignored: list[str]
    duplicate_of: ImportJob | None = None


def create_job(
    session: Session,
    *,
    source_id: int,
    staged: StagedFile,
    mapping: ColumnMapping | None = None,
    dry_run: bool = False,
    file_format: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    force: bool = False,
) -> PlannedJob:
    """Inspect the staged file, settle the mapping (given, saved for the source, or automatic) and queue a job."""
    source = sources.get_source(session, source_id=source_id, field="source")
    info = inspect(staged.path, declared_format=file_format, encoding=encoding, delimiter=delimiter)
    purpose_keys = {p.key for p in purposes.list_purposes(session)}
    ignored: list[str] = []
    if mapping is None:
        saved = source.settings.get("mapping") if source.settings else None
        candidate = ColumnMapping.from_json(saved) if saved else None
        if candidate is not None and set(candidate.used_headers()) <= set(info.headers):
            mapping = candidate
        else:
            mapping, ignored = auto_map(info.headers, purpose_keys)
    mapping.validate(info.headers, purpose_keys)
    used = mapping.used_headers()
    ignored = [h for h in info.headers if h not in used]
    actor = current_actor(session)
    job = ImportJob(
        source_id=source.id,
        filename=staged.filename,
        file_sha256=staged.sha256,
        size_bytes=staged.size,
        stored_path=str(staged.path),
        format=info.format,
        encoding=info.encoding,
        delimiter=info.delimiter,
        headers=info.headers,
        mapping=mapping.to_json(),
        dry_run=dry_run,
        counts=_zero_counts(),
        created_by=actor.label,
        created_by_user_id=actor.user_id,
        rows_estimate=_estimate_rows(staged.path, staged.size, info),
    )
    duplicate = None
    if not dry_run and not force:
        duplicate = session.scalar(
            select(ImportJob)
            .where(
                ImportJob.source_id == source.id,
                ImportJob.file_sha256 == staged.sha256,
                ImportJob.dry_run.is_(False),
                ImportJob.status == ImportStatus.DONE.value,
            )
            .order_by(ImportJob.id)
        )
        if duplicate is not None:
            job.status = ImportStatus.DUPLICATE.value
            job.finished_at = utcnow()
            job.error = f"This file was already imported from this source by job {duplicate.id}; nothing was done."
    session.add(job)
    if not dry_run:
        source.settings = {**(source.settings or {}), "mapping": mapping.to_json()}
    session.flush()
    audit.record(
        session,
        action="import.dry_run" if dry_run else "import.create",
        object_type="import_job",
        object_id=job.id,
        summary={
            "after": {
                "source_id": source.id,
                "file_sha256": staged.sha256,
                "rows_estimate": job.rows_estimate,
                "status": job.status,
            }
        },
    )
    return PlannedJob(job=job, mapped=used, ignored=ignored, duplicate_of=duplicate)


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


def _estimate_rows(path: Path, size: int, info: FileInfo) -> int | None:
    if info.format == "xlsx":
        return None
    with path.open("rb") as handle:
        sample = handle.read(256 * 1024)
    lines = sample.count(b"\n")
    if lines == 0:
        return 1
    return max(1, int(size / (len(sample) / lines)) - (1 if info.format == "csv" else 0))


def get_job(session: Session, *, job_id: int) -> ImportJob:
    job = session.scalar(select(ImportJob).where(ImportJob.id == job_id))
    if job is None:
        raise NotFound("There is no such import in this workspace.", field="job_id")
    return job


def list_jobs(session: Session, *, source_id: int | None = None, limit: int = 50) -> Sequence[ImportJob]:
    statement = select(ImportJob).order_by(ImportJob.id.desc()).limit(limit)
    if source_id is not None:
        statement = statement.where(ImportJob.source_id == source_id)
    return session.scalars(statement).all()


def list_rejections(session: Session, *, job_id: int, limit: int = REPORT_REJECTIONS) -> Sequence[ImportRejection]:
    return session.scalars(
        select(ImportRejection).where(ImportRejection.job_id == job_id).order_by(ImportRejection.row).limit(limit)
    ).all()


def cancel_job(session: Session, *, job_id: int) -> ImportJob:
    """Ask a queued or running import to stop after its current batch."""
    job = get_job(session, job_id=job_id)
    if job.status in (ImportStatus.QUEUED, ImportStatus.FAILED):
        job.status = ImportStatus.CANCELLED.value
        job.finished_at = utcnow()
    elif job.status == ImportStatus.RUNNING:
        job.status = ImportStatus.CANCELLING.value
    else:
        raise Conflict(f"This import is {job.status}; there is nothing to cancel.", field="job_id")
    audit.record(session, action="import.cancel", object_type="import_job", object_id=job.id)
    return job


def report(session: Session, job: ImportJob) -> dict[str, Any]:
    """The job's report: counts, progress and the first rejected rows."""
    rejected = [{"row": r.row, "field": r.field, "reason": r.reason} for r in list_rejections(session, job_id=job.id)]
    return {
        "job_id": job.id,
        "status": job.status,
        "dry_run": job.dry_run,
        "file": job.filename,
        "file_sha256": job.file_sha256,
        "source_id": job.source_id,
        "rows_done": job.rows_done,
        "rows_estimate": job.rows_estimate,
        "counts": job.counts,
        "rejected": rejected,
        "rejected_total": job.counts.get("rows_rejected", 0),
        "error": job.error,
    }


# --- running ---------------------------------------------------------------------------------


class _Rejected(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field_name = field_name
        self.reason = reason


@dataclass
class _Row:
    number: int
    data: contacts.ContactData
    consents: dict[str, ConsentCell]
    consent_time: datetime | None
    legal_basis: str | None
    notice: dict[str, Any] = field(default_factory=dict)
    ip: str | None = None


@dataclass
class _Context:
    session: Session
    job: ImportJob
    mapping: ColumnMapping
    source: Source
    purposes: dict[str, Purpose]
    zone: ZoneInfo
    region: str
    now: datetime
    notices: dict[tuple[str, int, str], Any] = field(default_factory=dict)


ProgressCallback = Callable[[ImportJob], None]


def run_job(
    database: Database,
    job_id: int,
    *,
    region: str = "PL",
    batch_size: int = BATCH_SIZE,
    on_progress: ProgressCallback | None = None,
) -> ImportJob:
    """Run (or resume) an import to the end, a cancellation or a failure; each batch is one transaction."""
    with database.transaction() as session:
        job = _load_for_run(session, job_id)
        if job.status not in (ImportStatus.QUEUED, ImportStatus.RUNNING, ImportStatus.FAILED):
            return job
        job.status = ImportStatus.RUNNING.value
        job.started_at = job.started_at or utcnow()
        job.error = None
        info = FileInfo(format=job.format, encoding=job.encoding, delimiter=job.delimiter, headers=list(job.headers))
        resume_after = job.rows_done
        dry_run = job.dry_run
    rows = (row for row in read_rows(Path(job.stored_path), info) if row[0] > resume_after)
    try:
        for batch_number, batch in enumerate(_chunks(rows, batch_size), start=1):
            with database.transaction() as session:
                job = _load_for_run(session, job_id)
                if job.status == ImportStatus.CANCELLING:
                    job.status = ImportStatus.CANCELLED.value
                    job.finished_at = utcnow()
                    break
                context = _context(session, job, region)
                counts = dict(job.counts)
                rejections: list[tuple[int, str, str]] = []
                if dry_run:
                    savepoint = session.begin_nested()
                    _process_batch(session, context, batch, counts, rejections)
                    savepoint.rollback()
                    job = _load_for_run(session, job_id)
                else:
                    _process_batch(session, context, batch, counts, rejections)
                    _refresh_statistics(session, batch_number)
                stored = (
                    session.scalar(select(func.count(ImportRejection.id)).where(ImportRejection.job_id == job.id)) or 0
                )
                for number, field_name, reason in rejections[: max(0, MAX_STORED_REJECTIONS - stored)]:
                    session.add(ImportRejection(job_id=job.id, row=number, field=field_name[:200], reason=reason[:500]))
                job.counts = counts
                job.rows_done = batch[-1][0]
            if on_progress is not None:
                on_progress(job)
        else:
            with database.transaction() as session:
                job = _load_for_run(session, job_id)
                if job.status in (ImportStatus.RUNNING, ImportStatus.CANCELLING):
                    job.status = ImportStatus.DONE.value
                    job.finished_at = utcnow()
                    audit.record(
                        session,
                        action="import.finish",
                        object_type="import_job",
                        object_id=job.id,
                        summary={"after": {"counts": job.counts, "dry_run": job.dry_run}},
                    )
    except Exception as error:
        with database.transaction() as session:
            job = _load_for_run(session, job_id)
            job.status = ImportStatus.FAILED.value
            job.error = error.detail if isinstance(error, ZgodaError) else f"{type(error).__name__}: {error}"
            job.finished_at = utcnow()
        if not isinstance(error, ZgodaError):
            raise
    with database.transaction() as session:
        return _load_for_run(session, job_id)


_GROWING_TABLES = ("contacts", "contact_identities", "consent_events", "consent_evidence", "consent_states")


def _refresh_statistics(session: Session, batch_number: int) -> None:
    """On PostgreSQL, after batches 1, 2, 4, 8, ..., ANALYZE the tables the import fills that have more
    than doubled since their statistics were taken.

    psycopg prepares a statement once a connection has run it five times, and PostgreSQL then keeps a
    generic plan for it. Planned while an import's first batches fill empty tables, such a plan scans
    whole tables, and keeps doing so on every later batch until an ANALYZE: the import slows
    quadratically (autovacuum analyses eventually; on a server without it, never). ANALYZE replaces
    the statistics and makes PostgreSQL plan those statements again. A role that does not own the
    tables gets a warning from ANALYZE, not an error. The batch's own rows count (same transaction).
    """
    if batch_number & (batch_number - 1) or session.get_bind().dialect.name != "postgresql":
        return
    stale = session.scalars(
        text(
            "SELECT relname FROM pg_class "
            "WHERE oid IN (SELECT to_regclass(name) FROM unnest(CAST(:names AS text[])) AS name) "
            "AND pg_relation_size(oid) > 2 * current_setting('block_size')::int * greatest(relpages, 1)"
        ),
        {"names": list(_GROWING_TABLES)},
    ).all()
    for name in stale:
        session.execute(text(f"ANALYZE {name}"))


def _load_for_run(session: Session, job_id: int) -> ImportJob:
    """Load a job by id across workspaces (a task knows only the id) and scope the session to it."""
    with unscoped(session):
        job = session.get(ImportJob, job_id, populate_existing=True)
    if job is None:
        raise NotFound(f"There is no import job {job_id}.", field="job_id")
    bind_scope(
        session,
        workspace_id=job.workspace_id,
        actor=Actor(label=job.created_by, via="import", user_id=job.created_by_user_id),
    )
    return job


def _context(session: Session, job: ImportJob, region: str) -> _Context:
    workspace = session.get(Workspace, current_workspace_id(session))
    assert workspace is not None
    return _Context(
        session=session,
        job=job,
        mapping=ColumnMapping.from_json(job.mapping),
        source=sources.get_source(session, source_id=job.source_id),
        purposes={p.key: p for p in purposes.list_purposes(session)},
        zone=ZoneInfo(workspace.time_zone),
        region=region,
        now=utcnow(),
    )


def _chunks(
    rows: Iterable[tuple[int, dict[str, str], str | None]], size: int
) -> Iterator[list[tuple[int, dict[str, str], str | None]]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def _cell(values: dict[str, str], header: str | None) -> str | None:
    if header is None:
        return None
    value = values.get(header, "").strip()
    return value or None


def _parse_row(context: _Context, number: int, values: dict[str, str]) -> _Row:
    """Validate every cell of a row before anything is written; raises _Rejected naming the header."""
    m = context.mapping
    email = _cell(values, m.email)
    phone = _cell(values, m.phone)
    if email is None and phone is None:
        raise _Rejected(m.email or m.phone or "email", "no email address or phone number")
    try:
        if email is not None:
            email = contacts.normalise_email(email)
    except InvalidInput as error:
        raise _Rejected(m.email or "email", error.detail) from None
    try:
        if phone is not None:
            phone = contacts.normalise_phone(phone, region=context.region)
    except InvalidInput as error:
        raise _Rejected(m.phone or "phone", error.detail) from None
    consent_time = None
    if (raw_time := _cell(values, m.consent_time)) is not None:
        try:
            consent_time = parse_time(raw_time, zone=context.zone)
        except ValueError:
            raise _Rejected(m.consent_time or "", f"'{raw_time}' is not a date or time") from None
        if consent_time > context.now:
            raise _Rejected(m.consent_time or "", "the consent time is in the future")
    legal_basis = None
    if (raw_basis := _cell(values, m.legal_basis)) is not None:
        try:
            legal_basis = parse_legal_basis(raw_basis)
        except ValueError as error:
            raise _Rejected(m.legal_basis or "", str(error)) from None
    consents: dict[str, ConsentCell] = {}
    for key, header in m.consents.items():
        raw = values.get(header, "")
        try:
            cell = parse_consent(raw, zone=context.zone)
        except ValueError as error:
            raise _Rejected(header, str(error)) from None
        if cell is not None:
            if cell.at is not None and cell.at > context.now:
                raise _Rejected(header, "the consent date is in the future")
            consents[key] = cell
    notice: dict[str, Any] = {}
    if (raw_version := _cell(values, m.notice_version)) is not None:
        if not raw_version.isdigit():
            raise _Rejected(m.notice_version or "", f"'{raw_version}' is not a notice version number")
        language = _cell(values, m.notice_language) or "pl"
        for key in consents:
            found = _notice(context, key, int(raw_version), language)
            if found is None:
                raise _Rejected(
                    m.notice_version or "", f"purpose '{key}' has no notice version {raw_version} in '{language}'"
                )
            notice[key] = found
    ip = _cell(values, m.ip)
    if ip is not None and len(ip) > 64:
        raise _Rejected(m.ip or "", "an IP address is at most 64 characters")
    attributes = {name: values.get(header, "") for name, header in m.attributes.items() if values.get(header)}
    data = contacts.ContactData(
        email=email,
        phone=phone,
        first_name=_cell(values, m.first_name),
        last_name=_cell(values, m.last_name),
        attributes=attributes,
        source_id=context.source.id,
        external_id=_cell(values, m.external_id),
    )
    return _Row(
        number=number,
        data=data,
        consents=consents,
        consent_time=consent_time,
        legal_basis=legal_basis,
        notice=notice,
        ip=ip,
    )


def _notice(context: _Context, key: str, version: int, language: str) -> Any:
    cache_key = (key, version, language)
    if cache_key not in context.notices:
        from zgoda.consent.models import Notice

        purpose = context.purposes[key]
        context.notices[cache_key] = context.session.scalar(
            select(Notice).where(
                Notice.purpose_id == purpose.id, Notice.version == version, Notice.language == language
            )
        )
    return context.notices[cache_key]


def _process_batch(
    session: Session,
    context: _Context,
    batch: list[tuple[int, dict[str, str], str | None]],
    counts: dict[str, int],
    rejections: list[tuple[int, str, str]],
) -> None:
    """Import one batch with a handful of queries, with exactly the outcome of upserting its rows one by one.

    Every row is parsed and validated first; the contacts the batch's keys name are then read in a few
    ``IN`` queries, and the rows are matched in file order against that in-memory picture, which each
    row updates, so a later row sees what earlier rows created or changed (the rules of
    ``contacts.service.match_contact`` and ``upsert_contact``: identity, then email, then phone; keys
    naming two contacts are a conflict, reported and never merged). The changes are then written in
    bulk, followed by the consent events in one ``record_events`` call.
    """
    parsed: list[tuple[int, _Row | _Rejected]] = []
    for number, values, problem in batch:
        counts["rows_read"] += 1
        try:
            if problem is not None:
                raise _Rejected("row", problem)
            row = _parse_row(context, number, values)
            _check_contact_data(row.data)
            parsed.append((number, row))
        except _Rejected as rejected:
            parsed.append((number, rejected))
    directory = _Directory.load(session, context.source.id, [item for _, item in parsed if isinstance(item, _Row)])
    pending: list[tuple[int, str, str | _ConflictReason]] = []
    accepted: list[tuple[_Row, _Person]] = []
    for number, item in parsed:
        if isinstance(item, _Rejected):
            counts["rows_rejected"] += 1
            pending.append((number, item.field_name, item.reason))
            continue
        try:
            person, matched_by = directory.match(item.data)
        except _ConflictFound as conflict:
            counts["conflicts"] += 1
            counts["rows_rejected"] += 1
            pending.append((number, conflict.field_name, conflict.reason))
            continue
        person, outcome, identity_added = directory.apply(item.data, person)
        if outcome == "created":
            counts["contacts_created"] += 1
        elif matched_by in ("email", "phone") and identity_added:
            counts["contacts_merged"] += 1
        elif outcome == "updated":
            counts["contacts_updated"] += 1
        else:
            counts["contacts_unchanged"] += 1
        accepted.append((item, person))
    directory.write(session)
    rejections.extend(
        (number, field_name, reason if isinstance(reason, str) else reason.text())
        for number, field_name, reason in pending
    )
    known = {person.id for _, person in accepted if not person.new and person.id is not None}
    events = _consent_events(session, context, [(row, person.view()) for row, person in accepted], counts, known)
    ledger.record_events(session, events, now=context.now)


def _check_contact_data(data: contacts.ContactData) -> None:
    """What ``upsert_contact`` checks before it matches (``contacts.service._clean``), on a parsed row.

    ``_parse_row`` already normalised the email and phone; ``_clean`` normalises them again. An E.164
    number and a lower-case ASCII address come back unchanged, so only other addresses (international
    ones) go through ``normalise_email`` a second time, as they do row by row.
    """
    if data.email is not None and (not data.email.isascii() or "xn--" in data.email):
        try:
            data.email = contacts.normalise_email(data.email)
        except InvalidInput as error:
            raise _Rejected(error.field or "email", error.detail) from None
    if data.email is None and data.phone is None and not (data.source_id and data.external_id):
        raise _Rejected("email", "A contact needs an email address or a phone number.")
    if len(str(data.attributes)) > contacts.MAX_ATTRIBUTES_BYTES:
        raise _Rejected("attributes", f"Attributes are at most {contacts.MAX_ATTRIBUTES_BYTES // 1024} KB.")
    for name in contacts.NAME_FIELDS:
        value = getattr(data, name)
        if value and len(value) > 200:
            raise _Rejected(name, "A name is at most 200 characters.")


_PERSON_COLUMNS = (
    Contact.id,
    Contact.workspace_id,
    Contact.ref,
    Contact.email,
    Contact.phone,
    Contact.first_name,
    Contact.last_name,
    Contact.attributes,
    Contact.erased_at,
)
_IN_CHUNK = 1000
_CONTACTS = cast(Table, Contact.__table__)
_new_contact = Contact.__mapper__.class_manager.new_instance
_IDENTITIES = cast(Table, ContactIdentity.__table__)


@dataclass(eq=False)
class _Person:
    """A contact as the batch sees it: read from the database, or created by an earlier row of the batch."""

    id: int | None  # None until a new contact is inserted
    workspace_id: int
    ref: str
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    attributes: dict[str, Any]
    erased_at: datetime | None
    new: bool = False
    changed: bool = False
    loaded_email: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    _view: Contact | None = None

    def view(self) -> Contact:
        """A detached Contact with this person's columns, for the consent step and the ledger; never in a session."""
        if self._view is None:
            # Built the way the ORM's loader builds instances (no __init__, values straight into the
            # instance dict): a third of the cost of Contact(...), which shows at a million rows.
            contact = _new_contact()
            contact.__dict__.update(
                id=self.id,
                workspace_id=self.workspace_id,
                ref=self.ref,
                email=self.email,
                phone=self.phone,
                first_name=self.first_name,
                last_name=self.last_name,
                attributes=self.attributes,
                erased_at=self.erased_at,
            )
            self._view = contact
        return self._view


class _ConflictFound(Exception):
    def __init__(self, field_name: str, reason: str | _ConflictReason) -> None:
        super().__init__(field_name)
        self.field_name = field_name
        self.reason = reason


@dataclass
class _ConflictReason:
    """``match_contact``'s message, written once new contacts have their ids."""

    found: list[tuple[str, _Person]]

    def text(self) -> str:
        described = ", ".join(f"{key} → contact {person.id}" for key, person in self.found)
        return f"These details match different contacts ({described}); they are not merged."


@dataclass
class _Directory:
    """The batch's contacts indexed by the keys its rows carry, kept as the database would be after each row."""

    source_id: int
    workspace_id: int
    by_identity: dict[str, _Person] = field(default_factory=dict)
    by_email: dict[str, _Person] = field(default_factory=dict)
    by_phone: dict[str, list[_Person]] = field(default_factory=dict)  # contacts not erased, per number
    created: list[_Person] = field(default_factory=list)
    changed: list[_Person] = field(default_factory=list)
    identities: list[tuple[_Person, str]] = field(default_factory=list)

    @classmethod
    def load(cls, session: Session, source_id: int, rows: list[_Row]) -> _Directory:
        """Read every contact that a row's external id, email or phone names (a few IN queries)."""
        directory = cls(source_id=source_id, workspace_id=current_workspace_id(session))
        external_ids = sorted({r.data.external_id for r in rows if r.data.external_id})
        emails = sorted({r.data.email for r in rows if r.data.email})
        phones = sorted({r.data.phone for r in rows if r.data.phone})
        people: dict[int, _Person] = {}

        def keep(found: Iterable[Any]) -> None:
            for r in found:
                if r.id not in people:
                    people[r.id] = _Person(
                        id=r.id,
                        workspace_id=r.workspace_id,
                        ref=r.ref,
                        email=r.email,
                        phone=r.phone,
                        first_name=r.first_name,
                        last_name=r.last_name,
                        attributes=r.attributes if r.attributes is not None else {},
                        erased_at=r.erased_at,
                        loaded_email=r.email,
                    )

        identity_ids: dict[str, int] = {}
        for chunk in _chunked(external_ids):
            statement = select(ContactIdentity.external_id, ContactIdentity.contact_id).where(
                ContactIdentity.source_id == source_id, _among(session, ContactIdentity.external_id, chunk)
            )
            identity_ids.update((external_id, contact_id) for external_id, contact_id in session.execute(statement))
        for chunk in _chunked(emails):
            keep(session.execute(select(*_PERSON_COLUMNS).where(_among(session, Contact.email, chunk))))
        for chunk in _chunked(phones):
            keep(
                session.execute(
                    select(*_PERSON_COLUMNS).where(_among(session, Contact.phone, chunk), Contact.erased_at.is_(None))
                )
            )
        for chunk in _chunked(sorted(set(identity_ids.values()) - set(people))):
            keep(session.execute(select(*_PERSON_COLUMNS).where(_among(session, Contact.id, chunk))))
        wanted_phones = set(phones)
        for person in people.values():
            if person.email is not None:
                directory.by_email[person.email] = person
            if person.phone in wanted_phones and person.erased_at is None:
                directory.by_phone.setdefault(person.phone, []).append(person)
        for external_id, contact_id in identity_ids.items():
            directory.by_identity[external_id] = people[contact_id]
        return directory

    def match(self, data: contacts.ContactData) -> tuple[_Person | None, str | None]:
        """``contacts.service.match_contact`` on the batch's picture; raises _ConflictFound when keys disagree."""
        by_identity = self.by_identity.get(data.external_id) if data.external_id else None
        by_email = self.by_email.get(data.email) if data.email else None
        by_phone = None
        if data.phone:
            sharing = self.by_phone.get(data.phone, [])
            if len(sharing) > 1 and by_identity is None and by_email is None:
                raise _ConflictFound("phone", f"Several contacts share the phone number {data.phone}.")
            by_phone = sharing[0] if len(sharing) == 1 else None
        found = [
            (key, person)
            for key, person in (("identity", by_identity), ("email", by_email), ("phone", by_phone))
            if person is not None
        ]
        if len({id(person) for _, person in found}) > 1:
            raise _ConflictFound(found[1][0], _ConflictReason(found))
        if not found:
            return None, None
        key, person = found[0]
        return person, key

    def apply(self, data: contacts.ContactData, person: _Person | None) -> tuple[_Person, str, bool]:
        """``contacts.service.upsert_contact`` once matched: the contact, the outcome, whether an identity was added."""
        if person is None:
            now = utcnow()
            person = _Person(
                id=None,
                workspace_id=self.workspace_id,
                ref=uuid.uuid4().hex,
                email=data.email,
                phone=data.phone,
                first_name=data.first_name,
                last_name=data.last_name,
                attributes=dict(data.attributes),
                erased_at=None,
                new=True,
                created_at=now,
                updated_at=now,
            )
            self.created.append(person)
            if person.email is not None:
                self.by_email[person.email] = person
            if person.phone is not None:
                self.by_phone.setdefault(person.phone, []).append(person)
            outcome = "created"
        else:
            changed = False
            if data.email is not None and person.email != data.email:
                if person.email is not None and self.by_email.get(person.email) is person:
                    del self.by_email[person.email]
                person.email = data.email
                self.by_email[data.email] = person
                changed = True
            if data.phone is not None and person.phone != data.phone:
                if person.erased_at is None:
                    if person.phone is not None and person in self.by_phone.get(person.phone, []):
                        self.by_phone[person.phone].remove(person)
                    self.by_phone.setdefault(data.phone, []).append(person)
                person.phone = data.phone
                changed = True
            if data.first_name is not None and person.first_name != data.first_name:
                person.first_name = data.first_name
                changed = True
            if data.last_name is not None and person.last_name != data.last_name:
                person.last_name = data.last_name
                changed = True
            if data.attributes:
                merged = {**person.attributes, **data.attributes}
                if merged != person.attributes:
                    person.attributes = merged
                    changed = True
            if changed:
                person.updated_at = utcnow()
                if not person.new and not person.changed:
                    person.changed = True
                    self.changed.append(person)
            outcome = "updated" if changed else "unchanged"
        identity_added = False
        if data.external_id and data.external_id not in self.by_identity:
            self.by_identity[data.external_id] = person
            self.identities.append((person, data.external_id))
            identity_added = True
            if outcome == "unchanged":
                outcome = "updated"
        return person, outcome, identity_added

    def write(self, session: Session) -> None:
        """Write the batch's changes in bulk: updates, then new contacts, then identities.

        New contacts get their ids before the insert (:func:`_allocate_ids`), so the inserts are plain
        executemany calls: with RETURNING, SQLAlchemy would send each batch as one INSERT of thousands
        of parameters, which psycopg spends longer parsing than PostgreSQL spends inserting.
        """
        workspace_id = self.workspace_id
        address_hash = address_hasher(session)
        if self.changed:
            statement = update(Contact).where(Contact.workspace_id == workspace_id)
            options = {"synchronize_session": None}
            moved = [p for p in self.changed if p.email != p.loaded_email]
            freed = {p.loaded_email for p in moved if p.loaded_email is not None}
            if freed & {p.email for p in moved}:
                # an address moves to a contact whose old address another row took: clear them first,
                # so the unique (workspace, email) never sees two holders (row by row never does either)
                session.execute(statement, [{"id": p.id, "email": None} for p in moved], execution_options=options)
            session.execute(
                statement,
                [
                    {
                        "id": p.id,
                        "email": p.email,
                        "email_hash": address_hash(p.email) if p.email else None,
                        "phone": p.phone,
                        "first_name": p.first_name,
                        "last_name": p.last_name,
                        "attributes": p.attributes,
                        "updated_at": p.updated_at,
                    }
                    for p in self.changed
                ],
                execution_options=options,
            )
        if self.created:
            for person, contact_id in zip(
                self.created, _allocate_ids(session, _CONTACTS, len(self.created)), strict=True
            ):
                person.id = contact_id
            source_id = self.source_id
            _bulk_insert(
                session,
                _CONTACTS,
                _CONTACT_INSERT_COLUMNS,
                [
                    (
                        p.id,
                        workspace_id,
                        p.ref,
                        p.email,
                        address_hash(p.email) if p.email else None,
                        p.phone,
                        p.first_name,
                        p.last_name,
                        p.attributes,
                        source_id,
                        p.created_at,
                        p.updated_at,
                        None,
                    )
                    for p in self.created
                ],
            )
        if self.identities:
            now = utcnow()
            source_id = self.source_id
            _bulk_insert(
                session,
                _IDENTITIES,
                _IDENTITY_INSERT_COLUMNS,
                [(workspace_id, person.id, source_id, external_id, now) for person, external_id in self.identities],
            )


_CONTACT_INSERT_COLUMNS = (
    "id",
    "workspace_id",
    "ref",
    "email",
    "email_hash",
    "phone",
    "first_name",
    "last_name",
    "attributes",
    "source_id",
    "created_at",
    "updated_at",
    "erased_at",
)
_IDENTITY_INSERT_COLUMNS = ("workspace_id", "contact_id", "source_id", "external_id", "created_at")


def _bulk_insert(session: Session, table: Table, names: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """INSERT ``rows`` (one value per name, in order) into ``table`` in one go; no ids come back.

    Every value goes through its column type's bind processing first, as in a Core INSERT (JSON
    serialised, aware timestamps stored as naive UTC). PostgreSQL with psycopg: one ``COPY ... FROM
    STDIN`` (a COPY fires the same constraint checks, foreign keys and triggers as an INSERT); SQLite:
    one ``executemany`` of a plain statement; anything else: a Core ``insert``.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    columns: list[Sequence[Any]] = []
    for index, name in enumerate(names):
        column_type = table.c[name].type
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        values = [row[index] for row in rows]
        columns.append(values if process is None else list(map(process, values)))
    prepared = list(zip(*columns, strict=True))
    preparer = dialect.identifier_preparer
    target = f"{preparer.format_table(table)} ({', '.join(preparer.quote(name) for name in names)})"
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {target} FROM STDIN") as copy:  # type: ignore[union-attr]
            write = copy.write_row
            for prepared_row in prepared:
                write(prepared_row)
    elif dialect.name == "sqlite":
        placeholders = ", ".join("?" * len(names))
        connection.exec_driver_sql(f"INSERT INTO {target} VALUES ({placeholders})", prepared)
    else:
        connection.execute(insert(table), [dict(zip(names, row, strict=True)) for row in rows])


def _chunked(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


def _among(session: Session, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``, one parameter instead of a thousand."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(ColumnElement[bool], column == any_(bindparam(None, list(values), type_=ARRAY(column.type))))
    return cast(ColumnElement[bool], column.in_(values))


def _allocate_ids(session: Session, table: Table, count: int) -> list[int]:
    """``count`` new primary keys for ``table``, in ascending order, reserved before the rows are inserted.

    PostgreSQL: taken from the column's sequence. SQLite: the ones after the largest id, which SQLite would
    choose itself; every write transaction starts with ``BEGIN IMMEDIATE``, so no one else inserts meanwhile.
    """
    if session.get_bind().dialect.name == "postgresql":
        statement = text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)")
        return sorted(session.scalars(statement, {"table": table.name, "count": count}))
    with unscoped(session):
        top = session.scalar(select(func.max(table.c.id))) or 0
    return list(range(top + 1, top + 1 + count))


def _consent_events(
    session: Session,
    context: _Context,
    accepted: list[tuple[_Row, Contact]],
    counts: dict[str, int],
    known_ids: set[int],
) -> list[ledger.NewEvent]:
    """Decide, row by row, which consent events the file's cells mean given the current state.

    ``known_ids`` are the contacts that existed before the batch (new ones have no consent state yet).
    """
    if not accepted:
        return []
    current: dict[tuple[int, int], tuple[str, datetime]] = {}
    for chunk in _chunked(sorted(known_ids)):
        current.update(
            ((s.contact_id, s.purpose_id), (s.status, s.decided_at))
            for s in session.execute(
                select(
                    ConsentState.contact_id, ConsentState.purpose_id, ConsentState.status, ConsentState.decided_at
                ).where(_among(session, ConsentState.contact_id, chunk))
            )
        )
    mapped = set(context.mapping.consents)
    unmapped_channel_purposes = [p for key, p in context.purposes.items() if key not in mapped and p.channel != "none"]
    events: list[ledger.NewEvent] = []
    job = context.job
    for row, contact in accepted:
        evidence = ledger.Evidence(ip=row.ip, file_sha256=job.file_sha256, file_row=row.number)
        reference = f"import:{job.id}"
        for key, cell in row.consents.items():
            purpose = context.purposes[key]
            at = cell.at or row.consent_time or context.now
            status, decided_at = current.get((contact.id, purpose.id), ("none", None))
            if cell.given:
                if status == "granted" and decided_at is not None and decided_at >= at:
                    counts["consents_left"] += 1
                    continue
                if status == "withdrawn" and decided_at is not None and decided_at >= at:
                    counts["consents_left"] += 1  # a newer withdrawal beats this older grant
                    continue
                basis = row.legal_basis or "consent"
                events.append(
                    ledger.NewEvent(
                        contact=contact,
                        purpose=purpose,
                        event_type="grant",
                        method="import",
                        legal_basis=basis,
                        source=context.source,
                        notice=row.notice.get(key),
                        occurred_at=at,
                        evidence=evidence,
                        reference=reference,
                    )
                )
                current[(contact.id, purpose.id)] = ("granted" if basis != "unknown" else "none", at)
                counts["consents_granted" if basis != "unknown" else "consents_unknown_basis"] += 1
            else:
                if status in ("granted", "pending") and (decided_at is None or decided_at < at):
                    events.append(
                        ledger.NewEvent(
                            contact=contact,
                            purpose=purpose,
                            event_type="withdraw",
                            method="import",
                            legal_basis="consent",
                            source=context.source,
                            occurred_at=at,
                            evidence=evidence,
                            reference=reference,
                        )
                    )
                    current[(contact.id, purpose.id)] = ("withdrawn", at)
                    counts["consents_withdrawn"] += 1
                else:
                    counts["consents_left"] += 1
        for purpose in unmapped_channel_purposes:
            reachable = (purpose.channel == "email" and contact.email) or (
                purpose.channel in ("sms", "phone") and contact.phone
            )
            if reachable and (contact.id, purpose.id) not in current:
                events.append(
                    ledger.NewEvent(
                        contact=contact,
                        purpose=purpose,
                        event_type="grant",
                        method="import",
                        legal_basis="unknown",
                        source=context.source,
                        occurred_at=row.consent_time or context.now,
                        evidence=evidence,
                        reference=reference,
                    )
                )
                current[(contact.id, purpose.id)] = ("none", row.consent_time or context.now)
                counts["consents_unknown_basis"] += 1
    return events
