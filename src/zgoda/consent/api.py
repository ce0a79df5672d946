"""JSON API: sources (with attestation and evidence files), purposes, versioned notices, consent events."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import AwareDatetime
from sqlalchemy import select
from sqlalchemy.orm import Session

from zgoda.audit import service as audit
from zgoda.consent import ledger, purposes, sources
from zgoda.consent.models import ConsentEvent, ConsentState, Notice, Purpose, Source, SourceEvidence
from zgoda.consent.schemas import (
    ConsentEventIn,
    ConsentEventOut,
    ConsentHistoryOut,
    ConsentStateOut,
    EventEvidenceOut,
    EvidenceFileOut,
    NoticeCreate,
    NoticeOut,
    NoticeUpdate,
    PurposeCreate,
    PurposeOut,
    PurposeUpdate,
    SourceAttestation,
    SourceCreate,
    SourceOut,
    SourceUpdate,
    StateAtOut,
)
from zgoda.consent.state import StateValue
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.errors import InvalidInput
from zgoda.web.context import RequestContext, require, require_existing

router = APIRouter(tags=["consent"])


def _source(session: Session, source_id: int) -> object:
    return sources.get_source(session, source_id=source_id)


def _purpose(session: Session, purpose_id: int) -> object:
    return purposes.get_purpose(session, purpose_id=purpose_id)


def _notice(session: Session, notice_id: int) -> object:
    return purposes.get_notice(session, notice_id=notice_id)


def _contact(session: Session, contact_id: int) -> object:
    return contacts.get_contact(session, contact_id=contact_id)


def evidence_file_out(evidence: SourceEvidence) -> EvidenceFileOut:
    """An evidence file as the API shows it, with its download address."""
    return EvidenceFileOut(
        id=evidence.id,
        filename=evidence.filename,
        content_type=evidence.content_type,
        sha256=evidence.sha256,
        size=evidence.size,
        uploaded_by=evidence.uploaded_by,
        uploaded_at=evidence.uploaded_at,
        url=f"/api/v1/sources/{evidence.source_id}/evidence/{evidence.id}",
    )


def source_out(source: Source) -> SourceOut:
    """A source with its attestation and evidence files."""
    return SourceOut(
        id=source.id,
        name=source.name,
        kind=source.kind,
        description=source.description,
        attestation=source.attestation,
        attested_by=source.attested_by,
        attested_at=source.attested_at,
        created_at=source.created_at,
        evidence=[evidence_file_out(e) for e in source.evidence_files],
    )


def purpose_out(purpose: Purpose) -> PurposeOut:
    """A purpose as the API shows it."""
    return PurposeOut.model_validate(purpose, from_attributes=True)


def notice_out(notice: Notice) -> NoticeOut:
    """A notice version with its exact text, its SHA-256 and whether a consent cites it."""
    return NoticeOut(
        id=notice.id,
        purpose_id=notice.purpose_id,
        purpose=notice.purpose.key,
        language=notice.language,
        version=notice.version,
        title=notice.title,
        text=notice.text,
        sha256=notice.sha256,
        created_at=notice.created_at,
        first_used_at=notice.first_used_at,
        used=notice.first_used_at is not None,
    )


def state_out(purpose: Purpose, state: ConsentState | None, now: datetime) -> ConsentStateOut:
    """A purpose's current state; a granted consent past its validity reads as expired (the fold's rule)."""
    if state is None:
        return ConsentStateOut(
            purpose=purpose.key, status="none", legal_basis=None, event_id=None, decided_at=None, expires_at=None
        )
    value = StateValue(
        status=state.status,
        legal_basis=state.legal_basis,
        event_id=state.event_id,
        decided_at=state.decided_at,
        last_occurred_at=state.last_occurred_at,
        expires_at=state.expires_at,
    )
    return ConsentStateOut(
        purpose=purpose.key,
        status=value.status_at(now),
        legal_basis=state.legal_basis,
        event_id=state.event_id,
        decided_at=state.decided_at,
        expires_at=state.expires_at,
    )


def consents_out(
    all_purposes: Sequence[Purpose], states: Iterable[ConsentState], now: datetime
) -> dict[str, ConsentStateOut]:
    """Every purpose of the workspace with the contact's state for it (``none`` when nothing was recorded)."""
    by_purpose = {state.purpose_id: state for state in states}
    return {p.key: state_out(p, by_purpose.get(p.id), now) for p in all_purposes}


