"""RFC 3464 delivery status notifications: one report per failed or delayed recipient.

The recipient is the ``Original-Recipient`` when it is an rfc822 address (the address we sent to), else the
``Final-Recipient``. ``failed`` is a bounce; ``delayed`` is reported as a soft bounce (a transient notice:
the class is always soft, the reason comes from the status, typically ``expired`` or ``network``);
``delivered``, ``relayed`` and ``expanded`` recipients are skipped, and a DSN with nothing else is
``not_feedback``.
"""

from __future__ import annotations

import re

from zgoda.feedback.kinds import FeedbackKind
from zgoda.feedback.parsing import refs
from zgoda.feedback.parsing.classify import classify, find_smtp_code, find_status, normalise_status
from zgoda.feedback.parsing.context import Context
from zgoda.feedback.parsing.mime import addresses, content_type, fields_of, one_line
from zgoda.feedback.parsing.report import FeedbackReport

STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_SKIPPED_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
_DIAGNOSTIC_TYPE_RE = re.compile(r"^\s*[A-Za-z][\w.-]{0,20}\s*;\s*")
_RECIPIENT_FIELDS = ("final-recipient", "original-recipient")
_STATUS_RE = re.compile(rb"delivery-status", re.IGNORECASE)


def read(context: Context) -> list[FeedbackReport] | None:
    """The reports of a DSN, or None when the message has no readable delivery-status part."""
    if context.raw and not context.mentions(_STATUS_RE):
        return None
    parts = [part for part in context.report_parts if content_type(part) in STATUS_TYPES]
    if not parts:
        return None
    per_message: dict[str, str] = {}
    groups: list[dict[str, str]] = []
    for part in parts:
        _split(fields_of(part), per_message, groups)
    if not groups:
        return None
    original = context.original
    ref = (
        context.envelope_ref
        or context.ref_from_original(original)
        or refs.valid_ref(per_message.get("original-envelope-id", "").strip().lower())
    )
    message_id = refs.original_message_id(original)
    reports: list[FeedbackReport] = []
    skipped: list[str] = []
    for fields in groups:
        report = _recipient_report(fields, ref, message_id, original)
        if report is None:
            skipped.append(_action(fields) or "delivered")
        else:
            reports.append(report)
    if reports:
        return reports
    return [
        FeedbackReport(
            kind=FeedbackKind.NOT_FEEDBACK,
            action=skipped[0] if skipped else None,
            send_ref=ref,
            original_message_id=message_id,
            format="dsn",
        )
    ]


def _split(blocks: list[list[tuple[str, str]]], per_message: dict[str, str], groups: list[dict[str, str]]) -> None:
    """Per-message fields into ``per_message``; each recipient's fields into its own dict in ``groups``."""
    for block in blocks:
        if not any(name in _RECIPIENT_FIELDS or name == "action" for name, _ in block):
            for name, value in block:
                per_message.setdefault(name, value)
            continue
        current: dict[str, str] = {}
        for name, value in block:
            if name in _RECIPIENT_FIELDS and name in current:
                groups.append(current)
                current = {}
            current.setdefault(name, value)
        groups.append(current)


def _action(fields: dict[str, str]) -> str | None:
    words = fields.get("action", "").strip().lower().split()
    return words[0].strip(";,()") if words else None


def _recipient(fields: dict[str, str]) -> str | None:
    original = fields.get("original-recipient", "")
    if original.lower().lstrip().startswith("rfc822"):
        found = addresses(original)
        if found:
            return found[0]
    for name in ("final-recipient", "original-recipient", "x-actual-recipient"):
        found = addresses(fields.get(name, ""))
        if found:
            return found[0]
    return None


def _recipient_report(
    fields: dict[str, str], ref: str | None, message_id: str | None, original: dict[str, list[str]]
) -> FeedbackReport | None:
    action = _action(fields)
    status = normalise_status(fields.get("status"))
    diagnostic_field = fields.get("diagnostic-code", "")
    diagnostic = _DIAGNOSTIC_TYPE_RE.sub("", diagnostic_field, count=1) if diagnostic_field else ""
    quoted = find_status(diagnostic)
    if quoted and (status is None or (status.endswith(".0.0") and quoted[0] == status[0])):
        status = quoted
    if action is None:
        action = {"2": "delivered", "4": "delayed"}.get(status[0] if status else "", "failed")
    if action in _SKIPPED_ACTIONS or (status and status.startswith("2")):
        return None
    smtp_code = find_smtp_code(diagnostic)
    bounce_class, reason = classify(status, smtp_code, diagnostic, action=action)
    recipient = _recipient(fields)
    if recipient is None:
        to = addresses(" ".join(original.get("to", ())))
        recipient = to[0] if len(to) == 1 else None
    return FeedbackReport(
        kind=FeedbackKind.BOUNCE,
        recipient=recipient,
        bounce_class=bounce_class,
        reason=reason,
        status=status,
        smtp_code=smtp_code,
        diagnostic=one_line(diagnostic),
        action=action,
        send_ref=ref,
        original_message_id=message_id,
        format="dsn",
    )
