"""Consent proof for one contact: a self-verifying JSON bundle, its printable HTML, and Kantara receipts.

The bundle holds every consent event of the contact with the exact payload its ledger hash covers,
the evidence (with the salt of its digest), the notice text shown and the source's attestation, so a
third party can check it with a few lines of Python (docs/consent-proof.md) and no Zgoda code.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

import zgoda
from zgoda.accounts.models import Workspace
from zgoda.consent.ledger import EVIDENCE_FIELDS, events_of, evidence_digest, evidence_of, states_of
from zgoda.consent.models import (
    ConsentEvent,
    ConsentEvidence,
    ConsentState,
    ConsentStatus,
    EventType,
    LegalBasis,
    Method,
    Notice,
    Purpose,
    Source,
)
from zgoda.contacts.models import Contact
from zgoda.contacts.service import get_contact
from zgoda.core.chain import GENESIS_HASH, chain_head, chain_payload, entry_hash
from zgoda.core.clock import isoformat_z, utcnow
from zgoda.core.crypto import sha256_hex
from zgoda.core.errors import InvalidInput
from zgoda.core.settings import Settings
from zgoda.core.tenancy import current_workspace_id

PROOF_FORMAT = "zgoda-consent-proof/1"
KANTARA_VERSION = "KI-CR-v1.1.0"
KANTARA_EXTENSION = "x-zgoda"
SCHEMA_PATH = Path(__file__).with_name("kantara_cr_v1_1.schema.json")
TEMPLATE_DIR = Path(__file__).with_name("templates")
RECEIPT_EVENT_TYPES = frozenset({EventType.GRANT.value, EventType.CONFIRM.value, EventType.REFRESH.value})
RECEIPT_LEGAL_BASES = frozenset({LegalBasis.CONSENT.value, LegalBasis.LEGITIMATE_INTEREST.value})

ALGORITHM = (
    "hash = SHA-256 (hex) of the UTF-8 bytes of prev_hash + '\\n' + canonical JSON of payload; "
    "canonical JSON is json.dumps(payload, sort_keys=True, separators=(',', ':'), ensure_ascii=False); "
    "the first event of a workspace has prev_hash = 64 zeros (the genesis hash)."
)
EVIDENCE_ALGORITHM = (
    "evidence_digest = SHA-256 (hex) of salt + '\\n' + canonical JSON of the object with exactly the keys "
    "ip, user_agent, page_url, file_sha256, file_row, note (null when not recorded)."
)
NOTICE_ALGORITHM = "notice_sha256 = SHA-256 (hex) of the UTF-8 bytes of the notice text, exactly as shown."
LIMITATIONS = (
    "Each workspace has one ledger chain shared by all its contacts, so one contact's events are not "
    "consecutive in it: this bundle proves that each event's content matches its recorded hash and names "
    "the hash of the entry before it (prev_hash), not that no other entry of the chain was removed. "
    "The continuity of the whole chain is checked by `zgoda verify`, and its end by comparing the head hash "
    "below with head hashes recorded outside the database. The source's attestation and evidence files "
    "are the controller's current statement; the ledger does not hash them (the audit log records each "
    "attestation's SHA-256). Evidence erased on the person's request can no longer be shown; its digest stays."
)

METHOD_LABELS: dict[str, str] = {
    Method.WEB_FORM.value: "Web form",
    Method.DOUBLE_OPT_IN.value: "Double opt-in (a confirmation link sent to the person)",
    Method.IMPORT.value: "Import from a source system",
    Method.API.value: "API call from a source system",
    Method.PREFERENCE_CENTRE.value: "Preference centre",
    Method.UNSUBSCRIBE_LINK.value: "Unsubscribe link",
    Method.ONE_CLICK.value: "One-click unsubscribe (RFC 8058)",
    Method.COMPLAINT.value: "Spam complaint",
    Method.DSR.value: "Data-subject request",
    Method.OPERATOR.value: "Recorded by an operator",
}

# Kantara CR v1.1 appendix categories; a workspace may override them per purpose key in
# settings["kantara"]["purpose_categories"] and settings["kantara"]["pii_categories"].
DEFAULT_PURPOSE_CATEGORIES: dict[str, list[str]] = {
    "profiling": ["5 - Personalized Experience"],
    "third_party_sharing": ["9 - Sharing for Marketing"],
}
DEFAULT_PII_CATEGORIES: dict[str, list[str]] = {
    "profiling": ["2 - Contact", "4 - Communications/Social"],
    "third_party_sharing": ["1 - Biographical", "2 - Contact"],
}
THIRD_PARTY_PURPOSES = frozenset({"third_party_sharing"})
CONTROLLER_REQUIRED = ("legal_name", "email", "phone", "privacy_policy_url")
ADDRESS_REQUIRED = ("street", "city", "country")


@dataclass
class _Loaded:
    """Everything the bundle and the receipts need, read once."""

    workspace: Workspace
    contact: Contact
    events: Sequence[ConsentEvent]
    evidence: dict[int, ConsentEvidence]
    purposes: dict[int, Purpose]
    notices: dict[int, Notice]
    sources: dict[int, Source]
    states: dict[int, ConsentState]
    head: tuple[int, str]
    now: datetime


def _load(session: Session, contact_id: int) -> _Loaded:
    workspace = session.get(Workspace, current_workspace_id(session))
    assert workspace is not None
    contact = get_contact(session, contact_id=contact_id)
    events = events_of(session, contact_id=contact.id)
    notice_ids = {event.notice_id for event in events if event.notice_id is not None}
    source_ids = {event.source_id for event in events if event.source_id is not None}
    source_ids |= {identity.source_id for identity in contact.identities}
    if contact.source_id is not None:
        source_ids.add(contact.source_id)
    notices = session.scalars(select(Notice).where(Notice.id.in_(notice_ids))).all() if notice_ids else []
    sources = (
        session.scalars(
            select(Source).where(Source.id.in_(source_ids)).options(selectinload(Source.evidence_files))
        ).all()
        if source_ids
        else []
    )
    return _Loaded(
        workspace=workspace,
        contact=contact,
        events=events,
        evidence=evidence_of(session, event_ids=[event.id for event in events]),
        purposes={purpose.id: purpose for purpose in session.scalars(select(Purpose).order_by(Purpose.id))},
        notices={notice.id: notice for notice in notices},
        sources={source.id: source for source in sources},
        states={state.purpose_id: state for state in states_of(session, contact_id=contact.id)},
        head=chain_head(session, ConsentEvent, workspace.id),
        now=utcnow(),
    )


def _time(moment: datetime | None) -> str | None:
    return isoformat_z(moment) if moment is not None else None


def _payload(event: ConsentEvent) -> dict[str, Any]:
    """Exactly what the event's hash covers (timestamps as the chain writes them)."""
    return chain_payload(ConsentEvent, {name: getattr(event, name) for name in (*ConsentEvent.chain_fields, "seq")})