def events_out(session: Session, events: Sequence[ConsentEvent]) -> list[ConsentEventOut]:
    """Ledger events with their purpose keys, source names, notice versions and evidence."""
    keys = {p.id: p.key for p in purposes.list_purposes(session)}
    names = {s.id: s.name for s in sources.list_sources(session)}
    notice_ids = {e.notice_id for e in events if e.notice_id is not None}
    notices = {n.id: n for n in session.scalars(select(Notice).where(Notice.id.in_(notice_ids)))} if notice_ids else {}
    evidence = ledger.evidence_of(session, event_ids=[e.id for e in events])
    answer = []
    for event in events:
        notice = notices.get(event.notice_id) if event.notice_id is not None else None
        found = evidence.get(event.id)
        answer.append(
            ConsentEventOut(
                id=event.id,
                seq=event.seq,
                purpose=keys[event.purpose_id],
                type=event.event_type,
                requires_confirmation=event.requires_confirmation,
                legal_basis=event.legal_basis,
                method=event.method,
                source_id=event.source_id,
                source=names.get(event.source_id) if event.source_id is not None else None,
                notice_id=event.notice_id,
                notice_version=notice.version if notice else None,
                notice_language=notice.language if notice else None,
                notice_sha256=event.notice_sha256,
                occurred_at=event.occurred_at,
                recorded_at=event.recorded_at,
                actor=event.actor,
                reference=event.reference,
                evidence=EventEvidenceOut.model_validate(found, from_attributes=True) if found else None,
                prev_hash=event.prev_hash,
                hash=event.hash,
            )
        )
    return answer


NOTICE_FIELDS = {"language": "notice_language"}  # the service's field name -> the request's


def new_event(
    session: Session, *, contact: Contact, body: ConsentEventIn, default_source: Source | None = None
) -> ledger.NewEvent:
    """Resolve the names an event cites (purpose key, source name, notice) into a ledger event."""
    purpose = purposes.purpose_by_key(session, body.purpose, field="purpose")
    source = sources.source_by_name(session, body.source, field="source") if body.source else default_source
    if body.notice_language and body.notice_id is None and body.notice_version is None:
        raise InvalidInput("Name the notice's version with its language (or give notice_id).", field="notice_version")
    try:
        notice = purposes.resolve_notice(
            session,
            purpose=purpose,
            notice_id=body.notice_id,
            version=body.notice_version,
            language=body.notice_language,
        )
    except InvalidInput as error:
        error.field = NOTICE_FIELDS.get(error.field or "", error.field)
        raise
    return ledger.NewEvent(
        contact=contact,
        purpose=purpose,
        event_type=body.type.value,
        method=body.method.value,
        legal_basis=body.legal_basis.value,
        source=source,
        notice=notice,
        occurred_at=body.occurred_at,
        requires_confirmation=body.requires_confirmation,
        evidence=ledger.Evidence(**body.evidence.model_dump()) if body.evidence else ledger.Evidence(),
        reference=body.reference,
    )


def record_consent(
    session: Session, *, contact: Contact, body: ConsentEventIn, default_source: Source | None = None
) -> ConsentEvent:
    """Append one event to the ledger and note in the audit log who recorded it (ids only, no personal data)."""
    event = ledger.record_event(session, new_event(session, contact=contact, body=body, default_source=default_source))
    audit.record(
        session,
        action="consent.record",
        object_type="contact",
        object_id=contact.id,
        summary={"event_id": event.id, "purpose": body.purpose, "type": event.event_type, "method": event.method},
    )
    return event


