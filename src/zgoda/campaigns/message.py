"""One message as the exact bytes handed to the transport: multipart/alternative, UTF-8, quoted-printable, CRLF.

Assembled by hand (``binascii.b2a_qp`` for the bodies, RFC 2047 base64 words for non-ASCII header text,
``email.utils.format_datetime`` for the date): over ten times faster than building and serialising
``email.message.EmailMessage`` objects (``benchmarks/render_messages.py`` measures both), and every
byte is decided here.
Tests read the output back with ``email.policy.default`` and compare headers and both decoded parts.

Headers written: From, To, Subject, Date, Message-ID, MIME-Version, Reply-To (when given),
List-Unsubscribe (``<https://…>, <mailto:…>``, https first: RFC 2369 and RFC 8058), List-Unsubscribe-Post
(``List-Unsubscribe=One-Click``), List-Id (RFC 2919), Feedback-ID, X-Zgoda-Ref, then the extra headers.
The return path is the envelope sender (SMTP ``MAIL FROM``): no Return-Path header is written, the
receiving server adds it. A CR or LF (or any other control character) in any header value is refused
with ``InvalidInput`` naming the field: header injection is impossible by construction.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime

from zgoda.campaigns.rendering import RenderedParts
from zgoda.core.errors import InvalidInput

MAX_LINE_OCTETS = 998
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_URI = re.compile(r"[!#-;=?-~]+")  # printable ASCII without space, quote and angle brackets
_WORD_OCTETS = 42
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}")
_MESSAGE_ID = re.compile(r"<?([!-;=?-~]+@[!-;=?-Z^-~]+)>?")  # printable ASCII, no < > [ ] inside
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_ATEXT_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")
_RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "MIME-Version", "Reply-To", "Sender",
        "Return-Path", "Received", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Feedback-ID",
        "X-Zgoda-Ref", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "DKIM-Signature",
    )
)  # fmt: skip


# RFC 8058 wants https; plain http is allowed only to this machine (the demo, a laptop), never to a real host.
_LOOPBACK_HTTP = re.compile(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/")


def compose_message(
    *,
    parts: RenderedParts,
    from_address: str,
    from_name: str | None,
    to_address: str,
    reply_to: str | None,
    message_id: str,
    return_path: str,
    list_unsubscribe_https: str,
    list_unsubscribe_mailto: str | None,
    list_id: str | None,
    feedback_id: str | None,
    ref: str,
    extra_headers: Mapping[str, str] | None = None,
    date: datetime | None = None,
) -> bytes:
    """The message's bytes (CRLF, 7-bit) from parts that already carry the footer (``render(footer=...)``).

    ``return_path`` is checked like any address but not written: it is the envelope sender the transport
    gives as ``MAIL FROM``. Raises ``InvalidInput`` naming the field for anything that cannot go in a header.
    """
    if not parts.footer_attached:
        raise InvalidInput("the message has no platform footer: render it with footer=FooterContext(...)", field="html")
    _address(return_path, "return_path")
    subject = _checked(parts.subject, "subject")
    if not subject.strip():
        raise InvalidInput("the subject is empty", field="subject")
    https_url = _checked(list_unsubscribe_https, "list_unsubscribe_https")
    if not (https_url.startswith("https://") or _LOOPBACK_HTTP.match(https_url)) or not _is_uri(https_url):
        raise InvalidInput(
            "list_unsubscribe_https must be an https:// address without spaces or <>", field="list_unsubscribe_https"
        )
    unsubscribe = [f"<{https_url}>"]
    if list_unsubscribe_mailto is not None:
        mailto = _checked(list_unsubscribe_mailto, "list_unsubscribe_mailto")
        if not mailto.startswith("mailto:") or not _is_uri(mailto):
            raise InvalidInput("list_unsubscribe_mailto must be a mailto: address", field="list_unsubscribe_mailto")
        unsubscribe.append(f"<{mailto}>")

    id_match = _MESSAGE_ID.fullmatch(_checked(message_id, "message_id"))
    if id_match is None:
        raise InvalidInput("message_id must look like <unique@domain>", field="message_id")
    when = date or datetime.now(UTC)
    if when.tzinfo is None:
        raise InvalidInput("date must carry a time zone", field="date")
    boundary = "=_zgoda_" + hashlib.sha256(id_match.group(1).encode()).hexdigest()[:32]

    lines = [
        _mailbox_header("From", from_address, from_name, "from_address"),
        f"To: {_address(to_address, 'to_address')}",
        _text_header("Subject", subject, "subject"),
        f"Date: {format_datetime(when.astimezone(UTC), usegmt=True)}",
        f"Message-ID: <{id_match.group(1)}>",
        "MIME-Version: 1.0",
    ]
    if reply_to is not None:
        lines.append(f"Reply-To: {_address(reply_to, 'reply_to')}")
    lines.append("List-Unsubscribe: " + ",\r\n ".join(unsubscribe))
    lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    if list_id is not None:
        lines.append(_list_id(list_id))
    if feedback_id is not None:
        lines.append(_ascii_header("Feedback-ID", feedback_id, "feedback_id"))
    lines.append(_ascii_header("X-Zgoda-Ref", ref, "ref"))
    for name, value in (extra_headers or {}).items():
        if not _FIELD_NAME.fullmatch(name) or name.lower() in _RESERVED_HEADERS:
            raise InvalidInput(f"extra header {name!r} is not allowed", field="extra_headers")
        lines.append(_text_header(name, _checked(value, f"extra_headers.{name}"), f"extra_headers.{name}"))
    lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
    for line in lines:
        for physical in line.split("\r\n"):
            if len(physical) > MAX_LINE_OCTETS:
                raise InvalidInput(f"the header {line.split(':', 1)[0]} is too long", field=line.split(":", 1)[0])
    head = "\r\n".join(lines).encode("ascii")
    return b"".join(
        (
            head,
            b"\r\n\r\n--",
            boundary.encode(),
            b'\r\nContent-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n',
            _quoted_printable(parts.text),
            b"\r\n--",
            boundary.encode(),
            b'\r\nContent-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n',
            _quoted_printable(parts.html),
            b"\r\n--",
            boundary.encode(),
            b"--\r\n",
        )
    )


def _quoted_printable(text: str) -> bytes:
    """UTF-8, CRLF lines, quoted-printable (76-octet lines; ``=`` never followed by ``_``, so no boundary).

    Encoded line by line, each line once per process (:data:`_QP_LINES`): a campaign's messages share
    most of their lines (only the merge fields and the footer's links differ), and quoted-printable
    restarts at every line break, so the lines' encodings joined are the whole text's encoding
    (tests/campaigns/test_message_encoding.py). Each line is encoded with its CRLF, so that
    ``b2a_qp`` writes CRLF soft breaks and escapes trailing white space exactly as in the whole text.
    The last line ends the text, not a line, and is encoded as such (white space at the very end is
    escaped where it stands, which may move the soft break before it); its soft breaks made CRLF.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    cache = _QP_LINES
    known = cache.lines
    encoded: list[bytes] = []
    lines = text.split("\n")
    last = lines.pop()
    for line in lines:
        found = known.get(line)
        if found is None:
            found = binascii.b2a_qp((line + "\r\n").encode("utf-8"), istext=True)
            cache.keep(line, found)
        encoded.append(found)
    # with no line break in its input b2a_qp breaks lines with a bare LF, and "\n" is nowhere else in its output
    encoded.append(binascii.b2a_qp(last.encode("utf-8"), istext=True).replace(b"=\n", b"=\r\n"))
    return b"".join(encoded)


class _LineCache:
    """Encoded lines by line, at most ``limit`` characters and octets of both together: when a line
    would go past it, everything is forgotten and counting starts again (a new campaign's lines, or
    lines that never repeat, such as one long line of personalised HTML)."""

    def __init__(self, limit: int) -> None:
        self.lines: dict[str, bytes] = {}
        self.size = 0
        self.limit = limit

    def keep(self, line: str, encoded: bytes) -> None:
        size = len(line) + len(encoded)
        if self.size + size > self.limit:
            self.clear()
            if size > self.limit:
                return
        self.lines[line] = encoded
        self.size += size

    def clear(self) -> None:
        self.lines.clear()
        self.size = 0


_QP_LINES = _LineCache(4_000_000)  # per process; a few MB at most


def _encoded_words(text: str) -> str:
    """RFC 2047 base64 words of at most 42 UTF-8 octets (68 characters), never splitting a character.

    ``email.header.Header.encode`` does the same several times slower; decoders join adjacent words.
    """
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode("utf-8")) if char > "\x7f" else 1
        if size + width > _WORD_OCTETS:
            words.append(_b_word("".join(chunk)))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk:
        words.append(_b_word("".join(chunk)))
    return "\r\n ".join(words)


