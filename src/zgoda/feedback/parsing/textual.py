"""Bounces without RFC 3464 structure: the free-text formats real MTAs and providers send.

A message is read as such a bounce when its text carries a marker one of the known formats always writes
(Exim, Sendmail, qmail, Postfix, Exchange/Office 365, Gmail, Yahoo, Lotus Domino, GroupWise, MDaemon,
Courier, Amazon SES, Polish and Russian wordings), or when it comes from a mailer daemon or postmaster
*and* has a bounce-like subject or quotes an SMTP error. The text before the returned original is searched
for recipients (an address alone on its line, ``<address>:`` paragraphs, "delivered to <address>" phrases,
``RCPT TO:<address>``); each recipient's diagnostic is the SMTP reply found after its address, else the
paragraph around it.
"""

from __future__ import annotations

import re

from zgoda.feedback.kinds import FeedbackKind
from zgoda.feedback.parsing import refs
from zgoda.feedback.parsing.classify import classify, find_smtp_code, find_status
from zgoda.feedback.parsing.context import Context
from zgoda.feedback.parsing.mime import ADDRESS, Headers, addresses, first, header_block, lowered, one_line
from zgoda.feedback.parsing.report import FeedbackReport

_MARKERS = re.compile(
    "|".join(
        f"(?P<{name}>{pattern})"
        for name, pattern in (
            ("exim", r"this message was created automatically by mail delivery software"),
            ("sendmail", r"the following addresses? had (?:permanent )?fatal errors|transcript of session follows"),
            ("qmail", r"this is the qmail-send program"),
            (
                "exchange",
                r"delivery has failed to these recipients|your message to \S+ couldn't be delivered|"
                r"diagnostic information for administrators",
            ),
            (
                "gmail",
                r"delivery to the following recipients? (?:failed|has been delayed)|"
                r"the email account that you tried to reach|your message wasn't delivered to",
            ),
            ("yahoo", r"sorry, we were unable to deliver your message"),
            ("postfix", r"this is the mail system at host|i'm sorry to have to inform you that your message"),
            ("domino", r"was not delivered to:"),
            ("groupwise", r"the message that you sent was undeliverable"),
            (
                "mdaemon",
                r"the attached message had (?:permanent|temporary) fatal delivery errors|"
                r"session transcript:",
            ),
            ("courier", r"undeliverable mail\s*\n|delays in delivering your message"),
            ("ses", r"an error occurred while trying to deliver the mail to the following recipients"),
            (
                "polish",
                r"nie udało się dostarczyć|nie można (?:było )?dostarczyć|nie został\w* dostarczon|"
                r"wiadomość nie mogła zostać dostarczona|nie doręczono",
            ),
            ("russian", r"не удалось доставить|не может быть доставлено|не было доставлено"),
            (
                "generic",
                r"message could not be delivered|could not be delivered to one or more|"
                r"message (?:was|has been) (?:returned|rejected) (?:as|because)|permanent error; i've given up|"
                r"delivery (?:to the following recipients? )?(?:has )?failed|undelivered mail returned to sender|"
                r"this is an automatically generated delivery status notification",
            ),
        )
    )
)
_DAEMON_RE = re.compile(
    r"mailer-?daemon|mail-daemon|postmaster|mail delivery (?:subsystem|system|service)|"
    r"microsoftexchange[0-9a-f]*@|mail administrator|system administrator",
    re.IGNORECASE,
)
_SUBJECT_RE = re.compile(
    r"undeliver|undelivered|not (?:been )?delivered|delivery (?:status notification|failure|failed|has failed|"
    r"problem|notification|delayed|error|report)|returned mail|mail delivery failed|failure notice|"
    r"failed delivery|non-?delivery|could not be delivered|delivery_failure|permanent delivery failure|"
    r"mail system error|delayed mail|message delayed|nie doręczono|niedoręczon|niedostarczon|nie dostarczon|"
    r"nie można dostarczyć|zwrot (?:poczty|wiadomo)|не доставлено|недоставлен",
    re.IGNORECASE,
)
_DELAY_RE = re.compile(
    r"this is a warning message only|has not yet been delivered|has been delayed|still being retried|"
    r"will (?:continue to )?(?:retry|try)|delivery delayed|message delayed|delayed mail|temporary failure|"
    r"opóźnion",
)
_AUTO_REPLIED_RE = re.compile(r"auto-replied", re.IGNORECASE)
_ORIGINAL_MARKER_RE = re.compile(
    r"^[ \t]*(?:-{2,}[ \t]*(?:below this line is a copy of the message|this is a copy of the (?:message|body)|"
    r"original message|unsent message|message header follows|returned message|the header of the original|"
    r"forwarded message|headers of the original|wiadomość oryginalna|oryginalna wiadomość|"
    r"исходное сообщение)|original message headers:|content-type: message/rfc822)",
    re.MULTILINE,
)
_LINE_ADDRESS_RE = re.compile(rf"^[ \t]*<?(?:mailto:)?({ADDRESS})>?(?=[ \t]*(?::|\(|<mailto:|\.\.\.|$))", re.M)
_PHRASE_ADDRESS_RE = re.compile(
    rf"(?:delivered to|deliver (?:your |the )?(?:message|mail|e-?mail) to|message to|delivery to|recipients?:|"
    rf"odbiorc\w*:?|adresat\w*:?|rcpt to:|получател\w*:?)\s{{0,12}}<?({ADDRESS})>?",
)
_REPLY_PATTERNS = tuple(
    re.compile(pattern, re.MULTILINE)
    for pattern in (
        r"remote server returned '([^'\n]{3,})'",
        r"remote host said:\s*(\S.*)",
        r"the (?:response|error) (?:from the remote server )?(?:was|is):?\s*(\S.*)",
        r"\(reason:\s*([^)\n]+)\)",
        r"(?:<<<|<--)\s*([45]\d\d[ -].*)",
        r"(?:said|returned|replied|responded|error|response|odpowied\w*(?: serwera)?):\s*([45]\d\d\b.*)",
        r"^[ \t]*(?:host \S+ \[[^\]\n]*\]:\s*)?([45]\d\d[ -]+\S.*)",
        r"\b([45]\d\d[ -]#?[45]\.\d{1,3}\.\d{1,3}\b.*)",
    )
)
_CONTINUATION_CODE_RE = re.compile(r"\s+[45]\d\d-(?:#?[45]\.\d{1,3}\.\d{1,3}\s)?")
_PARAGRAPH_END_RE = re.compile(r"\n[ \t]*\n")
_SEGMENT_LIMIT = 4000


