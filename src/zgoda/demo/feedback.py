"""The demo's sent campaign and what came back, made by the real paths.

An autumn campaign is sent through a local SMTP sink (into the demo's Maildir, so Caught mail shows
it); then bounces (a DSN and an Exim-style text bounce) and an ARF complaint are parsed by the real
classifier and applied by the real intake, two recipients use the RFC 8058 one-click unsubscribe, and
the contacts who allowed profiling open and click. The suppression list, the withdrawals in the ledger
and the campaign's figures all come from there.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from zgoda.accounts import service as accounts
from zgoda.audiences.models import ContactList
from zgoda.campaigns import sending
from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import Campaign, Send, SendStatus
from zgoda.campaigns.tracking import tracking_consents
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.db import Database
from zgoda.core.settings import Settings
from zgoda.core.tenancy import Actor, bind_scope
from zgoda.delivery.sink import SmtpSink
from zgoda.delivery.transport import SmtpSettings
from zgoda.feedback.intake import IngestReport, ingest_message
from zgoda.feedback.kinds import FeedbackKind
from zgoda.feedback.service import Observation, apply

SENT_CAMPAIGN = "Jesienna kawa 2026"
AUTUMN_HTML = """<!doctype html>
<html lang="pl"><head><style>h1 { color: #8a4b1f; }</style></head>
<body>
  <h1>Jesień w {{ workspace.name }}</h1>
  <p>{{ contact.first_name | default('Drogi Gościu') }}, nowa kawa z Kolumbii jest już na miejscu.</p>
  <p><a href="https://kawiarnia.zgoda.example/jesien">Zobacz jesienną kartę</a></p>
</body></html>"""


def _dsn(ref: str, recipient: str, domain: str) -> bytes:
    return f"""From: MAILER-DAEMON@mx.poczta.example.net
To: bounces+{ref}@{domain}
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-1"

--dsn-1
Content-Type: text/plain; charset=utf-8

This is the mail system at host mx.poczta.example.net. Your message could not be delivered.

--dsn-1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.poczta.example.net

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown in virtual mailbox table

--dsn-1
Content-Type: text/rfc822-headers

Message-ID: <{ref}@{domain}>
X-Zgoda-Ref: {ref}
To: {recipient}

--dsn-1--
""".replace("\n", "\r\n").encode()


def _full_mailbox(ref: str, recipient: str, domain: str) -> bytes:
    return f"""From: Mail Delivery System <Mailer-Daemon@mail.example.org>
To: bounces+{ref}@{domain}
Subject: Mail delivery failed: returning message to sender
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {recipient}
    host mail.example.org [192.0.2.25]
    SMTP error from remote mail server after RCPT TO:<{recipient}>:
    552 5.2.2 Mailbox full: quota exceeded

------ This is a copy of the message, including all the headers. ------

Message-ID: <{ref}@{domain}>
X-Zgoda-Ref: {ref}
""".replace("\n", "\r\n").encode()


def _arf(ref: str, recipient: str, domain: str) -> bytes:
    return f"""From: feedback@fbl.example.net
To: bounces+{ref}@{domain}
Subject: FW: Abuse report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="arf-1"

--arf-1
Content-Type: text/plain

This is an email abuse report for an email message received from IP 192.0.2.10.

--arf-1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Rcpt-To: {recipient}
Source-IP: 192.0.2.10

--arf-1
Content-Type: message/rfc822

From: Kawiarnia Zgoda <newsletter@{domain}>
To: {recipient}
Subject: Jesień w kawiarni
Message-ID: <{ref}@{domain}>
X-Zgoda-Ref: {ref}

(body removed)
--arf-1--
""".replace("\n", "\r\n").encode()


def seed_sent_campaign(database: Database, *, settings: Settings, workspace_slug: str, maildir: Path) -> bool:
    """Send the autumn campaign to the demo sink and feed back what mail systems would say (once)."""
    with database.transaction() as session:
        accounts.scope_to_workspace(session, workspace_slug, Actor.system("demo"))
        if session.scalar(select(Campaign.id).where(Campaign.name == SENT_CAMPAIGN)) is not None:
            return False
        newsletter = session.scalars(select(ContactList).order_by(ContactList.id)).first()
        if newsletter is None:
            return False
        template = campaigns.create_template(
            session, name="Jesienna kawa", subject="Jesień w {{ workspace.name }}", html=AUTUMN_HTML
        )
        campaign = campaigns.create_campaign(
            session,
            name=SENT_CAMPAIGN,
            purpose_key="email_marketing",
            template_id=template.id,
            from_name="Kawiarnia Zgoda",
            from_email="newsletter@kawiarnia.zgoda.example",
            list_id=newsletter.id,
            language="pl",
        )
        campaigns.send_campaign(session, campaign_id=campaign.id)
        campaign_id = campaign.id
    sending.prepare(database, campaign_id)
    with SmtpSink(maildir) as sink:
        sending.run(database, campaign_id, settings, smtp=SmtpSettings(host=sink.host, port=sink.port), connections=2)
    _feed_back(database, workspace_slug, campaign_id)
    return True


def _feed_back(database: Database, workspace_slug: str, campaign_id: int) -> None:
    with database.transaction() as session:
        accounts.scope_to_workspace(session, workspace_slug, Actor.system("demo"))
        rows = session.execute(
            select(Send, Contact)
            .join(Contact, Contact.id == Send.contact_id)
            .where(Send.campaign_id == campaign_id, Send.status == SendStatus.SENT)
            .order_by(Send.id)
        ).all()
        sent = [(send.ref or "", contact.email or "", send, contact) for send, contact in rows]
    domain = "kawiarnia.zgoda.example"
    report = IngestReport()
    feedback_messages = []
    if len(sent) >= 6:
        feedback_messages = [
            _dsn(sent[0][0], sent[0][1], domain),
            _full_mailbox(sent[1][0], sent[1][1], domain),
            _arf(sent[2][0], sent[2][1], domain),
        ]
    for raw in feedback_messages:
        ingest_message(database, raw, report)
    now = utcnow()
    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("demo"))
        for index, (ref, _email, send, _contact) in enumerate(sent):
            if index < 3:
                continue
            apply(session, Observation(FeedbackKind.DELIVERY, ref, f"demo-delivery:{send.id}", via="smtp"))
            if index in (3, 4):
                apply(
                    session,
                    Observation(
                        FeedbackKind.UNSUBSCRIBE,
                        ref,
                        f"demo-one-click:{send.id}",
                        via="one_click",
                        occurred_at=now + timedelta(minutes=index),
                        user_agent="Mozilla/5.0 (one-click unsubscribe by the mailbox provider)",
                    ),
                )
    with database.transaction() as session:
        accounts.scope_to_workspace(session, workspace_slug, Actor.system("demo"))
        tracked = tracking_consents(session, [contact.id for _, _, _, contact in sent[5:]])
        for ref, _email, send, contact in sent[5:]:
            if contact.id not in tracked:
                continue
            apply(session, Observation(FeedbackKind.OPEN, ref, f"demo-open:{send.id}", via="tracking"))
            if send.id % 2 == 0:
                apply(session, Observation(FeedbackKind.CLICK, ref, f"demo-click:{send.id}", via="tracking"))
