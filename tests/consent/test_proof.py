"""The consent proof bundle, its HTML page, Kantara receipts, and the independent check from docs/."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tests.support.consent import workspace_with_contact
from tests.support.factories import as_system
from zgoda.accounts.models import Workspace
from zgoda.consent import ledger, purposes, sources
from zgoda.consent.models import ConsentEvent, ConsentEvidence, Notice, Source
from zgoda.consent.proof import build_proof, kantara_receipts, kantara_schema, proof_html
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.chain import GENESIS_HASH, chain_payload, entry_hash
from zgoda.core.clock import utcnow
from zgoda.core.errors import InvalidInput, NotFound
from zgoda.core.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "consent-proof.md"

NOTICE_TEXT = (
    "Zgadzam się na otrzymywanie newslettera „Sklep Przykładowy” na mój adres e-mail.\n"
    "Zgodę mogę wycofać w każdej chwili, klikając link w stopce wiadomości."
)
ATTESTATION = "Formularz zapisu w stopce sklepu: niezaznaczone pole wyboru, potem link potwierdzający (double opt-in)."

CONTROLLER_SETTINGS: dict[str, Any] = {
    "jurisdiction": "PL",
    "controller": {
        "legal_name": "Sklep Przykładowy sp. z o.o.",
        "postal_address": {"street": "ul. Prosta 1", "postal_code": "00-001", "city": "Warszawa", "country": "PL"},
        "email": "rodo@sklep.example.pl",
        "phone": "+48221234567",
        "website": "https://sklep.example.pl",
        "privacy_policy_url": "https://sklep.example.pl/polityka-prywatnosci",
        "dpo_contact": "Inspektor Ochrony Danych, iod@sklep.example.pl",
    },
    "third_parties": ["Partner Logistyka sp. z o.o."],
}

# The Kantara working group's v1.1 JSON schema (CR_v1_1/kantara-consent-receipt-v1_1-schema.json), its
# "required" lists as published, typed in here so our receipts are checked against the spec, not only our schema.
OFFICIAL_REQUIRED = [
    "version",
    "jurisdiction",
    "consentTimestamp",
    "collectionMethod",
    "consentReceiptID",
    "piiPrincipalId",
    "piiControllers",
    "services",
    "policyUrl",
    "sensitive",
    "spiCat",
]
OFFICIAL_CONTROLLER_REQUIRED = ["piiController", "contact", "address", "email", "phone"]
OFFICIAL_SERVICE_REQUIRED = ["service", "purposes"]
OFFICIAL_PURPOSE_REQUIRED = ["consentType", "purposeCategory", "piiCategory", "termination", "thirdPartyDisclosure"]


@dataclass
class Scenario:
    workspace: Workspace
    contact: Contact
    source: Source
    notice: Notice
    first_grant: ConsentEvent
    withdrawal: ConsentEvent
    pending_grant: ConsentEvent
    confirmation: ConsentEvent


def build_scenario(session: Session, storage_dir: Path, *, email: str = "jan.kowalski@example.pl") -> Scenario:
    """Grant with evidence and a notice, withdraw, re-grant by double opt-in; another contact's events in between."""
    workspace, contact = workspace_with_contact(session, email=email)
    workspace.settings = copy.deepcopy(CONTROLLER_SETTINGS)
    session.flush()
    source = sources.create_source(session, name="Sklep internetowy", kind="web_form")
    sources.attest_source(session, source_id=source.id, attestation=ATTESTATION)
    sources.add_evidence(
        session,
        source_id=source.id,
        filename="formularz.png",
        content_type="image/png",
        data=b"\x89PNG screenshot of the signup form",
        storage_dir=storage_dir,
    )
    email_marketing = purposes.purpose_by_key(session, "email_marketing")
    notice = purposes.create_notice(
        session, purpose_id=email_marketing.id, language="pl", title="Newsletter", text=NOTICE_TEXT
    )
    other = contacts.upsert_contact(session, contacts.ContactData(email="anna@example.pl")).contact
    now = utcnow()

    def record(who: Contact, event_type: str, method: str, days_ago: float, **extra: Any) -> ConsentEvent:
        return ledger.record_event(
            session,
            ledger.NewEvent(
                contact=who,
                purpose=email_marketing,
                event_type=event_type,
                method=method,
                occurred_at=now - timedelta(days=days_ago),
                **extra,
            ),
        )

    first_grant = record(
        contact,
        "grant",
        "web_form",
        30,
        source=source,
        notice=notice,
        evidence=ledger.Evidence(
            ip="203.0.113.7", user_agent="Mozilla/5.0 (X11)", page_url="https://sklep.example.pl/newsletter"
        ),
    )
    record(other, "grant", "web_form", 25, source=source, notice=notice, evidence=ledger.Evidence(ip="198.51.100.1"))
    withdrawal = record(contact, "withdraw", "unsubscribe_link", 20, evidence=ledger.Evidence(ip="203.0.113.8"))
    pending_grant = record(
        contact,
        "grant",
        "web_form",
        10,
        source=source,
        notice=notice,
        requires_confirmation=True,
        evidence=ledger.Evidence(ip="203.0.113.9", user_agent="Mozilla/5.0 (Android)"),
    )
    confirmation = record(
        contact,
        "confirm",
        "double_opt_in",
        9.9,
        source=source,
        evidence=ledger.Evidence(ip="203.0.113.9", note="Confirmation link clicked."),
    )
    return Scenario(workspace, contact, source, notice, first_grant, withdrawal, pending_grant, confirmation)


