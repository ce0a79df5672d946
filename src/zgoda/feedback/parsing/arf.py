"""RFC 5965 abuse reports (ARF) and the older Hotmail/JMRP form: one report per complained-about recipient.

Every ``message/feedback-report`` part is one report, wherever it sits (one ``multipart/report``, several
in a ``multipart/mixed``, each in a forwarded ``message/rfc822`` of a digest); it is paired with the first
returned original (``message/rfc822`` or ``text/rfc822-headers``) that follows it in the same container.

The recipient is each ``Original-Rcpt-To``, else the ``To`` of the returned original, else its
``X-HmXmrOriginalRecipient``. ``abuse``, ``fraud``, ``virus``, ``other`` (and unknown types) are complaints;
``not-spam`` and ``auth-failure`` are reported with kind ``not_feedback`` and their ``feedback_type``: neither
says the recipient objects, and a complaint suppresses the address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from zgoda.feedback.kinds import FeedbackKind
from zgoda.feedback.parsing import refs
from zgoda.feedback.parsing.context import Context, original_headers
from zgoda.feedback.parsing.mime import (
    MAX_PARTS,
    ORIGINAL_TYPES,
    Headers,
    addresses,
    children,
    content_type,
    fields_of,
    first,
    one_line,
)
from zgoda.feedback.parsing.report import FeedbackReport

FEEDBACK_TYPE = "message/feedback-report"
NOT_COMPLAINTS = frozenset({"not-spam", "auth-failure"})
JMRP_HEADER = "x-hmxmroriginalrecipient"
_FEEDBACK_RE = re.compile(rb"feedback-report", re.IGNORECASE)
_JMRP_RE = re.compile(rb"x-hmxmroriginalrecipient", re.IGNORECASE)


@dataclass
class _Entry:
    fields: Headers
    original: Headers | None = None


def read(context: Context) -> list[FeedbackReport] | None:
    """The reports of every feedback-report part, or None when there is none."""
    if context.raw and not context.mentions(_FEEDBACK_RE):
        return None
    entries = _entries(context.message)
    if not entries:
        return None
    reports: list[FeedbackReport] = []
    for entry in entries:
        reports.extend(_reports(context, entry))
    return reports


def read_jmrp(context: Context) -> list[FeedbackReport] | None:
    """A complaint that only returns the original with ``X-HmXmrOriginalRecipient`` (old Hotmail JMRP)."""
    if context.raw and not context.mentions(_JMRP_RE):
        return None
    reports: list[FeedbackReport] = []
    for part in context.original_parts:
        original = original_headers(part)
        if JMRP_HEADER in original:
            entry = _Entry(fields={"feedback-type": ["abuse"]}, original=original)
            reports.extend(_reports(context, entry, format_name="jmrp"))
    return reports or None


def _entries(message: Message) -> list[_Entry]:
    entries: list[_Entry] = []
    stack = [message]
    visited = 0
    while stack and visited < MAX_PARTS:
        node = stack.pop()
        visited += 1
        kids = children(node)
        pending: _Entry | None = None
        descend: list[Message] = []
        for kid in kids:
            kind = content_type(kid)
            if kind == FEEDBACK_TYPE:
                pending = _Entry(fields=_fields(kid))
                entries.append(pending)
            elif kind in ORIGINAL_TYPES and pending is not None and pending.original is None:
                pending.original = original_headers(kid)
            elif children(kid):
                descend.append(kid)
        stack.extend(reversed(descend))
    return entries


def _fields(part: Message) -> Headers:
    fields: Headers = {}
    for block in fields_of(part):
        for name, value in block:
            fields.setdefault(name, []).append(value)
    return fields


def _reports(context: Context, entry: _Entry, format_name: str = "arf") -> list[FeedbackReport]:
    fields = entry.fields
    original = entry.original or {}
    feedback_type = first(fields, "feedback-type").strip().lower() or None
    recipients: list[str | None] = []
    for value in fields.get("original-rcpt-to", ()):
        recipients.extend(address for address in addresses(value) if address not in recipients)
    if not recipients:
        recipients.extend(addresses(" ".join(original.get("to", ()))))
    if not recipients:
        recipients.extend(addresses(" ".join(original.get(JMRP_HEADER, ()))))
    if not recipients:
        recipients.append(None)
    ref = (
        refs.verp_ref(" ".join(fields.get("original-mail-from", ())), context.bounce_domain)
        or context.ref_from_original(original)
        or context.envelope_ref
    )
    kind = FeedbackKind.NOT_FEEDBACK if feedback_type in NOT_COMPLAINTS else FeedbackKind.COMPLAINT
    diagnostic = None
    if feedback_type == "auth-failure":
        diagnostic = one_line(f"auth-failure: {first(fields, 'auth-failure')} {first(fields, 'delivery-result')}")
    source_ip = first(fields, "source-ip").strip("[] ") or None
    reported_domain = first(fields, "reported-domain").strip().lower() or None
    message_id = refs.original_message_id(original)
    return [
        FeedbackReport(
            kind=kind,
            recipient=recipient,
            diagnostic=diagnostic,
            feedback_type=feedback_type,
            send_ref=ref,
            original_message_id=message_id,
            reported_domain=reported_domain,
            source_ip=source_ip,
            format=format_name,
        )
        for recipient in recipients
    ]
