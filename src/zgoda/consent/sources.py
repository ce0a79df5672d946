"""Sources of contacts, their attestation of how consent is collected, and evidence files."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from zgoda.audit import service as audit
from zgoda.consent.models import Source, SourceEvidence, SourceKind
from zgoda.core.clock import utcnow
from zgoda.core.crypto import sha256_hex
from zgoda.core.errors import Conflict, InvalidInput, NotFound
from zgoda.core.tenancy import current_actor

MAX_EVIDENCE_BYTES = 20 * 1024 * 1024
SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._ -]+")


def _check_kind(kind: str) -> str:
    try:
        return SourceKind(kind).value
    except ValueError as error:
        raise InvalidInput(
            f"Unknown source kind '{kind}'; use one of {', '.join(SourceKind)}.", field="kind"
        ) from error


def create_source(session: Session, *, name: str, kind: str, description: str = "") -> Source:
    """A new source; it has no attestation until the owner gives one."""
    name = name.strip()
    if not name or len(name) > 120:
        raise InvalidInput("A source needs a name of 1-120 characters.", field="name")
    if session.scalar(select(Source.id).where(Source.name == name)) is not None:
        raise Conflict(f"A source named '{name}' already exists.", field="name")
    source = Source(name=name, kind=_check_kind(kind), description=description.strip(), settings={})
    session.add(source)
    session.flush()
    audit.record(
        session,
        action="source.create",
        object_type="source",
        object_id=source.id,
        summary={"after": {"name": name, "kind": source.kind}},
    )
    return source


def update_source(
    session: Session, *, source_id: int, name: str | None = None, description: str | None = None
) -> Source:
    source = get_source(session, source_id=source_id)
    before = {"name": source.name}
    if name is not None:
        name = name.strip()
        if not name or len(name) > 120:
            raise InvalidInput("A source needs a name of 1-120 characters.", field="name")
        clash = session.scalar(select(Source.id).where(Source.name == name, Source.id != source.id))
        if clash is not None:
            raise Conflict(f"A source named '{name}' already exists.", field="name")
        source.name = name
    if description is not None:
        source.description = description.strip()
    session.flush()
    audit.record(
        session,
        action="source.update",
        object_type="source",
        object_id=source.id,
        summary={"before": before, "after": {"name": source.name}},
    )
    return source


def attest_source(session: Session, *, source_id: int, attestation: str) -> Source:
    """The controller's statement of how consent is collected at this source, signed with who and when."""
    source = get_source(session, source_id=source_id)
    attestation = attestation.strip()
    if len(attestation) < 20:
        raise InvalidInput(
            "Describe how consent is collected at this source (at least 20 characters).", field="attestation"
        )
    actor = current_actor(session)
    before = {"attested_by": source.attested_by, "attestation_sha256": sha256_hex(source.attestation)}
    source.attestation = attestation
    source.attested_by = actor.label
    source.attested_by_user_id = actor.user_id
    source.attested_at = utcnow()
    session.flush()
    audit.record(
        session,
        action="source.attest",
        object_type="source",
        object_id=source.id,
        summary={
            "before": before,
            "after": {"attested_by": actor.label, "attestation_sha256": sha256_hex(attestation)},
        },
    )
    return source


def list_sources(session: Session) -> Sequence[Source]:
    return session.scalars(select(Source).order_by(Source.name)).all()


def get_source(session: Session, *, source_id: int, field: str = "source_id") -> Source:
    source = session.scalar(select(Source).where(Source.id == source_id))
    if source is None:
        raise NotFound("There is no such source in this workspace.", field=field)
    return source


def source_by_name(session: Session, name: str, *, field: str = "source") -> Source:
    source = session.scalar(select(Source).where(Source.name == name))
    if source is None:
        raise InvalidInput(f"There is no source named '{name}' in this workspace.", field=field)
    return source


def evidence_path(storage_dir: Path, sha256: str) -> Path:
    """Evidence files are stored once per content, named by their SHA-256."""
    return storage_dir / "evidence" / sha256[:2] / sha256


def add_evidence(
    session: Session, *, source_id: int, filename: str, content_type: str, data: bytes, storage_dir: Path
) -> SourceEvidence:
    """Store an evidence file for a source and record its hash."""
    source = get_source(session, source_id=source_id)
    if not data:
        raise InvalidInput("The evidence file is empty.", field="file")
    if len(data) > MAX_EVIDENCE_BYTES:
        raise InvalidInput(f"An evidence file is at most {MAX_EVIDENCE_BYTES // (1024 * 1024)} MB.", field="file")
    digest = sha256_hex(data)
    path = evidence_path(storage_dir, digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".part")
        temporary.write_bytes(data)
        temporary.replace(path)
    clean_name = SAFE_FILENAME.sub("_", Path(filename or "evidence").name)[:255] or "evidence"
    evidence = SourceEvidence(
        source_id=source.id,
        filename=clean_name,
        content_type=(content_type or "application/octet-stream")[:100],
        sha256=digest,
        size=len(data),
        uploaded_by=current_actor(session).label,
    )
    session.add(evidence)
    session.flush()
    audit.record(
        session,
        action="source.evidence_add",
        object_type="source",
        object_id=source.id,
        summary={"after": {"evidence_id": evidence.id, "filename": clean_name, "sha256": digest}},
    )
    return evidence


def evidence_file(storage_dir: Path, evidence: SourceEvidence) -> Path:
    """The stored file of ``evidence``, checked against its recorded SHA-256 before anyone relies on it."""
    path = evidence_path(storage_dir, evidence.sha256)
    if not path.is_file():
        raise NotFound("The evidence file is recorded but missing from storage.", field="evidence_id")
    if sha256_hex(path.read_bytes()) != evidence.sha256:
        raise Conflict("The stored evidence file no longer matches its recorded SHA-256.", field="evidence_id")
    return path


def get_evidence(session: Session, *, source_id: int, evidence_id: int) -> SourceEvidence:
    evidence = session.scalar(
        select(SourceEvidence).where(SourceEvidence.id == evidence_id, SourceEvidence.source_id == source_id)
    )
    if evidence is None:
        raise NotFound("There is no such evidence file for this source.", field="evidence_id")
    return evidence