def read_upload(upload: UploadFile) -> bytes:
    """The uploaded bytes, read no further than one byte past the limit (the service refuses the rest)."""
    return upload.file.read(sources.MAX_EVIDENCE_BYTES + 1)


# --- sources ---------------------------------------------------------------------------------


@router.get("/sources", response_model=list[SourceOut])
def list_sources(ctx: RequestContext = require("sources.read")) -> list[SourceOut]:
    """Where this workspace's contacts come from, by name."""
    return [source_out(s) for s in sources.list_sources(ctx.session)]


@router.post("/sources", response_model=SourceOut, status_code=201)
def create_source(body: SourceCreate, ctx: RequestContext = require("sources.manage")) -> SourceOut:
    """A new source; the owner attests how it collects consent."""
    source = sources.create_source(ctx.session, name=body.name, kind=body.kind.value, description=body.description)
    return source_out(source)


@router.get("/sources/{source_id}", response_model=SourceOut)
def get_source(source_id: int, ctx: RequestContext = require("sources.read")) -> SourceOut:
    """One source with its attestation and evidence files."""
    return source_out(sources.get_source(ctx.session, source_id=source_id))


@router.patch("/sources/{source_id}", response_model=SourceOut)
def update_source(
    source_id: int, body: SourceUpdate, ctx: RequestContext = require_existing("sources.manage", source_id=_source)
) -> SourceOut:
    """Rename or re-describe a source (its kind and attestation are not changed here)."""
    source = sources.update_source(ctx.session, source_id=source_id, name=body.name, description=body.description)
    return source_out(source)


@router.post("/sources/{source_id}/attestation", response_model=SourceOut)
def attest_source(
    source_id: int,
    body: SourceAttestation,
    ctx: RequestContext = require_existing("sources.attest", source_id=_source),
) -> SourceOut:
    """The controller (owner) states how consent is collected here; signed with who and when, audited."""
    return source_out(sources.attest_source(ctx.session, source_id=source_id, attestation=body.attestation))


@router.post("/sources/{source_id}/evidence", response_model=EvidenceFileOut, status_code=201)
def add_evidence(
    source_id: int,
    file: UploadFile = File(description="A form screenshot, a contract, an export..."),
    ctx: RequestContext = require_existing("sources.manage", source_id=_source),
) -> EvidenceFileOut:
    """Upload an evidence file (multipart, field ``file``); stored once per SHA-256."""
    evidence = sources.add_evidence(
        ctx.session,
        source_id=source_id,
        filename=file.filename or "evidence",
        content_type=file.content_type or "application/octet-stream",
        data=read_upload(file),
        storage_dir=ctx.settings.data_dir,
    )
    return evidence_file_out(evidence)


def evidence_download(ctx: RequestContext, *, source_id: int, evidence_id: int) -> FileResponse:
    """The evidence file as an attachment, after checking it still matches its recorded hash."""
    sources.get_source(ctx.session, source_id=source_id)
    evidence = sources.get_evidence(ctx.session, source_id=source_id, evidence_id=evidence_id)
    path = sources.evidence_file(ctx.settings.data_dir, evidence)
    return FileResponse(
        path,
        media_type=evidence.content_type,
        filename=evidence.filename,
        content_disposition_type="attachment",
        headers={"X-Content-Type-Options": "nosniff", "X-Evidence-SHA256": evidence.sha256},
    )


@router.get("/sources/{source_id}/evidence/{evidence_id}", response_class=FileResponse)
def download_evidence(source_id: int, evidence_id: int, ctx: RequestContext = require("sources.read")) -> FileResponse:
    """Download an evidence file (Content-Disposition: attachment)."""
    return evidence_download(ctx, source_id=source_id, evidence_id=evidence_id)


