"""Why a message bounced, and whether the address itself is to blame (hard) or not (soft).

The rules, in order (docs/feedback.md has the table):

1. The diagnostic text is matched against phrase patterns, most specific first; the first match is the
   reason. Text refines the status: servers misuse enhanced codes (a spam block sent as ``5.1.1``, an unknown
   user as ``5.4.1 Access denied``), while their words are usually right.
2. Without a matching phrase, the RFC 3463 status gives the reason (``5.1.1`` user unknown, ``5.2.2``
   mailbox full, ``4.4.7`` expired...); without a status, a ``421`` reply means rate limited.
3. Otherwise the reason is ``other``.

The class: a transient failure (status ``4.x.x``, a ``4xx`` reply, or a DSN ``Action: delayed``) is always
soft. Otherwise user unknown, domain unknown and mailbox moved are hard; a disabled mailbox is hard when
the failure is permanent (``5.x.x``/``5xx``); ``other`` is hard only for a permanent addressing status
(``5.1.x``, except ``5.1.7``/``5.1.8``, which are about the sender). Everything else is soft: a block, a
policy, a full mailbox or a time-out is not the address's fault, even with a ``5xx`` code. A wrong soft
costs a retry; a wrong hard loses a contact for good, so doubt goes to soft.
"""

from __future__ import annotations

import re

from zgoda.feedback.kinds import BounceClass, BounceReason

R = BounceReason

# Enhanced status codes (RFC 3463), anywhere in a text: "5.1.1", "#5.1.1", "550-5.1.1"; not inside an IP.
STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
# A 4xx/5xx SMTP reply code at the start of a text (after optional punctuation).
LEADING_CODE_RE = re.compile(r"^[\s'\"(<:#-]*([45]\d\d)(?=[\s-]|$)")
ANY_CODE_RE = re.compile(r"(?<![\w.:/+-])([45][0-5]\d)(?=[ \t-]+#?[45]\.\d|[ \t]+[A-Za-z<]|$)", re.M)

