"""Demo consent data: sources with and without attestation, notices, contacts and a year of events.

Deterministic (seeded), so every new user sees the same story: a coffee roaster whose
newsletter form uses double opt-in, a shop that collects consent at checkout, a CRM
with phone consents, and an old spreadsheet nobody can vouch for.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zgoda.accounts.models import Workspace
from zgoda.consent import ledger, purposes, sources
from zgoda.consent.models import Notice, Purpose, Source
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow

FIRST_NAMES = [
    ("Anna", "Nowak"),
    ("Piotr", "Kowalski"),
    ("Katarzyna", "Wiśniewska"),
    ("Tomasz", "Wójcik"),
    ("Magdalena", "Kowalczyk"),
    ("Michał", "Kamiński"),
    ("Agnieszka", "Lewandowska"),
    ("Krzysztof", "Zieliński"),
    ("Joanna", "Szymańska"),
    ("Paweł", "Woźniak"),
    ("Ewa", "Dąbrowska"),
    ("Marcin", "Kozłowski"),
    ("Aleksandra", "Jankowska"),
    ("Łukasz", "Mazur"),
    ("Małgorzata", "Kwiatkowska"),
    ("Jakub", "Krawczyk"),
    ("Zofia", "Piotrowska"),
    ("Grzegorz", "Grabowski"),
    ("Natalia", "Nowakowska"),
    ("Jan", "Pawłowski"),
    ("Barbara", "Michalska"),
    ("Adam", "Nowicki"),
    ("Monika", "Adamczyk"),
    ("Rafał", "Dudek"),
    ("Karolina", "Zając"),
    ("Wojciech", "Wieczorek"),
    ("Dorota", "Jabłońska"),
    ("Mateusz", "Król"),
    ("Beata", "Majewska"),
    ("Dawid", "Olszewski"),
]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
]
NOTICES = {
    ("email_marketing", "pl"): [
        (
            "Zgoda na newsletter",
            "Chcę otrzymywać od Kawiarnia Zgoda sp. z o.o. newsletter z ofertami kaw i "
            "wydarzeń na podany adres e-mail. Zgodę mogę wycofać w każdej chwili linkiem w stopce wiadomości.",
        ),
        (
            "Zgoda na newsletter (2026)",
            "Chcę otrzymywać od Kawiarnia Zgoda sp. z o.o. (ul. Ziarnista 7, 31-000 "
            "Kraków) newsletter z ofertami kaw, warsztatów i wydarzeń na podany adres e-mail, nie częściej niż raz "
            "w tygodniu. Zgodę mogę wycofać w każdej chwili: linkiem w stopce, w centrum preferencji lub pisząc na "
            "iod@kawiarnia-zgoda.example.",
        ),
    ],
    ("email_marketing", "en"): [
        (
            "Newsletter consent",
            "I want to receive the Kawiarnia Zgoda newsletter with coffee offers and events "
            "by email. I can withdraw at any time with the link in every message.",
        ),
    ],
    ("sms_marketing", "pl"): [
        (
            "Zgoda na SMS",
            "Chcę otrzymywać SMS-y z ofertami Kawiarnia Zgoda sp. z o.o. na podany numer telefonu. "
            "Zgodę mogę wycofać, odpisując STOP.",
        ),
    ],
    ("profiling", "pl"): [
        (
            "Zgoda na dopasowanie treści",
            "Zgadzam się na analizę otwarć i kliknięć w newsletterze, aby dostawać "
            "oferty dopasowane do moich zainteresowań.",
        ),
    ],
}
SOURCES = [
    (
        "Formularz newslettera (www)",
        "web_form",
        "Signup box on kawiarnia-zgoda.example, double opt-in.",
        "The newsletter form on every page of kawiarnia-zgoda.example shows the current notice next to an "
        "unticked checkbox; submitting sends a confirmation email (double opt-in). Screenshots attached.",
    ),
    (
        "Sklep internetowy",
        "shop",
        "Checkout of the online shop (customers only).",
        "At checkout the customer may tick separate, unticked boxes for email and SMS offers; the notice text is "
        "shown beside each box. Orders are possible without consenting.",
    ),
    (
        "CRM — klienci hurtowi",
        "crm",
        "Wholesale customers entered by the sales team.",
        "Sales staff record phone consent during calls using the script in the attached PDF; each consent is "
        "entered with the date and the name of the staff member.",
    ),
    ("Stara baza z Excela (2019)", "csv_export", "A spreadsheet from a 2019 fair; origin unclear.", None),
]
EVIDENCE_FILE = (
    b"%PDF-1.4\n% Zgoda demo evidence: screenshot of the newsletter form as published on 2025-03-01\n%%EOF\n"
)


def seed_consent(session: Session, *, workspace: Workspace, storage_dir: Path) -> bool:
    """Fill the demo workspace's consent data once; returns whether anything was created."""
    if (session.scalar(select(func.count(Contact.id))) or 0) > 0:
        return False
    rng = random.Random(2026)  # noqa: S311 - deterministic demo data, not security
    now = utcnow().replace(microsecond=0)
    workspace.settings = {
        **(workspace.settings or {}),
        "jurisdiction": "PL",
        "controller": {
            "legal_name": "Kawiarnia Zgoda sp. z o.o.",
            "postal_address": {"street": "ul. Ziarnista 7", "postal_code": "31-000", "city": "Kraków", "country": "PL"},
            "email": "kontakt@kawiarnia-zgoda.example",
            "phone": "+48 12 345 67 89",
            "website": "https://kawiarnia-zgoda.example",
            "privacy_policy_url": "https://kawiarnia-zgoda.example/polityka-prywatnosci",
            "dpo_contact": "iod@kawiarnia-zgoda.example",
        },
    }
    purposes.update_purpose(
        session, purpose_id=purposes.purpose_by_key(session, "email_marketing").id, validity_days=730
    )
    notices: dict[tuple[str, str], list[Notice]] = {}
    for (key, language), versions in NOTICES.items():
        purpose = purposes.purpose_by_key(session, key)
        notices[(key, language)] = [
            purposes.create_notice(session, purpose_id=purpose.id, language=language, title=title, text=text)
            for title, text in versions
        ]
    made: list[Source] = []
    for name, kind, description, attestation in SOURCES:
        source = sources.create_source(session, name=name, kind=kind, description=description)
        if attestation:
            sources.attest_source(session, source_id=source.id, attestation=attestation)
        made.append(source)
    web_form, shop, crm, spreadsheet = made
    sources.add_evidence(
        session,
        source_id=web_form.id,
        filename="formularz-newslettera-2025-03.pdf",
        content_type="application/pdf",
        data=EVIDENCE_FILE,
        storage_dir=storage_dir,
    )
    email = purposes.purpose_by_key(session, "email_marketing")
    sms = purposes.purpose_by_key(session, "sms_marketing")
    profiling = purposes.purpose_by_key(session, "profiling")

    events: list[ledger.NewEvent] = []
    for index, (first, last) in enumerate(FIRST_NAMES * 2):
        variant = index // len(FIRST_NAMES)
        address = f"{_ascii(first)}.{_ascii(last)}{'' if variant == 0 else variant + 1}@example.com"
        source = [web_form, shop, crm, spreadsheet][index % 4]
        phone = f"+4860{rng.randrange(1000000, 9999999)}" if source in (shop, crm) else None
        data = contacts.ContactData(
            email=address,
            phone=phone,
            first_name=first,
            last_name=last,
            attributes={"city": rng.choice(["Kraków", "Warszawa", "Gdańsk", "Poznań"])},
            source_id=source.id,
            external_id=f"{source.kind}-{1000 + index}",
        )
        contact = contacts.upsert_contact(session, data, audit_changes=False).contact
        events += _story(rng, now, index, contact, source, email, sms, profiling, notices)
    ledger.record_events(session, sorted(events, key=lambda e: e.occurred_at or now), now=now)
    return True