def _b_word(text: str) -> str:
    return "=?utf-8?b?" + binascii.b2a_base64(text.encode("utf-8"), newline=False).decode("ascii") + "?="


def _checked(value: str, field: str) -> str:
    if _CONTROL.search(value) or "\u2028" in value or "\u2029" in value or "\x85" in value:
        raise InvalidInput(f"{field} holds a line break or control character", field=field)
    return value


def _is_uri(value: str) -> bool:
    return _URI.fullmatch(value) is not None


def _address(value: str, field: str) -> str:
    """An addr-spec for a header; the domain goes to IDNA, a non-ASCII local part is refused (no SMTPUTF8)."""
    local, at, domain = _checked(value, field).strip().rpartition("@")
    if not at or not _LOCAL_PART.fullmatch(local):
        raise InvalidInput(f"{field} is not an email address this platform can send to: {value!r}", field=field)
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise InvalidInput(f"{field} has an invalid domain: {value!r}", field=field) from None
    if not _DOMAIN.fullmatch(ascii_domain):
        raise InvalidInput(f"{field} has an invalid domain: {value!r}", field=field)
    return f"{local}@{ascii_domain.lower()}"


def _mailbox_header(name: str, address: str, display_name: str | None, field: str) -> str:
    addr = _address(address, field)
    if not display_name or not display_name.strip():
        return f"{name}: {addr}"
    phrase = " ".join(_checked(display_name, "from_name").split())
    if _ATEXT_PHRASE.fullmatch(phrase):
        return f"{name}: {phrase} <{addr}>"
    if phrase.isascii() and "=?" not in phrase:
        quoted = phrase.replace("\\", "\\\\").replace('"', '\\"')
        return f'{name}: "{quoted}" <{addr}>'
    return f"{name}: {_encoded_words(phrase)} <{addr}>"