def _purpose_dict(purpose: Purpose) -> dict[str, Any]:
    return {
        "id": purpose.id,
        "key": purpose.key,
        "name": purpose.name,
        "channel": purpose.channel,
        "description": purpose.description,
        "validity_days": purpose.validity_days,
    }


def _notice_dict(notice: Notice, purpose: Purpose | None) -> dict[str, Any]:
    return {
        "id": notice.id,
        "purpose_key": purpose.key if purpose else None,
        "language": notice.language,
        "version": notice.version,
        "title": notice.title,
        "text": notice.text,
        "sha256": notice.sha256,
        "created_at": _time(notice.created_at),
        "first_used_at": _time(notice.first_used_at),
    }


def _source_dict(source: Source) -> dict[str, Any]:
    return {
        "id": source.id,
        "name": source.name,
        "kind": source.kind,
        "description": source.description,
        "attestation": source.attestation or None,
        "attestation_sha256": sha256_hex(source.attestation) if source.attestation else None,
        "attested_by": source.attested_by,
        "attested_at": _time(source.attested_at),
        "evidence_files": [
            {
                "filename": file.filename,
                "content_type": file.content_type,
                "sha256": file.sha256,
                "size": file.size,
                "uploaded_by": file.uploaded_by,
                "uploaded_at": _time(file.uploaded_at),
            }
            for file in source.evidence_files
        ],
    }


