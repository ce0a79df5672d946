"""Intake paths: raw messages (a bounce mailbox over IMAP, a Maildir, files) and provider events, as observations.

A ``mailto:unsubscribe+<ref>@<bounce domain>`` message (the ``List-Unsubscribe`` mailto) reaching the
bounce mailbox is an unsubscribe too.
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from zgoda.core.db import Database
from zgoda.core.tenancy import Actor, bind_scope
from zgoda.feedback.kinds import SEND_REF_PATTERN, FeedbackKind
from zgoda.feedback.parsing import FeedbackReport, iter_messages, parse_message
from zgoda.feedback.providers import ProviderEvent
from zgoda.feedback.service import Applied, Observation, apply, message_dedupe_key

log = logging.getLogger("zgoda.feedback")

_MAILTO_UNSUBSCRIBE = re.compile(rf"unsubscribe\+({SEND_REF_PATTERN})@", re.IGNORECASE)
_ADDRESS_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To")


def mailto_unsubscribe_ref(raw: bytes) -> str | None:
    """The send ref of a message sent to ``unsubscribe+<ref>@...``, or ``None``."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536])
    for name in _ADDRESS_HEADERS:
        for value in headers.get_all(name) or []:
            match = _MAILTO_UNSUBSCRIBE.search(str(value))
            if match:
                return match.group(1).lower()
    return None


def observations_from_message(raw: bytes, *, bounce_domain: str | None = None) -> list[Observation]:
    """What one inbound message tells us, one observation per recipient (none for an auto-reply)."""
    ref = mailto_unsubscribe_ref(raw)
    if ref is not None:
        return [
            Observation(
                kind=FeedbackKind.UNSUBSCRIBE,
                send_ref=ref,
                dedupe_key=message_dedupe_key(raw, "mailto"),
                via="mailto",
            )
        ]
    return [
        _from_report(report, raw)
        for report in parse_message(raw, bounce_domain=bounce_domain)
        if report.action != "delayed"  # a delay notice: the MTA still tries; only a final failure is a bounce
    ]


def _from_report(report: FeedbackReport, raw: bytes) -> Observation:
    return Observation(
        kind=report.kind,
        send_ref=report.send_ref,
        dedupe_key=message_dedupe_key(raw, report.recipient),
        recipient=report.recipient,
        bounce_class=report.bounce_class,
        reason=report.reason.value if report.reason else None,
        status=report.status,
        feedback_type=report.feedback_type,
        via="mailbox",
        detail={"diagnostic": (report.diagnostic or "")[:300], "format": report.format},
    )


def observation_from_provider(event: ProviderEvent) -> Observation:
    """A provider's webhook event as an observation (its event id is the dedupe key)."""
    return Observation(
        kind=event.kind,
        send_ref=event.send_ref,
        dedupe_key=event.dedupe_key,
        recipient=event.recipient,
        occurred_at=event.occurred_at,
        bounce_class=event.bounce_class,
        reason=event.reason.value if event.reason else None,
        status=event.status,
        feedback_type=event.feedback_type,
        via=event.provider,
        detail={"diagnostic": (event.diagnostic or "")[:300], "provider_message_id": event.provider_message_id},
    )


@dataclass
class IngestReport:
    """What an intake run did: messages read, observations by outcome."""

    messages: int = 0
    unreadable: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    ignored_why: Counter[str] = field(default_factory=Counter)

    def add(self, applied: Applied) -> None:
        self.outcomes[applied.outcome] += 1
        if applied.outcome == "ignored":
            self.ignored_why[applied.why] += 1

    def as_json(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "outcomes": dict(self.outcomes),
            "ignored": dict(self.ignored_why),
            "unreadable": self.unreadable,
        }


def ingest_message(database: Database, raw: bytes, report: IngestReport, *, bounce_domain: str | None = None) -> None:
    """Apply one raw message in its own transaction (a bad one never blocks the rest)."""
    report.messages += 1
    with database.transaction() as session:
        bind_scope(session, workspace_id=None, actor=Actor.system("feedback"))
        for observation in observations_from_message(raw, bounce_domain=bounce_domain):
            report.add(apply(session, observation))


def ingest_paths(database: Database, paths: Iterable[Path], *, bounce_domain: str | None = None) -> IngestReport:
    """Apply every message in ``paths`` (.eml files, mbox files, Maildirs); re-reading them changes nothing."""
    report = IngestReport()

    def unreadable(name: str, error: OSError) -> None:
        log.warning("cannot read %s: %s", name, error)
        report.unreadable.append(f"{name}: {error.strerror or error}")

    for path in paths:
        for _name, raw in iter_messages(path, on_error=unreadable):
            ingest_message(database, raw, report, bounce_domain=bounce_domain)
    return report


def poll_maildir(database: Database, maildir: Path, *, bounce_domain: str | None = None) -> IngestReport:
    """Apply every message in the Maildir's ``new/`` and move it to ``cur/`` marked seen (Maildir's own protocol).

    For a bounce domain whose MX delivers into a local Maildir. A message is moved only after it was
    applied, so a crash in between applies it again next time, which changes nothing.
    """
    report = IngestReport()
    new = maildir / "new"
    if not new.is_dir():
        return report
    for path in sorted(new.iterdir()):
        if not path.is_file():
            continue
        try:
            raw = path.read_bytes()
        except OSError as error:
            report.unreadable.append(f"{path.name}: {error.strerror or error}")
            continue
        ingest_message(database, raw, report, bounce_domain=bounce_domain)
        path.rename(maildir / "cur" / f"{path.name}:2,S")
    return report


@dataclass(frozen=True)
class ImapSettings:
    host: str
    username: str
    password: str
    port: int = 993
    security: str = "tls"  # "tls", "starttls" or "none" (a loopback test server only)
    folder: str = "INBOX"


def poll_imap(database: Database, imap: ImapSettings, *, bounce_domain: str | None = None) -> IngestReport:
    """Read unseen messages from the bounce mailbox, apply them, and mark each seen once applied."""
    report = IngestReport()
    client: imaplib.IMAP4
    if imap.security == "tls":
        client = imaplib.IMAP4_SSL(imap.host, imap.port, ssl_context=ssl.create_default_context())
    else:
        client = imaplib.IMAP4(imap.host, imap.port)
        if imap.security == "starttls":
            client.starttls(ssl_context=ssl.create_default_context())
    try:
        client.login(imap.username, imap.password)
        client.select(imap.folder)
        _, data = client.uid("SEARCH", "UNSEEN")
        for uid in (data[0] or b"").split():
            _, fetched = client.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
            raw = next((part[1] for part in fetched if isinstance(part, tuple)), b"")
            ingest_message(database, raw, report, bounce_domain=bounce_domain)
            client.uid("STORE", uid.decode(), "+FLAGS", "(\\Seen)")
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            log.warning("IMAP logout failed", exc_info=True)
    return report