# --- purposes and notices --------------------------------------------------------------------


@router.get("/purposes", response_model=list[PurposeOut])
def list_purposes(ctx: RequestContext = require("purposes.read")) -> list[PurposeOut]:
    """The consent types of this workspace, each bound to one channel."""
    return [purpose_out(p) for p in purposes.list_purposes(ctx.session)]


@router.post("/purposes", response_model=PurposeOut, status_code=201)
def create_purpose(body: PurposeCreate, ctx: RequestContext = require("purposes.manage")) -> PurposeOut:
    """A user-defined purpose bound to one channel; its key is what APIs and imports name."""
    purpose = purposes.create_purpose(
        ctx.session,
        key=body.key,
        name=body.name,
        channel=body.channel.value,
        description=body.description,
        validity_days=body.validity_days,
    )
    return purpose_out(purpose)


@router.get("/purposes/{purpose_id}", response_model=PurposeOut)
def get_purpose(purpose_id: int, ctx: RequestContext = require("purposes.read")) -> PurposeOut:
    """One purpose."""
    return purpose_out(purposes.get_purpose(ctx.session, purpose_id=purpose_id))


@router.patch("/purposes/{purpose_id}", response_model=PurposeOut)
def update_purpose(
    purpose_id: int,
    body: PurposeUpdate,
    ctx: RequestContext = require_existing("purposes.manage", purpose_id=_purpose),
) -> PurposeOut:
    """Rename, re-describe or change the validity period; the key and channel never change."""
    purpose = purposes.update_purpose(
        ctx.session,
        purpose_id=purpose_id,
        name=body.name,
        description=body.description,
        validity_days=body.validity_days if "validity_days" in body.model_fields_set else "keep",
    )
    return purpose_out(purpose)


@router.get("/purposes/{purpose_id}/notices", response_model=list[NoticeOut])
def list_notices(purpose_id: int, ctx: RequestContext = require("purposes.read")) -> list[NoticeOut]:
    """Every version of the purpose's notice, per language."""
    purpose = purposes.get_purpose(ctx.session, purpose_id=purpose_id)
    return [notice_out(n) for n in purposes.list_notices(ctx.session, purpose_id=purpose.id)]


@router.post("/purposes/{purpose_id}/notices", response_model=NoticeOut, status_code=201)
def create_notice(
    purpose_id: int,
    body: NoticeCreate,
    ctx: RequestContext = require_existing("purposes.manage", purpose_id=_purpose),
) -> NoticeOut:
    """The next version of the notice in that language; earlier versions stay as they were."""
    notice = purposes.create_notice(
        ctx.session, purpose_id=purpose_id, language=body.language, title=body.title, text=body.text
    )
    return notice_out(notice)


@router.get("/notices/{notice_id}", response_model=NoticeOut)
def get_notice(notice_id: int, ctx: RequestContext = require("purposes.read")) -> NoticeOut:
    """One notice version with its exact text."""
    return notice_out(purposes.get_notice(ctx.session, notice_id=notice_id))


@router.patch("/notices/{notice_id}", response_model=NoticeOut)
def update_notice(
    notice_id: int,
    body: NoticeUpdate,
    ctx: RequestContext = require_existing("purposes.manage", notice_id=_notice),
) -> NoticeOut:
    """Correct a notice no consent cites yet; a used one answers 409 (create a new version instead)."""
    notice = purposes.get_notice(ctx.session, notice_id=notice_id)
    if body.title is not None or body.text is not None:
        notice = purposes.update_notice(
            ctx.session,
            notice_id=notice.id,
            title=body.title if body.title is not None else notice.title,
            text=body.text if body.text is not None else notice.text,
        )
    return notice_out(notice)


# --- the consent ledger ----------------------------------------------------------------------