_TEXT_RULES: tuple[tuple[BounceReason, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern))  # matched against lower-cased text: IGNORECASE is several times slower
    for reason, pattern in (
        (
            R.AUTHENTICATION,
            r"(?:spf|dkim|dmarc)\b|unauthenticated|not authenticated|authentication (?:fail|requir|check|"
            r"results)|senderauthenticated|reverse dns|ptr record|5\.7\.2[0-7]\b",
        ),
        (
            R.SPAM_BLOCKED,
            r"spam|junk mail|black ?list|block ?list|rbl\b|dnsbl|spamhaus|spamcop|barracuda|sorbs|uceprotect|"
            r"reputation|bulk (?:mail|e-?mail)|unsolicited|blocked\b|zablokowan|"
            r"niechcian",
        ),
        (
            R.MESSAGE_TOO_LARGE,
            r"message (?:size )?(?:is )?too (?:large|big)|(?:message|msg|mail) size (?:exceeds|limit)|"
            r"exceeds (?:the )?(?:fixed )?(?:maximum|max\.?|size limit)(?: allowed)?(?: message)? size|"
            r"maximum message size|message exceeds|too large|mesgtoobig|za duża|zbyt du[żz]|rozmiar wiadomo",
        ),
        (
            R.MAILBOX_FULL,
            r"quota|mailbox (?:is )?full|mailbox full|full mailbox|inbox (?:is )?full|mailboxfull|"
            r"(?:mailbox|account|storage) (?:size )?(?:limit )?(?:exceeded|exceeds)|exceeded (?:the )?storage|"
            r"insufficient (?:disk |system )?(?:space|storage)|out of (?:disk )?space|not enough (?:space|storage)|"
            r"skrzynk\w* (?:odbiorcy )?(?:jest )?(?:pełna|przepełniona)|przepełnion|brak miejsca|"
            r"ящик (?:переполнен|полон)|переполнен",
        ),
        (
            R.MAILBOX_MOVED,
            r"(?:mailbox|user|address|recipient) (?:has )?moved|moved permanently|no longer (?:at|with|works) |"
            r"address (?:has )?changed",
        ),
        (
            R.MAILBOX_DISABLED,
            r"disabled|deactivated|inactive|suspended|account (?:is |has been )?(?:closed|locked|expired|terminated)|"
            r"mailbox (?:is )?(?:closed|locked|not active)|konto (?:jest )?(?:zablokowane|nieaktywne|wyłączone|"
            r"zawieszone)|nieaktywn|отключен",
        ),
        (
            R.DOMAIN_UNKNOWN,
            r"host or domain name not found|domain (?:name )?not found|no such domain|domain (?:\S+ )?does not exist|"
            r"couldn't find any host|could not find any host|host not found|host unknown|unknown (?:host|domain)|"
            r"unrouteable|unroutable|null mx|does not accept (?:e-?)?mail|nxdomain|nonexistentdomain|"
            r"nonexistent domain|name or service not known|no (?:mx|mail exchanger)|domena nie istnieje|"
            r"nieznan\w* domen|домен не существует",
        ),
        (
            R.USER_UNKNOWN,
            r"user unknown|unknown user|no such (?:user|mailbox|recipient|address|account|local user|person)|"
            r"(?:user|mailbox|recipient|address|account|addressee)(?: \S+)? (?:does not|doesn't|did not) exist|"
            r"does not exist|doesn't exist|(?:user|recipient|mailbox|address|addressee) (?:not found|not known|"
            r"unknown)|recipientnotfound|recipnotfound|invalid (?:recipient|mailbox|address|user|e-?mail address)|"
            r"unknown (?:recipient|mailbox|address|local[- ]part)|not listed in (?:domino|public name)|"
            r"no mailbox here|mailbox (?:not found|unavailable|does not exist)|doesn't have an? .{0,40}account|"
            r"not a valid (?:user|mailbox|recipient)|addressee unknown|bad destination mailbox|"
            r"no longer (?:valid|active|in use|available|exists)|recipient address rejected: access denied|"
            r"wasn't found at|nie istnieje|nieznany (?:użytkownik|odbiorca|adresat)|brak (?:takiego )?(?:użytkownika|"
            r"konta|skrzynki|adresata)|нет такого пользователя|не существует|пользователь не найден",
        ),
        (
            R.EXPIRED,
            r"delivery time expired|retry (?:timeout|time) (?:exceeded|not reached)|message expired|expired|"
            r"too long in (?:the )?queue|in the queue too long|could not be delivered (?:within|for) |"
            r"no more retries|wygas",
        ),
        (
            R.NETWORK,
            r"connection (?:refused|timed out|reset|closed|lost|dropped)|timed out|timeout|no route to host|"
            r"network is unreachable|host (?:is )?unreachable|(?:unable|could not|couldn't|cannot|failed) to connect|"
            r"could not connect|lost connection|dns (?:lookup )?(?:failed|failure|error|timeout)|"
            r"temporary (?:dns|lookup) failure|tls (?:handshake|negotiation) failed|delivery temporarily suspended|"
            r"broken pipe",
        ),
        (
            R.RATE_LIMITED,
            r"too many|rate limit|rate-limit|ratelimit|throttl|too fast|too quickly|try (?:again )?later|"
            r"temporarily deferred|deferred due to|greylist|graylist|slow down|zbyt wiele|za dużo",
        ),
        (
            R.CONTENT_REJECTED,
            r"content|virus|malware|malicious|infected|attachment|banned|phishing|treść|załącznik|wirus",
        ),
        (
            R.POLICY,
            r"policy|policies|not permitted|not allowed|relay(?:ing)? (?:denied|not permitted)|access denied|"
            r"denied|refused|not authori[sz]ed|restricted|prohibited|rejected by|administrative|odrzucon|polityk",
        ),
    )
)

_STATUS_REASONS: dict[str, BounceReason] = {
    "1.1": R.USER_UNKNOWN,
    "1.2": R.DOMAIN_UNKNOWN,
    "1.6": R.MAILBOX_MOVED,
    "1.7": R.POLICY,
    "1.8": R.POLICY,
    "1.10": R.DOMAIN_UNKNOWN,  # RFC 7505 null MX; Office 365 also uses it for unknown users (text decides)
    "2.1": R.MAILBOX_DISABLED,
    "2.2": R.MAILBOX_FULL,
    "2.3": R.MESSAGE_TOO_LARGE,
    "3.4": R.MESSAGE_TOO_LARGE,
    "4.0": R.NETWORK,
    "4.1": R.NETWORK,
    "4.2": R.NETWORK,
    "4.3": R.NETWORK,
    "4.4": R.NETWORK,
    "4.5": R.RATE_LIMITED,
    "4.7": R.EXPIRED,
    "7.13": R.MAILBOX_DISABLED,
    "7.28": R.SPAM_BLOCKED,
    "7.30": R.POLICY,
}
_AUTH_DETAILS = {4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 20, 21, 22, 23, 24, 25, 26, 27, 29}
_HARD_REASONS = {R.USER_UNKNOWN, R.DOMAIN_UNKNOWN, R.MAILBOX_MOVED}