def _ascii(text: str) -> str:
    table = str.maketrans("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ", "acelnoszzACELNOSZZ")
    return text.translate(table).lower()


def _evidence(rng: random.Random, page: str | None = None) -> ledger.Evidence:
    return ledger.Evidence(ip=f"203.0.113.{rng.randrange(1, 254)}", user_agent=rng.choice(USER_AGENTS), page_url=page)


def _story(
    rng: random.Random,
    now: datetime,
    index: int,
    contact: Contact,
    source: Source,
    email: Purpose,
    sms: Purpose,
    profiling: Purpose,
    notices: dict[tuple[str, str], list[Notice]],
) -> list[ledger.NewEvent]:
    """A plausible consent history for one contact, varied by source and position."""
    start = now - timedelta(days=rng.randrange(20, 700), hours=rng.randrange(0, 24))
    events: list[ledger.NewEvent] = []

    def add(
        purpose: Purpose,
        kind: str,
        at: datetime,
        method: str,
        *,
        notice: Notice | None = None,
        evidence: ledger.Evidence | None = None,
        requires_confirmation: bool = False,
        legal_basis: str = "consent",
    ) -> None:
        events.append(
            ledger.NewEvent(
                contact=contact,
                purpose=purpose,
                event_type=kind,
                method=method,
                source=source,
                occurred_at=at,
                notice=notice,
                legal_basis=legal_basis,
                evidence=evidence or ledger.Evidence(),
                requires_confirmation=requires_confirmation,
            )
        )

    notice_pl = notices[("email_marketing", "pl")][1 if start > now - timedelta(days=300) else 0]
    if source.kind == "web_form":
        page = "https://kawiarnia-zgoda.example/newsletter"
        add(
            email,
            "grant",
            start,
            "web_form",
            requires_confirmation=True,
            notice=notice_pl,
            evidence=_evidence(rng, page),
        )
        if index % 8 != 4:  # a few never click the confirmation link
            add(
                email,
                "confirm",
                start + timedelta(minutes=rng.randrange(2, 90)),
                "double_opt_in",
                evidence=_evidence(rng, page + "/potwierdz"),
            )
        if index % 3 == 0:
            add(
                profiling,
                "grant",
                start + timedelta(minutes=1),
                "web_form",
                notice=notices[("profiling", "pl")][0],
                evidence=_evidence(rng, page),
            )
    elif source.kind == "shop":
        page = "https://kawiarnia-zgoda.example/zamowienie"
        add(email, "grant", start, "web_form", notice=notice_pl, evidence=_evidence(rng, page))
        if index % 2 == 1:
            add(
                sms,
                "grant",
                start,
                "web_form",
                notice=notices[("sms_marketing", "pl")][0],
                evidence=_evidence(rng, page),
            )
    elif source.kind == "crm":
        add(
            sms,
            "grant",
            start,
            "operator",
            notice=notices[("sms_marketing", "pl")][0],
            evidence=ledger.Evidence(note="Phone call, consent script v2, recorded by sales (M. Dudek)."),
        )
    else:  # the old spreadsheet: no evidence of consent at all
        add(
            email,
            "grant",
            start,
            "import",
            legal_basis="unknown",
            evidence=ledger.Evidence(note="Row of 'targi-2019.xlsx'; no consent column."),
        )
    if index % 7 == 2 and source.kind != "csv_export":
        add(
            email, "withdraw", start + timedelta(days=rng.randrange(5, 15)), "unsubscribe_link", evidence=_evidence(rng)
        )
    return events