def consent_history(session: Session, contact: Contact) -> ConsentHistoryOut:
    """A contact's current states and every event behind them."""
    events = ledger.events_of(session, contact_id=contact.id)
    states = ledger.states_of(session, contact_id=contact.id)
    return ConsentHistoryOut(
        contact_id=contact.id,
        states=consents_out(purposes.list_purposes(session), states, utcnow()),
        events=events_out(session, events),
    )


@router.get("/contacts/{contact_id}/consents", response_model=ConsentHistoryOut)
def get_consents(contact_id: int, ctx: RequestContext = require("consent.read")) -> ConsentHistoryOut:
    """Current state per purpose and the whole history: every event with its evidence, in time order."""
    return consent_history(ctx.session, contacts.get_contact(ctx.session, contact_id=contact_id))


@router.post("/contacts/{contact_id}/consents", response_model=ConsentEventOut, status_code=201)
def record_consent_event(
    contact_id: int,
    body: ConsentEventIn,
    ctx: RequestContext = require_existing("consent.record", contact_id=_contact),
) -> ConsentEventOut:
    """Record one consent event (grant, confirm, withdraw, expire, refresh) for a contact."""
    contact = contacts.get_contact(ctx.session, contact_id=contact_id)
    event = record_consent(ctx.session, contact=contact, body=body)
    [answer] = events_out(ctx.session, [event])
    return answer


@router.get("/contacts/{contact_id}/consents/{purpose_key}/at", response_model=StateAtOut)
def get_state_at(
    contact_id: int,
    purpose_key: str,
    moment: Annotated[AwareDatetime, Query(description="ISO 8601 with a zone, e.g. 2026-05-01T10:00:00Z")],
    ctx: RequestContext = require_existing("consent.read", contact_id=_contact),
) -> StateAtOut:
    """What the consent status was at a past moment, replayed from the ledger."""
    contact = contacts.get_contact(ctx.session, contact_id=contact_id)
    purpose = purposes.get_purpose_by_key(ctx.session, purpose_key)
    status = ledger.state_at(ctx.session, contact=contact, purpose=purpose, moment=moment)
    return StateAtOut(contact_id=contact.id, purpose=purpose.key, moment=moment, status=status)


# --- proof -----------------------------------------------------------------------------------

ProofFormat = Literal["json", "kantara", "html"]


def proof_response(ctx: RequestContext, *, contact_id: int, output: str, download: bool) -> Response:
    """The proof bundle (JSON), its Kantara receipts, or the printable page; the request is audited."""
    from zgoda.consent.proof import build_proof, kantara_receipts, proof_html

    contacts.get_contact(ctx.session, contact_id=contact_id)
    if output == "kantara":
        body: Any = kantara_receipts(ctx.session, contact_id=contact_id, settings=ctx.settings)
    else:
        body = build_proof(ctx.session, contact_id=contact_id, settings=ctx.settings)
    audit.record(
        ctx.session, action="contact.proof", object_type="contact", object_id=contact_id, summary={"format": output}
    )
    name = f"consent-proof-contact-{contact_id}"
    if output == "html":
        response: Response = HTMLResponse(proof_html(body))
        if download:
            response.headers["Content-Disposition"] = f'attachment; filename="{name}.html"'
        return response
    response = JSONResponse(json.loads(json.dumps(body, default=str)))
    if download:
        suffix = "-kantara" if output == "kantara" else ""
        response.headers["Content-Disposition"] = f'attachment; filename="{name}{suffix}.json"'
    return response


@router.get("/contacts/{contact_id}/proof", response_model=None)
def get_proof(
    contact_id: int,
    ctx: RequestContext = require("proof.read"),
    output: Annotated[ProofFormat, Query(alias="format")] = "json",
) -> Response:
    """Proof of every consent of one contact: events, evidence, the exact notice texts, the source's
    attestation and the hashes to verify it all independently (docs/consent-proof.md).
    ``format=kantara`` gives Kantara Consent Receipts v1.1; ``format=html`` a printable page."""
    return proof_response(ctx, contact_id=contact_id, output=output, download=False)