def reason_from_text(text: str | None) -> BounceReason | None:
    """The reason the first matching phrase names, or None."""
    if not text:
        return None
    text = text.lower()
    for reason, pattern in _TEXT_RULES:
        if pattern.search(text):
            return reason
    return None


def reason_from_status(status: str | None, *, transient: bool) -> BounceReason | None:
    """The reason an RFC 3463 status names (``subject.detail``), or None for a generic one."""
    if not status:
        return None
    parts = status.split(".")
    if len(parts) != 3:
        return None
    subject, detail = parts[1], parts[2]
    if subject == "6":
        return R.CONTENT_REJECTED
    if subject == "7":
        number = int(detail) if detail.isdigit() else -1
        if number in _AUTH_DETAILS:
            return R.AUTHENTICATION
        found = _STATUS_REASONS.get(f"7.{number}")
        if found is not None:
            return found
        return R.RATE_LIMITED if transient else R.POLICY
    return _STATUS_REASONS.get(f"{subject}.{int(detail) if detail.isdigit() else detail}")


def find_status(text: str | None) -> str | None:
    """The first enhanced status code in ``text`` ("5.1.1"), normalised, or None."""
    if not text:
        return None
    match = STATUS_RE.search(text)
    if match is None:
        return None
    return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"


def find_smtp_code(text: str | None) -> int | None:
    """The 4xx/5xx reply code a diagnostic starts with (or, failing that, the first one it quotes)."""
    if not text:
        return None
    match = LEADING_CODE_RE.search(text) or ANY_CODE_RE.search(text)
    return int(match.group(1)) if match else None


def normalise_status(value: str | None) -> str | None:
    """``Status: 5.1.1 (user unknown)`` → ``5.1.1``; anything else → None."""
    if not value:
        return None
    match = STATUS_RE.search(value)
    if match is None:
        return None
    return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"


def is_transient(status: str | None, smtp_code: int | None, action: str | None) -> bool:
    """Whether the failure is temporary: a 4.x.x status, else a 4xx code, or a DSN ``delayed`` action."""
    if action == "delayed":
        return True
    if status:
        return status.startswith("4")
    if smtp_code:
        return smtp_code // 100 == 4
    return False


def is_permanent(status: str | None, smtp_code: int | None) -> bool:
    """Whether a code says the failure is permanent (5.x.x, else 5xx)."""
    if status:
        return status.startswith("5")
    return bool(smtp_code and smtp_code // 100 == 5)


def classify(
    status: str | None,
    smtp_code: int | None,
    diagnostic: str | None,
    *,
    action: str | None = None,
    context: str | None = None,
) -> tuple[BounceClass, BounceReason]:
    """The class and reason of one bounced recipient (the rules are in this module's docstring).

    ``context`` is more text about the failure (the paragraph around a non-standard bounce's address); it is
    read only when the diagnostic itself names no reason.
    """
    transient = is_transient(status, smtp_code, action)
    reason = reason_from_text(diagnostic) or reason_from_status(status, transient=transient)
    if reason is None:
        reason = reason_from_text(context)
    if reason is None and not status and smtp_code == 421:
        reason = R.RATE_LIMITED
    if reason is None:
        reason = R.OTHER
    return _class_of(reason, status, smtp_code, transient), reason


def _class_of(reason: BounceReason, status: str | None, smtp_code: int | None, transient: bool) -> BounceClass:
    if transient:
        return BounceClass.SOFT
    if reason in _HARD_REASONS:
        return BounceClass.HARD
    if reason is R.MAILBOX_DISABLED:
        return BounceClass.HARD if is_permanent(status, smtp_code) else BounceClass.SOFT
    if reason is R.OTHER and status and status.startswith("5.1.") and status not in {"5.1.7", "5.1.8"}:
        return BounceClass.HARD
    return BounceClass.SOFT