def _controller(settings: dict[str, Any]) -> dict[str, Any]:
    raw = settings.get("controller") or {}
    if not isinstance(raw, dict):
        raw = {}

    def text(value: Any) -> str | None:
        return str(value).strip() or None if value is not None else None

    address = raw.get("postal_address") or {}
    if not isinstance(address, dict):
        address = {}
    return {
        "legal_name": text(raw.get("legal_name")),
        "postal_address": {key: text(address.get(key)) for key in ("street", "postal_code", "city", "country")},
        "email": text(raw.get("email")),
        "phone": text(raw.get("phone")),
        "website": text(raw.get("website")),
        "privacy_policy_url": text(raw.get("privacy_policy_url")),
        "dpo_contact": text(raw.get("dpo_contact")),
    }


def _status_now(state: ConsentState, now: datetime) -> str:
    if state.status == ConsentStatus.GRANTED and state.expires_at is not None and now >= state.expires_at:
        return ConsentStatus.EXPIRED.value
    return state.status


def _event_dict(loaded: _Loaded, event: ConsentEvent) -> dict[str, Any]:
    payload = _payload(event)
    purpose = loaded.purposes.get(event.purpose_id)
    notice = loaded.notices.get(event.notice_id) if event.notice_id is not None else None
    source = loaded.sources.get(event.source_id) if event.source_id is not None else None
    stored = loaded.evidence.get(event.id)
    evidence = None
    if stored is not None:
        evidence = {"salt": stored.salt, **{name: getattr(stored, name) for name in EVIDENCE_FIELDS}}
    if event.evidence_digest is None:
        evidence_status = "none recorded"
    else:
        evidence_status = "present" if stored is not None else "erased"
    return {
        "id": event.id,
        "seq": event.seq,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
        "payload": payload,
        "purpose": _purpose_dict(purpose) if purpose else None,
        "notice": _notice_dict(notice, purpose) if notice else None,
        "source": _source_dict(source) if source else None,
        "evidence": evidence,
        "evidence_status": evidence_status,
        "method_label": METHOD_LABELS.get(event.method, event.method),
        "checked_at_generation": {
            "hash": entry_hash(event.prev_hash, payload) == event.hash,
            "notice": None if notice is None else sha256_hex(notice.text) == event.notice_sha256,
            "evidence": None
            if stored is None or event.evidence_digest is None
            else evidence_digest(stored.salt, {name: getattr(stored, name) for name in EVIDENCE_FIELDS})
            == event.evidence_digest,
        },
    }


