"""Column mappings: which header feeds which field or purpose, found automatically in English and Polish.

Value rules (documented in docs/imports.md):
- consent cells: ``yes/y/true/t/1/x/tak/✓`` grant, ``no/n/false/f/0/nie`` mean "did not consent",
  empty means "nothing said", and a date or timestamp means "granted at that time";
- a "did not consent" cell withdraws only a consent the contact currently holds (a stale export
  never creates withdrawals for people who never agreed); it is dated by the consent-time
  column, or the import time;
- naive times are in the workspace's time zone.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from zgoda.core.clock import as_utc
from zgoda.core.errors import InvalidInput

FIELD_SYNONYMS: dict[str, set[str]] = {
    "email": {"email", "mail", "adresemail", "emailaddress", "adresmailowy"},
    "phone": {"phone", "telefon", "tel", "phonenumber", "numertelefonu", "nrtelefonu", "mobile", "komorka", "msisdn"},
    "external_id": {"externalid", "id", "customerid", "clientid", "idklienta", "nrklienta", "numerklienta"},
    "first_name": {"firstname", "imie", "givenname"},
    "last_name": {"lastname", "surname", "nazwisko", "familyname"},
    "consent_time": {"consenttime", "consentat", "consentedat", "grantedat", "datazgody", "datawyrazeniazgody"},
    "notice_version": {"noticeversion", "wersjaklauzuli", "wersjatresci"},
    "notice_language": {"noticelanguage", "jezykklauzuli"},
    "ip": {"ip", "ipaddress", "adresip"},
    "legal_basis": {"legalbasis", "podstawaprawna", "podstawa"},
}
PURPOSE_SYNONYMS: dict[str, str] = {
    "zgodaemail": "email_marketing",
    "zgodanewsletter": "email_marketing",
    "newsletter": "email_marketing",
    "zgodamarketingemail": "email_marketing",
    "emailconsent": "email_marketing",
    "zgodasms": "sms_marketing",
    "smsconsent": "sms_marketing",
    "zgodamarketingsms": "sms_marketing",
    "zgodatelefon": "phone_marketing",
    "zgodatelefoniczna": "phone_marketing",
    "phoneconsent": "phone_marketing",
    "profilowanie": "profiling",
    "zgodaprofilowanie": "profiling",
    "udostepnianie": "third_party_sharing",
    "zgodapartnerzy": "third_party_sharing",
}
YES = {"yes", "y", "true", "t", "1", "x", "tak", "✓", "✔"}
NO = {"no", "n", "false", "f", "0", "nie"}
LEGAL_BASES = {
    "consent": "consent",
    "zgoda": "consent",
    "legitimate_interest": "legitimate_interest",
    "legitimateinterest": "legitimate_interest",
    "prawnieuzasadnionyinteres": "legitimate_interest",
    "contract": "contract",
    "umowa": "contract",
    "unknown": "unknown",
    "nieznana": "unknown",
}
_DOTTED = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")


def squash(text: str) -> str:
    """Lower-case, strip accents and everything but letters and digits: 'Imię' → 'imie', 'E-mail' → 'email'."""
    decomposed = unicodedata.normalize("NFKD", text.replace("ł", "l").replace("Ł", "L"))
    return re.sub(r"[^a-z0-9]", "", "".join(c for c in decomposed if not unicodedata.combining(c)).lower())


@dataclass
class ColumnMapping:
    """Which header feeds what. Saved per source (``Source.settings["mapping"]``) and reusable."""

    email: str | None = None
    phone: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    consent_time: str | None = None
    notice_version: str | None = None
    notice_language: str | None = None
    ip: str | None = None
    legal_basis: str | None = None
    consents: dict[str, str] = field(default_factory=dict)  # purpose key -> header
    attributes: dict[str, str] = field(default_factory=dict)  # attribute name -> header

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ColumnMapping:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"Unknown mapping keys: {', '.join(unknown)}.", field="mapping")
        for key in ("consents", "attributes"):
            if key in data and not isinstance(data[key], dict):
                raise InvalidInput(f"Mapping '{key}' must be an object of name → header.", field=f"mapping.{key}")
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> ColumnMapping:
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as error:
            raise InvalidInput(f"The mapping file cannot be read: {error}", field="mapping") from error

    def used_headers(self) -> dict[str, str]:
        """header -> what it feeds."""
        used: dict[str, str] = {}
        for name in FIELD_SYNONYMS:
            header = getattr(self, name)
            if header:
                used[header] = name
        for key, header in self.consents.items():
            used[header] = f"consent:{key}"
        for key, header in self.attributes.items():
            used[header] = f"attribute:{key}"
        return used

    def validate(self, headers: list[str], purpose_keys: set[str]) -> None:
        """Every mapped header exists, a contact key is mapped, and purposes are known."""
        present = set(headers)
        for header, target in self.used_headers().items():
            if header not in present:
                raise InvalidInput(
                    f"The mapping uses the header '{header}' (for {target}), which the file lacks.", field="header"
                )
        if not (self.email or self.phone):
            raise InvalidInput(
                "Map an email or a phone column: without one no contact can be identified.", field="mapping"
            )
        for key in self.consents:
            if key not in purpose_keys:
                raise InvalidInput(
                    f"The mapping names the purpose '{key}', which this workspace lacks.", field="mapping.consents"
                )


def auto_map(headers: list[str], purpose_keys: set[str]) -> tuple[ColumnMapping, list[str]]:
    """A mapping from header names alone, and the headers left unmapped."""
    mapping = ColumnMapping()
    ignored: list[str] = []
    squashed_keys = {squash(key): key for key in purpose_keys}
    for header in headers:
        key = squash(header)
        target = next((name for name, synonyms in FIELD_SYNONYMS.items() if key in synonyms), None)
        if target is not None and getattr(mapping, target) is None:
            setattr(mapping, target, header)
            continue
        purpose = squashed_keys.get(key) or PURPOSE_SYNONYMS.get(key)
        if purpose is not None and purpose in purpose_keys and purpose not in mapping.consents:
            mapping.consents[purpose] = header
            continue
        ignored.append(header)
    return mapping, ignored


@dataclass(frozen=True)
class ConsentCell:
    given: bool
    at: datetime | None = None


def parse_consent(value: str, *, zone: ZoneInfo) -> ConsentCell | None:
    """A consent cell: ``None`` when empty; raises ValueError with the reason when unrecognised."""
    text = value.strip()
    if not text:
        return None
    lowered = text.lower()
    if lowered in YES:
        return ConsentCell(True)
    if lowered in NO:
        return ConsentCell(False)
    try:
        return ConsentCell(True, parse_time(text, zone=zone))
    except ValueError:
        raise ValueError(
            f"'{text}' is not a consent value (use yes/no, tak/nie, true/false, 1/0 or the date consent was given)"
        ) from None


def parse_time(text: str, *, zone: ZoneInfo) -> datetime:
    """ISO 8601 (date or date-time) or Polish ``dd.mm.yyyy [hh:mm[:ss]]``; naive values take ``zone``."""
    text = text.strip()
    match = _DOTTED.match(text)
    if match:
        day, month, year, hour, minute, second = match.groups()
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    else:
        moment = (
            datetime.fromisoformat(text.replace("Z", "+00:00"))
            if "T" in text or ":" in text
            else datetime.combine(datetime.fromisoformat(text).date(), time())
        )
    moment = moment if moment.tzinfo else moment.replace(tzinfo=zone)
    try:
        as_utc(moment, "time")
    except InvalidInput:  # 1 January of year 1 east of Greenwich: no UTC time to store
        raise ValueError(f"'{text}' is out of range") from None
    return moment


def parse_legal_basis(value: str) -> str | None:
    text = squash(value)
    if not text:
        return None
    basis = LEGAL_BASES.get(text)
    if basis is None:
        raise ValueError(f"'{value}' is not a legal basis (consent, legitimate_interest, contract, unknown)")
    return basis
