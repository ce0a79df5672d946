"""``parse_message``: what one raw inbound message is, per recipient. It never raises."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import compat32

from zgoda.feedback.kinds import FeedbackKind
from zgoda.feedback.parsing import arf, autoreply, dsn, refs, ses, textual
from zgoda.feedback.parsing.context import Context
from zgoda.feedback.parsing.mime import addresses, content_param, content_type, first
from zgoda.feedback.parsing.report import FeedbackReport

# Every report format puts its machine-readable parts before the returned original, so only the first
# MAX_PARSE_BYTES are parsed: what is cut is the tail of a returned copy (a 30 MB attachment, say).
MAX_PARSE_BYTES = 2 * 1024 * 1024
_PARSER = BytesParser(policy=compat32)


def parse_message(raw: bytes, *, bounce_domain: str | None = None) -> list[FeedbackReport]:
    """Classify one raw inbound message: one report per recipient it is about.

    A message that is not feedback gives one ``not_feedback`` report without a recipient. Any input at all
    (empty, binary, truncated, in any charset or line ending) gives a result; nothing is raised.
    ``bounce_domain`` restricts VERP refs to ``bounces+<ref>@<bounce_domain>``.
    """
    try:
        return _parse(raw, bounce_domain)
    except Exception as error:  # noqa: BLE001 - the contract is a result for any input, so nothing escapes
        return [
            FeedbackReport(
                kind=FeedbackKind.NOT_FEEDBACK,
                diagnostic=f"unreadable message ({type(error).__name__})",
                format="unreadable",
            )
        ]


def _parse(raw: bytes, bounce_domain: str | None) -> list[FeedbackReport]:
    data = bytes(raw[:MAX_PARSE_BYTES])
    head = data[:65536]
    if b"\r" in head and b"\n" not in head:
        data = data.replace(b"\r", b"\n")
    context = Context(_PARSER.parsebytes(data), bounce_domain, data)
    for reader in (arf.read, dsn.read, ses.read, textual.read, arf.read_jmrp):
        reports = reader(context)
        if reports:
            return reports
    ref = context.envelope_ref or refs.reply_ref(context.headers)
    if _is_receipt(context):
        return [FeedbackReport(kind=FeedbackKind.NOT_FEEDBACK, send_ref=ref, format="mdn")]
    if autoreply.is_auto_reply(context.headers, context.subject):
        sender = addresses(first(context.headers, "from")) or addresses(first(context.headers, "reply-to"))
        return [
            FeedbackReport(
                kind=FeedbackKind.AUTO_REPLY,
                recipient=sender[0] if sender else None,
                diagnostic=context.subject[:500] or None,
                send_ref=ref,
                format="auto_reply",
            )
        ]
    return [FeedbackReport(kind=FeedbackKind.NOT_FEEDBACK, send_ref=ref)]


def _is_receipt(context: Context) -> bool:
    """A read receipt (RFC 8098 MDN): automatic, but neither a reply from a person nor feedback."""
    message = context.message
    return content_type(message) == "multipart/report" and content_param(message, "report-type") == (
        "disposition-notification"
    )