def build_proof(session: Session, *, contact_id: int, settings: Settings) -> dict[str, Any]:
    """The consent proof bundle of one contact of the session's workspace; raises NotFound for an unknown one."""
    loaded = _load(session, contact_id)
    workspace, contact, now = loaded.workspace, loaded.contact, loaded.now
    workspace_settings = workspace.settings or {}
    erased = contact.erased_at is not None
    states = []
    for purpose in loaded.purposes.values():
        state = loaded.states.get(purpose.id)
        states.append(
            {
                "purpose": _purpose_dict(purpose),
                "status": _status_now(state, now) if state else ConsentStatus.NONE.value,
                "recorded_status": state.status if state else None,
                "legal_basis": state.legal_basis if state else None,
                "event_id": state.event_id if state else None,
                "decided_at": _time(state.decided_at) if state else None,
                "expires_at": _time(state.expires_at) if state else None,
            }
        )
    contact_source = loaded.sources.get(contact.source_id) if contact.source_id is not None else None
    return {
        "format": PROOF_FORMAT,
        "generated_at": isoformat_z(now),
        "generated_by": {"software": f"Zgoda {zgoda.__version__}", "base_url": settings.base_url},
        "workspace": {
            "id": workspace.id,
            "slug": workspace.slug,
            "name": workspace.name,
            "jurisdiction": str(workspace_settings.get("jurisdiction") or "PL"),
            "controller": _controller(workspace_settings),
        },
        "contact": {
            "id": contact.id,
            "ref": contact.ref,
            "erased": erased,
            "erased_at": _time(contact.erased_at),
            "email": contact.email,
            "phone": contact.phone,
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "created_at": _time(contact.created_at),
            "source": {"id": contact_source.id, "name": contact_source.name} if contact_source else None,
            "identities": [
                {
                    "source_id": identity.source_id,
                    "source": loaded.sources[identity.source_id].name if identity.source_id in loaded.sources else None,
                    "external_id": identity.external_id,
                    "created_at": _time(identity.created_at),
                }
                for identity in contact.identities
            ],
            "note": "This contact was erased on request: personal data and erasable evidence are gone; "
            "the ledger keeps only the random reference."
            if erased
            else None,
        },
        "states": states,
        "events": [_event_dict(loaded, event) for event in loaded.events],
        "chain": {
            "name": ConsentEvent.chain_name,
            "scope": f"workspace {workspace.id} ({workspace.slug})",
            "algorithm": ALGORITHM,
            "covered_fields": [*ConsentEvent.chain_fields, "seq"],
            "timestamps": "UTC, formatted YYYY-MM-DDTHH:MM:SS.ffffffZ",
            "evidence_digest": EVIDENCE_ALGORITHM,
            "notice_sha256": NOTICE_ALGORITHM,
            "genesis_hash": GENESIS_HASH,
            "head": {"seq": loaded.head[0], "hash": loaded.head[1], "at": isoformat_z(now)},
            "limitations": LIMITATIONS,
        },
        "verification": "See docs/consent-proof.md: recompute each event's hash from prev_hash and payload, "
        "the notice text's SHA-256 and the evidence digest, and compare.",
    }


# --- HTML ------------------------------------------------------------------------------------------


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def proof_html(bundle: dict[str, Any]) -> str:
    """The bundle as one printable, self-contained HTML page (inline CSS, no external assets)."""
    return _environment().get_template("consent/proof.html").render(bundle=bundle)


# --- Kantara Consent Receipt v1.1 ------------------------------------------------------------------


@cache
def _schema_text() -> str:
    return SCHEMA_PATH.read_text(encoding="utf-8")


def kantara_schema() -> dict[str, Any]:
    """Zgoda's JSON Schema for Kantara Consent Receipt v1.1 (see its ``$comment``); a fresh copy each call."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


def receipt_id(event_hash: str) -> str:
    """The receipt id of a ledger event: a name-based UUID (v5) of ``urn:zgoda:consent-event:<hash>``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:zgoda:consent-event:{event_hash}"))