def read(context: Context) -> list[FeedbackReport] | None:
    """The reports of a free-text bounce, or None when the message does not look like one."""
    text = context.report_text
    cut = _ORIGINAL_MARKER_RE.search(lowered(text))
    head = text[: cut.start()] if cut else text
    head = head[:65536]
    low = lowered(head)
    marker = _MARKERS.search(low)
    if marker is None and not _looks_like_bounce(context, head):
        return None
    format_name = marker.lastgroup if marker and marker.lastgroup else "generic"
    original = context.original or (header_block(text[cut.end() :]) if cut else {})
    ref = context.envelope_ref or context.ref_from_original(original)
    message_id = refs.original_message_id(original)
    action = "delayed" if (_DELAY_RE.search(low) or _DELAY_RE.search(context.subject.lower())) else "failed"
    recipients = _candidates(context, head, low) or addresses(" ".join(original.get("to", ())))
    targets: list[str | None] = [*recipients] or [None]
    reports: list[FeedbackReport] = []
    for recipient in targets:
        diagnostic, around = _diagnostic(head, recipient, recipients)
        status = find_status(diagnostic)
        smtp_code = find_smtp_code(diagnostic)
        bounce_class, reason = classify(status, smtp_code, diagnostic, action=action, context=around)
        reports.append(
            FeedbackReport(
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
                format=format_name,
            )
        )
    return reports


def _looks_like_bounce(context: Context, head: str) -> bool:
    headers: Headers = context.headers
    sender = " ".join((first(headers, "from"), first(headers, "sender")))
    daemon = bool(_DAEMON_RE.search(sender))
    bounce_subject = bool(_SUBJECT_RE.search(context.subject))
    if not daemon and _AUTO_REPLIED_RE.search(first(headers, "auto-submitted")):
        return False
    if daemon and bounce_subject:
        return True
    if not (daemon or bounce_subject):
        return False
    return find_smtp_code(head) is not None or find_status(head) is not None


def _candidates(context: Context, head: str, low: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for pattern, text in ((_LINE_ADDRESS_RE, head), (_PHRASE_ADDRESS_RE, low)):
        for match in pattern.finditer(text):
            found.append((match.start(1), match.group(1).lower().strip(".")))
    found.sort()
    recipients: list[str] = []
    for _, address in found:
        if address not in recipients and context.is_recipient_candidate(address):
            recipients.append(address)
    return recipients


def _diagnostic(head: str, recipient: str | None, recipients: list[str]) -> tuple[str, str]:
    """The SMTP reply (or failing that the paragraph) about ``recipient``, and the text around it."""
    segments = _segments(head, recipient, recipients) if recipient else [head[:_SEGMENT_LIMIT]]
    for segment in segments:
        reply = _reply(segment)
        if reply:
            return reply, segment[:1000]
    if not segments:
        segments = [head[:_SEGMENT_LIMIT]]
    segment = segments[0]
    if recipient:
        segment = re.sub(re.escape(recipient), " ", segment, flags=re.IGNORECASE)
    paragraphs = [part.lstrip(" \t\n:<>()").rstrip(" \t\n:") for part in _PARAGRAPH_END_RE.split(segment)]
    text = " ".join(part for part in paragraphs[:3] if part)
    return text[:600], segment[:1000]


def _segments(head: str, recipient: str, recipients: list[str]) -> list[str]:
    """The stretches of text from each mention of ``recipient`` to the next mention of another recipient."""
    mentions: list[tuple[int, str]] = []
    low = lowered(head)
    for address in recipients:
        start = low.find(address)
        while start != -1:
            mentions.append((start, address))
            start = low.find(address, start + len(address))
    mentions.sort()
    segments: list[str] = []
    for index, (start, address) in enumerate(mentions):
        if address != recipient:
            continue
        end = len(head)
        for later, other in mentions[index + 1 :]:
            if other != recipient:
                end = later
                break
        segments.append(head[start : min(end, start + _SEGMENT_LIMIT)])
    return segments


def _reply(segment: str) -> str | None:
    low = lowered(segment)
    for pattern in _REPLY_PATTERNS:
        match = pattern.search(low)
        if match is None:
            continue
        start = match.start(1)
        if pattern is _REPLY_PATTERNS[0]:
            return segment[start : match.end(1)]
        end_match = _PARAGRAPH_END_RE.search(segment, start)
        end = end_match.start() if end_match else len(segment)
        reply = segment[start : min(end, start + 800)]
        return _CONTINUATION_CODE_RE.sub(" ", reply)
    return None
