"""The demo's audiences and ready campaigns: a list (some members lack consent, so the gate has work),
a segment, a template with merge fields, a DKIM key for the sending domain, a draft campaign, and a
draft consent request (double opt-in for the list's pending sign-ups, refresh for the others)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from zgoda.audiences import service as audiences
from zgoda.audiences.models import ContactList
from zgoda.campaigns import domains
from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import Campaign, CampaignKind, SendingDomain
from zgoda.contacts.models import Contact

DEMO_DOMAIN = "kawiarnia.zgoda.example"
LIST_NAME = "Newsletter: klienci sklepu"
CAMPAIGN_NAME = "Karta zimowa 2026"
CONSENT_REQUEST_NAME = "Potwierdź zapis na newsletter"
CONFIRMATION_HTML = """<!doctype html>
<html lang="pl"><body>
  <h1>Dzień dobry{% if contact.first_name %}, {{ contact.first_name }}{% endif %}!</h1>
  <p>Ktoś (mamy nadzieję, że Ty) zapisał ten adres do newslettera {{ workspace.name }}, albo Twoja zgoda
  wymaga odświeżenia. Wyślemy Ci coś dopiero, gdy potwierdzisz to przyciskiem poniżej.</p>
</body></html>"""
TEMPLATE_HTML = """<!doctype html>
<html lang="pl"><head><style>
  body { font-family: Georgia, serif; color: #2b2118; }
  h1 { color: #7a3e12; font-size: 24px; }
  .offer { background: #f6efe6; padding: 12px; border-radius: 6px; }
</style></head>
<body>
  <h1>Dzień dobry{% if contact.first_name %}, {{ contact.first_name }}{% endif %}!</h1>
  <p>Zima w {{ workspace.name }}: piernikowe latte, grzane wino bez alkoholu i sernik z kardamonem.</p>
  <p class="offer">Pokaż tę wiadomość przy kasie, a drugą kawę dostaniesz za pół ceny (do 31 grudnia).</p>
  <p><a href="https://kawiarnia.zgoda.example/karta-zimowa">Zobacz całą kartę zimową</a></p>
  <p>Do zobaczenia!<br>Zespół kawiarni</p>
</body></html>"""


def seed_campaigns(session: Session, *, secret: bytes) -> tuple[str, str] | None:
    """Create the demo's list, segment, template, sending domain and draft campaign (once).

    Returns the DKIM DNS TXT record (name, value) to print, or ``None`` when all of it existed.
    """
    if session.scalar(select(Campaign.id).where(Campaign.name == CAMPAIGN_NAME)) is not None:
        record = session.scalar(select(SendingDomain).where(SendingDomain.domain == DEMO_DOMAIN))
        return domains.dns_txt(record) if record is not None else None
    contact_list = session.scalar(select(ContactList).where(ContactList.name == LIST_NAME))
    if contact_list is None:
        contact_list = audiences.create_list(
            session, name=LIST_NAME, description="Everyone with an address from the shop and the café's forms."
        )
    ids = list(session.scalars(select(Contact.id).where(Contact.email.is_not(None)).order_by(Contact.id)))
    audiences.add_members(session, list_id=contact_list.id, contact_ids=ids)
    audiences.create_segment(
        session,
        name="Zgoda na newsletter, otwierali w 90 dni",
        description="Consent granted and opened something in the last 90 days.",
        definition={
            "match": "all",
            "rules": [
                {"field": "consent", "purpose": "email_marketing", "op": "is", "value": "granted"},
                {"field": "activity", "event": "opened", "op": "within_days", "days": 90},
            ],
        },
    )
    template = campaigns.create_template(
        session, name="Karta zimowa", subject="{{ workspace.name }}: zimowa karta już jest", html=TEMPLATE_HTML
    )
    record = domains.add_sending_domain(session, domain=DEMO_DOMAIN, secret=secret)
    campaigns.create_campaign(
        session,
        name=CAMPAIGN_NAME,
        purpose_key="email_marketing",
        template_id=template.id,
        from_name="Kawiarnia Zgoda",
        from_email=f"newsletter@{DEMO_DOMAIN}",
        reply_to=f"kontakt@{DEMO_DOMAIN}",
        list_id=contact_list.id,
        language="pl",
    )
    confirmation = campaigns.create_template(
        session,
        name="Potwierdzenie zapisu",
        subject="Potwierdź zapis do newslettera {{ workspace.name }}",
        html=CONFIRMATION_HTML,
    )
    campaigns.create_campaign(
        session,
        name=CONSENT_REQUEST_NAME,
        kind=CampaignKind.CONSENT_REQUEST,
        purpose_key="email_marketing",
        template_id=confirmation.id,
        from_name="Kawiarnia Zgoda",
        from_email=f"newsletter@{DEMO_DOMAIN}",
        list_id=contact_list.id,
        language="pl",
    )
    return domains.dns_txt(record)