def _receipt_controller(workspace: Workspace) -> dict[str, Any]:
    controller = _controller(workspace.settings or {})
    missing = [key for key in CONTROLLER_REQUIRED if not controller[key]]
    missing += [f"postal_address.{key}" for key in ADDRESS_REQUIRED if not controller["postal_address"][key]]
    if missing:
        raise InvalidInput(
            "A consent receipt names the data controller, and this workspace's controller details are "
            f"incomplete (missing: {', '.join(missing)}). The owner fills them in the workspace settings "
            "(controller: legal_name, postal_address with street, postal_code, city and country, email, "
            "phone, privacy_policy_url).",
            field="controller",
        )
    address = controller["postal_address"]
    entry: dict[str, Any] = {
        "piiController": controller["legal_name"],
        "contact": controller["dpo_contact"] or controller["legal_name"],
        "address": {
            name: value
            for name, value in (
                ("streetAddress", address["street"]),
                ("postalCode", address["postal_code"]),
                ("addressLocality", address["city"]),
                ("addressCountry", address["country"]),
            )
            if value
        },
        "email": controller["email"],
        "phone": controller["phone"],
    }
    if controller["website"]:
        entry["piiControllerUrl"] = controller["website"]
    return {"controller": entry, "policy_url": controller["privacy_policy_url"], "email": controller["email"]}


def _categories(workspace: Workspace, kind: str, purpose: Purpose, default: list[str]) -> list[str]:
    kantara = (workspace.settings or {}).get("kantara")
    overrides = (kantara.get(kind) if isinstance(kantara, dict) else None) or {}
    chosen = overrides.get(purpose.key) if isinstance(overrides, dict) else None
    if isinstance(chosen, list) and all(isinstance(item, str) for item in chosen):
        return list(chosen)
    return list(default)


def _termination(event: ConsentEvent, purpose: Purpose, controller_email: str) -> str:
    if event.legal_basis == LegalBasis.LEGITIMATE_INTEREST:
        text = (
            "Until the person objects (GDPR Art. 21(2)-(3)), which they can do at any time through the "
            f"unsubscribe link in every message, the preference centre, or by writing to {controller_email}."
        )
    else:
        text = (
            "Until withdrawn. The person can withdraw at any time, as easily as they gave it: through the "
            f"unsubscribe link in every message, the preference centre, or by writing to {controller_email}."
        )
    if purpose.validity_days:
        until = event.occurred_at + timedelta(days=purpose.validity_days)
        text += f" It lapses {purpose.validity_days} days after it was given (on {until:%Y-%m-%d}) unless renewed."
    return text


def _third_party(workspace: Workspace, purpose: Purpose) -> dict[str, Any]:
    if purpose.key not in THIRD_PARTY_PURPOSES:
        return {"thirdPartyDisclosure": False}
    named = (workspace.settings or {}).get("third_parties")
    if isinstance(named, list) and named:
        name = ", ".join(str(item) for item in named)
    elif isinstance(named, str) and named.strip():
        name = named.strip()
    else:
        name = "The partners named in the consent notice"
    return {"thirdPartyDisclosure": True, "thirdPartyName": name}


def _principal(contact: Contact) -> str:
    if contact.erased_at is None and (contact.email or contact.phone):
        return str(contact.email or contact.phone)
    return contact.ref