def _text_header(name: str, value: str, field: str) -> str:
    """An unstructured header: ASCII folded at spaces, anything else (or text that looks encoded) as RFC 2047."""
    _checked(value, field)
    if value.isascii() and "=?" not in value and value == value.strip() and "  " not in value and "\t" not in value:
        return _fold(f"{name}: {value}")
    return f"{name}: " + _encoded_words(value)


def _ascii_header(name: str, value: str, field: str) -> str:
    if not _checked(value, field).isascii() or not value.strip():
        raise InvalidInput(f"{field} must be non-empty ASCII text", field=field)
    return _fold(f"{name}: {value}")


def _list_id(value: str) -> str:
    """``List-Id: phrase <id>`` (RFC 2919); the phrase is encoded when not plain ASCII."""
    match = re.fullmatch(r"(.*?)\s*<([^<>\s]+)>", _checked(value, "list_id").strip())
    phrase, identifier = (match.group(1), match.group(2)) if match else ("", value.strip())
    if not identifier.isascii() or not re.fullmatch(r"[!-;=?-~]+", identifier):
        raise InvalidInput("list_id must end in an ASCII <list.id>", field="list_id")
    if not phrase:
        return f"List-Id: <{identifier}>"
    if _ATEXT_PHRASE.fullmatch(phrase):
        return f"List-Id: {phrase} <{identifier}>"
    return f"List-Id: {_encoded_words(phrase)} <{identifier}>"


def _fold(line: str, width: int = 78) -> str:
    """Fold a long ASCII header line at spaces (RFC 5322 §2.2.3); a word longer than the line stays whole."""
    if len(line) <= width:
        return line
    folded: list[str] = []
    current = ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > width:
            folded.append(current)
            current = " " + word
        else:
            current = f"{current} {word}" if current else word
    folded.append(current)
    return "\r\n".join(folded)