def docs_verifier() -> Callable[[dict[str, Any]], list[str]]:
    """The verification code block of docs/consent-proof.md, run as a third party would run it."""
    text = DOCS.read_text(encoding="utf-8")
    marker = text.index("<!-- tests/consent/test_proof.py runs the next code block")
    match = re.search(r"```python\n(.*?)```", text[marker:], re.DOTALL)
    assert match, "docs/consent-proof.md lost its verification code block"
    code = match.group(1)
    assert "zgoda" not in code.replace("docs", ""), "the documented check must not need Zgoda code"
    imports = set(re.findall(r"^(?:import|from) (\w+)", code, re.MULTILINE))
    assert imports <= {"hashlib", "json"}, imports
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # the documented procedure, verbatim
    verify: Callable[[dict[str, Any]], list[str]] = namespace["verify_bundle"]
    return verify


def as_received(bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle as a third party gets it: through JSON text."""
    loaded: dict[str, Any] = json.loads(json.dumps(bundle, ensure_ascii=False))
    return loaded


@pytest.fixture
def scenario(session: Session, tmp_path: Path) -> Scenario:
    return build_scenario(session, tmp_path / "files")


def test_bundle_holds_every_event_with_notice_evidence_source_and_state(
    session: Session, scenario: Scenario, settings: Settings
) -> None:
    bundle = build_proof(session, contact_id=scenario.contact.id, settings=settings)
    assert bundle["format"] == "zgoda-consent-proof/1"
    assert bundle["workspace"]["slug"] == scenario.workspace.slug
    assert bundle["workspace"]["jurisdiction"] == "PL"
    assert bundle["workspace"]["controller"]["legal_name"] == "Sklep Przykładowy sp. z o.o."
    assert bundle["workspace"]["controller"]["postal_address"]["city"] == "Warszawa"
    assert bundle["contact"]["email"] == "jan.kowalski@example.pl"
    assert bundle["contact"]["ref"] == scenario.contact.ref and not bundle["contact"]["erased"]

    events = bundle["events"]
    expected = [scenario.first_grant, scenario.withdrawal, scenario.pending_grant, scenario.confirmation]
    assert [e["id"] for e in events] == [e.id for e in expected]
    assert [e["payload"]["event_type"] for e in events] == ["grant", "withdraw", "grant", "confirm"]
    for entry, event in zip(events, expected, strict=True):
        values = {name: getattr(event, name) for name in (*ConsentEvent.chain_fields, "seq")}
        assert entry["payload"] == chain_payload(ConsentEvent, values)
        assert (entry["seq"], entry["prev_hash"], entry["hash"]) == (event.seq, event.prev_hash, event.hash)
        assert entry_hash(entry["prev_hash"], entry["payload"]) == entry["hash"]
        assert entry["checked_at_generation"]["hash"] is True
    # the other contact's event sits between the first grant and the withdrawal in the workspace chain
    assert events[1]["seq"] == events[0]["seq"] + 2

    first = events[0]
    assert first["notice"]["text"] == NOTICE_TEXT
    assert first["notice"]["sha256"] == first["payload"]["notice_sha256"] == scenario.notice.sha256
    assert (first["notice"]["language"], first["notice"]["version"]) == ("pl", 1)
    assert first["evidence"]["ip"] == "203.0.113.7" and len(first["evidence"]["salt"]) == 32
    assert first["evidence_status"] == "present"
    assert first["source"]["name"] == "Sklep internetowy"
    assert first["source"]["attestation"] == ATTESTATION
    assert first["source"]["attested_by"] == "test"
    assert [f["filename"] for f in first["source"]["evidence_files"]] == ["formularz.png"]
    assert events[1]["notice"] is None and events[1]["source"] is None
    assert events[3]["evidence"]["note"] == "Confirmation link clicked."

    states = {s["purpose"]["key"]: s for s in bundle["states"]}
    assert states["email_marketing"]["status"] == "granted"
    assert states["email_marketing"]["event_id"] == scenario.confirmation.id
    assert states["email_marketing"]["legal_basis"] == "consent"
    assert states["sms_marketing"]["status"] == "none"

    assert bundle["chain"]["genesis_hash"] == GENESIS_HASH
    assert bundle["chain"]["head"] == {
        "seq": scenario.confirmation.seq,
        "hash": scenario.confirmation.hash,
        "at": bundle["generated_at"],
    }
    assert "not consecutive" in bundle["chain"]["limitations"] and "zgoda verify" in bundle["chain"]["limitations"]
    json.dumps(bundle)  # serialisable as is


def test_a_bundle_passes_the_independent_procedure_from_docs(
    session: Session, scenario: Scenario, settings: Settings
) -> None:
    verify = docs_verifier()
    bundle = as_received(build_proof(session, contact_id=scenario.contact.id, settings=settings))
    assert verify(bundle) == []

    altered = copy.deepcopy(bundle)
    altered["events"][0]["notice"]["text"] = NOTICE_TEXT.replace("e-mail", "e-mail i SMS")
    assert any("notice" in problem for problem in verify(altered))

    altered = copy.deepcopy(bundle)
    altered["events"][0]["evidence"]["ip"] = "192.0.2.66"
    assert any("evidence" in problem for problem in verify(altered))

    altered = copy.deepcopy(bundle)
    altered["events"][2]["payload"]["occurred_at"] = altered["events"][1]["payload"]["occurred_at"]
    assert any("does not match its hash" in problem for problem in verify(altered))

    altered = copy.deepcopy(bundle)  # a forged hash no longer links to the next entry / the ledger head
    altered["events"][3]["payload"]["legal_basis"] = "legitimate_interest"
    forged = altered["events"][3]
    forged["hash"] = entry_hash(forged["prev_hash"], forged["payload"])
    assert any("ledger head" in problem for problem in verify(altered))

    altered = copy.deepcopy(bundle)
    altered["contact"]["ref"] = uuid.uuid4().hex
    assert any("another person" in problem for problem in verify(altered))


def test_an_erased_contact_still_verifies_without_its_personal_data(
    session: Session, scenario: Scenario, settings: Settings
) -> None:
    contact = scenario.contact
    session.execute(delete(ConsentEvidence).where(ConsentEvidence.workspace_id == scenario.workspace.id))
    contact.email, contact.first_name, contact.erased_at = None, None, utcnow()
    session.flush()
    bundle = build_proof(session, contact_id=contact.id, settings=settings)
    assert bundle["contact"]["erased"] and bundle["contact"]["email"] is None and "erased" in bundle["contact"]["note"]
    assert bundle["events"][0]["evidence"] is None and bundle["events"][0]["evidence_status"] == "erased"
    assert docs_verifier()(as_received(bundle)) == []
    receipts = kantara_receipts(session, contact_id=contact.id, settings=settings)
    assert {r["piiPrincipalId"] for r in receipts} == {contact.ref}


def test_an_unknown_or_foreign_contact_is_not_found(session: Session, scenario: Scenario, settings: Settings) -> None:
    with pytest.raises(NotFound):
        build_proof(session, contact_id=scenario.contact.id + 10_000, settings=settings)
    _, stranger = workspace_with_contact(session, email="obcy@example.pl")  # binds the session to a new workspace
    with pytest.raises(NotFound):
        build_proof(session, contact_id=scenario.contact.id, settings=settings)
    with pytest.raises(NotFound):
        kantara_receipts(session, contact_id=scenario.contact.id, settings=settings)
    assert build_proof(session, contact_id=stranger.id, settings=settings)["events"] == []


def test_html_shows_the_key_facts_and_escapes_hostile_input(
    session: Session, scenario: Scenario, settings: Settings
) -> None:
    scenario.contact.first_name = "<script>alert('x')</script>"
    scenario.contact.last_name = 'Kowalski" onmouseover="steal()'
    session.flush()
    bundle = build_proof(session, contact_id=scenario.contact.id, settings=settings)
    html = proof_html(bundle)
    assert html.lstrip().startswith("<!doctype html>")
    assert "<script" not in html and 'onmouseover="steal' not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    for fact in (
        "Sklep Przykładowy sp. z o.o.",
        "jan.kowalski@example.pl",
        scenario.contact.ref,
        "Zgadzam się na otrzymywanie newslettera „Sklep Przykładowy”",
        "203.0.113.7",
        "Mozilla/5.0 (X11)",
        "Sklep internetowy",
        "Formularz zapisu w stopce sklepu",
        "formularz.png",
        scenario.first_grant.hash,
        scenario.confirmation.prev_hash,
        bundle["chain"]["head"]["hash"],
        "not consecutive",
    ):
        assert fact in html, fact
    assert html.count('class="event ') == 4
    self_contained = html.replace('<link rel="icon" href="data:,">', "")  # an empty inline icon: nothing fetched
    assert "<link" not in self_contained and 'src="' not in html and "@media print" in html


def test_kantara_receipts_validate_and_carry_the_workspace_facts(
    session: Session, scenario: Scenario, settings: Settings
) -> None:
    receipts = kantara_receipts(session, contact_id=scenario.contact.id, settings=settings)
    # the first grant and the double opt-in confirmation; a grant awaiting confirmation is not yet a consent
    assert [r["x-zgoda"]["eventId"] for r in receipts] == [scenario.first_grant.id, scenario.confirmation.id]
    validator = jsonschema.Draft202012Validator(kantara_schema())
    for receipt in receipts:
        validator.validate(receipt)
        assert set(OFFICIAL_REQUIRED) <= set(receipt)
        [controller] = receipt["piiControllers"]
        assert set(OFFICIAL_CONTROLLER_REQUIRED) <= set(controller)
        [service] = receipt["services"]
        assert set(OFFICIAL_SERVICE_REQUIRED) <= set(service)
        [purpose] = service["purposes"]
        assert set(OFFICIAL_PURPOSE_REQUIRED) <= set(purpose)
        assert receipt["version"] == "KI-CR-v1.1.0" and receipt["jurisdiction"] == "PL"
        assert receipt["piiPrincipalId"] == "jan.kowalski@example.pl"
        assert receipt["language"] == "pl" and receipt["policyUrl"].endswith("/polityka-prywatnosci")
        assert controller["piiController"] == "Sklep Przykładowy sp. z o.o."
        assert controller["address"] == {
            "streetAddress": "ul. Prosta 1",
            "postalCode": "00-001",
            "addressLocality": "Warszawa",
            "addressCountry": "PL",
        }
        assert controller["piiControllerUrl"] == "https://sklep.example.pl"
        assert purpose["consentType"] == "EXPLICIT" and purpose["thirdPartyDisclosure"] is False
        assert NOTICE_TEXT in purpose["purpose"] and purpose["purpose"].startswith("Email marketing")
        assert "withdraw" in purpose["termination"] and "rodo@sklep.example.pl" in purpose["termination"]
        assert "Sklep internetowy" in receipt["collectionMethod"]
        assert receipt["sensitive"] is False and receipt["spiCat"] == []
        event_hash = receipt["x-zgoda"]["eventHash"]
        assert receipt["consentReceiptID"] == str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"urn:zgoda:consent-event:{event_hash}")
        )
    first, confirmation = receipts
    assert first["consentTimestamp"] == int(scenario.first_grant.occurred_at.timestamp())
    assert first["x-zgoda"]["withdrawnAt"] is not None and confirmation["x-zgoda"]["withdrawnAt"] is None
    assert first["collectionMethod"] == "Web form; source 'Sklep internetowy' (web_form)"
    assert confirmation["collectionMethod"].startswith("Web form, confirmed by double opt-in")
    assert confirmation["x-zgoda"]["confirmsEventId"] == scenario.pending_grant.id
    assert confirmation["x-zgoda"]["noticeFromEventId"] == scenario.pending_grant.id  # the grant it confirms
    assert len({r["consentReceiptID"] for r in receipts}) == 2
    assert kantara_receipts(session, contact_id=scenario.contact.id, settings=settings) == receipts  # deterministic


@pytest.mark.parametrize("field", OFFICIAL_REQUIRED)
def test_a_receipt_without_a_required_field_fails_validation(
    session: Session, scenario: Scenario, settings: Settings, field: str
) -> None:
    [receipt, _] = kantara_receipts(session, contact_id=scenario.contact.id, settings=settings)
    del receipt[field]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(receipt, kantara_schema(), cls=jsonschema.Draft202012Validator)


def test_nested_required_fields_and_the_third_party_rule_are_enforced(
    session: Session, scenario: Scenario, settings: Settings
) -> None:
    [receipt, _] = kantara_receipts(session, contact_id=scenario.contact.id, settings=settings)
    validator = jsonschema.Draft202012Validator(kantara_schema())
    for path, name in [
        (("piiControllers", 0), "phone"),
        (("services", 0), "purposes"),
        (("services", 0, "purposes", 0), "termination"),
        (("services", 0, "purposes", 0), "thirdPartyDisclosure"),
    ]:
        broken = copy.deepcopy(receipt)
        target: Any = broken
        for step in path:
            target = target[step]
        del target[name]
        assert not validator.is_valid(broken), (path, name)
    disclosed = copy.deepcopy(receipt)
    disclosed["services"][0]["purposes"][0]["thirdPartyDisclosure"] = True
    assert not validator.is_valid(disclosed)  # disclosed to whom?
    disclosed["services"][0]["purposes"][0]["thirdPartyName"] = "Partner"
    assert validator.is_valid(disclosed)


def test_third_party_sharing_names_the_partners_and_legitimate_interest_is_not_explicit(
    session: Session, scenario: Scenario, settings: Settings
) -> None:
    sharing = purposes.purpose_by_key(session, "third_party_sharing")
    profiling = purposes.purpose_by_key(session, "profiling")
    moment = utcnow() - timedelta(days=1)
    for purpose, basis in ((sharing, "consent"), (profiling, "legitimate_interest")):
        ledger.record_event(
            session,
            ledger.NewEvent(
                contact=scenario.contact,
                purpose=purpose,
                event_type="grant",
                method="web_form",
                legal_basis=basis,
                source=scenario.source,
                occurred_at=moment,
            ),
        )
    receipts = {
        r["x-zgoda"]["purposeKey"]: r
        for r in kantara_receipts(session, contact_id=scenario.contact.id, settings=settings)
    }
    shared = receipts["third_party_sharing"]["services"][0]["purposes"][0]
    assert shared["thirdPartyDisclosure"] is True and shared["thirdPartyName"] == "Partner Logistyka sp. z o.o."
    assert shared["purposeCategory"] == ["9 - Sharing for Marketing"]
    interest = receipts["profiling"]["services"][0]["purposes"][0]
    assert interest["consentType"] == "N/A" and "objects" in interest["termination"]
    assert receipts["profiling"]["language"] == scenario.workspace.locale  # no notice cited


def test_missing_controller_details_give_a_clear_error(
    session: Session, scenario: Scenario, settings: Settings
) -> None:
    workspace = scenario.workspace
    workspace.settings = {"controller": {"legal_name": "Sklep", "postal_address": {"city": "Warszawa"}}}
    session.flush()
    with pytest.raises(InvalidInput) as error:
        kantara_receipts(session, contact_id=scenario.contact.id, settings=settings)
    assert error.value.field == "controller"
    message = error.value.detail
    assert "email" in message and "phone" in message and "postal_address.street" in message
    assert "workspace settings" in message and "privacy_policy_url" in message
    bundle = build_proof(session, contact_id=scenario.contact.id, settings=settings)  # the bundle needs none of it
    assert bundle["workspace"]["controller"]["email"] is None and bundle["workspace"]["jurisdiction"] == "PL"


def test_a_contact_without_events_gets_an_empty_but_valid_bundle(session: Session, settings: Settings) -> None:
    workspace, contact = workspace_with_contact(session)
    as_system(session, workspace)
    bundle = build_proof(session, contact_id=contact.id, settings=settings)
    assert bundle["events"] == [] and {s["status"] for s in bundle["states"]} == {"none"}
    assert docs_verifier()(as_received(bundle)) == []
    assert "No consent event" in proof_html(bundle)
    assert session.scalars(select(ConsentEvent.id)).all() == []