def kantara_receipts(session: Session, *, contact_id: int, settings: Settings) -> list[dict[str, Any]]:
    """One Kantara Consent Receipt v1.1 per consent of the contact (grant, confirm, refresh), each schema-valid."""
    loaded = _load(session, contact_id)
    workspace, contact = loaded.workspace, loaded.contact
    controller = _receipt_controller(workspace)
    jurisdiction = str((workspace.settings or {}).get("jurisdiction") or "PL")
    validator = jsonschema.Draft202012Validator(kantara_schema())
    receipts: list[dict[str, Any]] = []
    last_notice: dict[int, ConsentEvent] = {}
    last_pending: dict[int, ConsentEvent] = {}
    withdrawals = [event for event in loaded.events if event.event_type == EventType.WITHDRAW]
    for event in loaded.events:
        if event.notice_id is not None:
            last_notice[event.purpose_id] = event
        if event.event_type not in RECEIPT_EVENT_TYPES or event.legal_basis not in RECEIPT_LEGAL_BASES:
            continue
        if event.requires_confirmation:
            last_pending[event.purpose_id] = event
            continue  # not a consent until confirmed; the confirmation gets the receipt
        purpose = loaded.purposes[event.purpose_id]
        confirmed = last_pending.pop(event.purpose_id, None) if event.event_type == EventType.CONFIRM else None
        notice_event = event if event.notice_id is not None else last_notice.get(event.purpose_id)
        if event.notice_id is None and confirmed is not None and confirmed.notice_id is not None:
            notice_event = confirmed
        notice = loaded.notices.get(notice_event.notice_id) if notice_event and notice_event.notice_id else None
        source = loaded.sources.get(event.source_id) if event.source_id is not None else None
        method = METHOD_LABELS.get(event.method, event.method)
        if confirmed is not None:
            method = (
                f"{METHOD_LABELS.get(confirmed.method, confirmed.method)}, confirmed by {method[0].lower()}{method[1:]}"
            )
        where = f"source '{source.name}' ({source.kind})" if source else "no source recorded"
        purpose_text = f"{purpose.name}: {notice.text}" if notice else f"{purpose.name}: {purpose.description}"
        consent_type = "EXPLICIT" if event.legal_basis == LegalBasis.CONSENT else "N/A"
        receipt: dict[str, Any] = {
            "version": KANTARA_VERSION,
            "jurisdiction": jurisdiction,
            "consentTimestamp": int(event.occurred_at.astimezone(UTC).timestamp()),
            "collectionMethod": f"{method}; {where}",
            "consentReceiptID": receipt_id(event.hash),
            "language": notice.language if notice else workspace.locale,
            "piiPrincipalId": _principal(contact),
            "piiControllers": [controller["controller"]],
            "policyUrl": controller["policy_url"],
            "services": [
                {
                    "service": f"{workspace.name}: {purpose.name}",
                    "purposes": [
                        {
                            "purpose": purpose_text,
                            "consentType": consent_type,
                            "purposeCategory": _categories(
                                workspace,
                                "purpose_categories",
                                purpose,
                                DEFAULT_PURPOSE_CATEGORIES.get(purpose.key, ["6 - Marketing"]),
                            ),
                            "piiCategory": _categories(
                                workspace,
                                "pii_categories",
                                purpose,
                                DEFAULT_PII_CATEGORIES.get(purpose.key, ["2 - Contact"]),
                            ),
                            "primaryPurpose": True,
                            "termination": _termination(event, purpose, controller["email"]),
                            **_third_party(workspace, purpose),
                        }
                    ],
                }
            ],
            "sensitive": False,
            "spiCat": [],
            KANTARA_EXTENSION: {
                "workspace": workspace.slug,
                "contactRef": contact.ref,
                "eventId": event.id,
                "eventSeq": event.seq,
                "eventHash": event.hash,
                "eventType": event.event_type,
                "method": event.method,
                "legalBasis": event.legal_basis,
                "purposeKey": purpose.key,
                "channel": purpose.channel,
                "occurredAt": isoformat_z(event.occurred_at),
                "noticeId": notice.id if notice else None,
                "noticeVersion": notice.version if notice else None,
                "noticeSha256": notice.sha256 if notice else None,
                "noticeFromEventId": notice_event.id
                if notice_event is not None and notice_event is not event
                else None,
                "confirmsEventId": confirmed.id if confirmed is not None else None,
                "withdrawnAt": next(
                    (
                        isoformat_z(later.occurred_at)
                        for later in withdrawals
                        if later.purpose_id == event.purpose_id and later.occurred_at >= event.occurred_at
                    ),
                    None,
                ),
            },
        }
        error = jsonschema.exceptions.best_match(validator.iter_errors(receipt))
        if error is not None:
            where_in = "/".join(str(part) for part in error.absolute_path) or "(top level)"
            raise InvalidInput(
                f"The consent receipt for event {event.id} does not meet Kantara CR v1.1 "
                f"at {where_in}: {error.message}",
                field="kantara",
            )
        receipts.append(receipt)
    return receipts
