"""Amazon SES notifications delivered by email (an SNS email subscription): a JSON body, not a DSN.

``bounceType`` ``Transient`` is soft (``MailboxFull``, ``MessageTooLarge``, ``ContentRejected`` and
``AttachmentRejected`` name the reason); ``Permanent`` is classified from the recipient's status and
diagnostic like any bounce, and is hard when those name no reason (SES's own advice: remove the address).
Complaints carry ``complaintFeedbackType`` as the feedback type.
"""

from __future__ import annotations

import json
import re
from typing import Any

from zgoda.feedback.kinds import BounceClass, BounceReason, FeedbackKind
from zgoda.feedback.parsing import refs
from zgoda.feedback.parsing.classify import classify, find_smtp_code, normalise_status
from zgoda.feedback.parsing.context import Context
from zgoda.feedback.parsing.mime import Headers, one_line
from zgoda.feedback.parsing.report import FeedbackReport

_JSON_LIMIT = 256 * 1024
_SES_RE = re.compile(rb"notificationType|bm90aWZpY2F0aW9uVHlwZ")  # also its base64 spelling
_TRANSIENT_REASONS = {
    "mailboxfull": BounceReason.MAILBOX_FULL,
    "messagetoolarge": BounceReason.MESSAGE_TOO_LARGE,
    "contentrejected": BounceReason.CONTENT_REJECTED,
    "attachmentrejected": BounceReason.CONTENT_REJECTED,
}


def read(context: Context) -> list[FeedbackReport] | None:
    """The reports of an SES notification email, or None when the body is not one."""
    if context.raw and not context.mentions(_SES_RE):
        return None
    text = context.report_text.strip()
    if "notificationType" not in text[:_JSON_LIMIT]:
        return None
    document = _load(text[:_JSON_LIMIT])
    if document is None:
        return None
    kind = str(document.get("notificationType", "")).lower()
    mail = document.get("mail")
    if not isinstance(mail, dict):
        mail = {}
    original = _mail_headers(mail)
    ref = context.ref_from_original(original) or context.envelope_ref
    message_id = refs.original_message_id(original)
    if kind == "bounce" and isinstance(document.get("bounce"), dict):
        return _bounces(document["bounce"], ref, message_id) or None
    if kind == "complaint" and isinstance(document.get("complaint"), dict):
        complaint = document["complaint"]
        feedback_type = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        return [
            FeedbackReport(
                kind=FeedbackKind.COMPLAINT,
                recipient=_address(entry),
                feedback_type=feedback_type,
                send_ref=ref,
                original_message_id=message_id,
                format="ses",
            )
            for entry in _list(complaint.get("complainedRecipients"))
        ] or None
    return None


def _load(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    if start == -1:
        return None
    try:
        document = json.loads(text[start : text.rfind("}") + 1])
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("Message"), str):
        # the SNS envelope: the notification itself is a JSON string inside it
        try:
            document = json.loads(document["Message"])
        except ValueError:
            return None
    return document if isinstance(document, dict) else None


def _list(value: object) -> list[dict[str, Any]]:
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _address(entry: dict[str, Any]) -> str | None:
    value = entry.get("emailAddress")
    return str(value).strip().strip("<>").lower() if value else None


def _mail_headers(mail: dict[str, Any]) -> Headers:
    headers: Headers = {}
    for entry in _list(mail.get("headers")):
        headers.setdefault(str(entry.get("name", "")).lower(), []).append(str(entry.get("value", "")))
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and common.get("messageId"):
        headers.setdefault("message-id", []).append(str(common["messageId"]))
    return headers


def _bounces(bounce: dict[str, Any], ref: str | None, message_id: str | None) -> list[FeedbackReport]:
    bounce_type = str(bounce.get("bounceType", "")).lower()
    sub_type = str(bounce.get("bounceSubType", "")).lower()
    reports: list[FeedbackReport] = []
    for entry in _list(bounce.get("bouncedRecipients")):
        diagnostic = str(entry.get("diagnosticCode") or "")
        if ";" in diagnostic[:20]:
            diagnostic = diagnostic.split(";", 1)[1]
        status = normalise_status(str(entry.get("status") or "")) or normalise_status(diagnostic)
        smtp_code = find_smtp_code(diagnostic.strip())
        action = "delayed" if bounce_type == "transient" else str(entry.get("action") or "failed").lower()
        bounce_class, reason = classify(status, smtp_code, diagnostic, action=action)
        if bounce_type == "transient":
            bounce_class = BounceClass.SOFT
            reason = _TRANSIENT_REASONS.get(sub_type, reason)
        elif bounce_type == "permanent" and reason is BounceReason.OTHER:
            bounce_class = BounceClass.HARD
        reports.append(
            FeedbackReport(
                kind=FeedbackKind.BOUNCE,
                recipient=_address(entry),
                bounce_class=bounce_class,
                reason=reason,
                status=status,
                smtp_code=smtp_code,
                diagnostic=one_line(diagnostic),
                action=action,
                send_ref=ref,
                original_message_id=message_id,
                format="ses",
            )
        )
    return reports
