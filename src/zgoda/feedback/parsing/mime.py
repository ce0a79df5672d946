"""Careful access to a parsed message: headers that may hold raw 8-bit bytes, capped text of parts, walks.

Everything here tolerates what real mail contains: unknown charsets, broken base64, header values with
undecodable bytes, parts that claim to be multipart and are not. Only text parts are ever decoded, and only
their first ``TEXT_LIMIT`` characters; binary attachments are never touched.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import html
import quopri
import re
from collections.abc import Iterator
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message

TEXT_LIMIT = 128 * 1024  # characters of one text part that are read
MAX_PARTS = 300  # parts visited in one message, whatever its nesting

Headers = dict[str, list[str]]

ADDRESS = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
ADDRESS_RE = re.compile(ADDRESS)
_SPACE_RE = re.compile(r"\s+")
_SURROGATE_RE = re.compile("[\udc80-\udcff]")
_TAG_RE = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d)\b[^>]*>", re.IGNORECASE)
_ANY_TAG_RE = re.compile(r"<[^>]{0,2000}>")
_STYLE_RE = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BASE64_JUNK_RE = re.compile(r"[^A-Za-z0-9+/]")
ORIGINAL_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers", "message/global-headers"}
)


def from_surrogates(value: str) -> str:
    """A string read with ``surrogateescape`` (raw 8-bit bytes) as text: UTF-8 if it is, else Windows-1250."""
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return decode_bytes(data, None)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes in a declared charset as text; an unknown or absent charset tries UTF-8, then Windows-1250."""
    if charset:
        try:
            codecs.lookup(charset)
            return data.decode(charset, "replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1250", "replace")


def clean_header(value: object) -> str:
    """One header value as plain text: unfolded, 8-bit bytes decoded, RFC 2047 encoded-words decoded."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and "=?" not in text:
        return _SPACE_RE.sub(" ", text).strip() if ("\n" in text or "\t" in text or "  " in text) else text.strip()
    if _SURROGATE_RE.search(text):
        text = from_surrogates(text)
    if "=?" in text:
        with contextlib.suppress(
            MessageError, ValueError, LookupError, UnicodeError, TypeError, AssertionError, IndexError
        ):
            text = str(make_header(decode_header(text)))
    return _SPACE_RE.sub(" ", text).strip()


def header_map(message: Message) -> Headers:
    """All headers of one message or part: lower-case name → values, in order."""
    headers: Headers = {}
    for name, value in message.raw_items():
        headers.setdefault(str(name).strip().lower(), []).append(clean_header(value))
    return headers


def first(headers: Headers, name: str) -> str:
    """The first value of a header, or ""."""
    values = headers.get(name)
    return values[0] if values else ""


def content_type(part: Message) -> str:
    """The part's content type, lower-case; ``text/plain`` when missing or malformed.

    Remembered on the part: every reader asks about the same few parts, and parsing the header is not free.
    """
    known = part.__dict__.get("_zgoda_content_type")
    if isinstance(known, str):
        return known
    try:
        found = part.get_content_type()
    except (ValueError, TypeError, AttributeError, IndexError):
        found = "text/plain"
    part.__dict__["_zgoda_content_type"] = found
    return found


def content_param(part: Message, name: str) -> str:
    """A Content-Type parameter as a lower-case string ("" when absent)."""
    try:
        value = part.get_param(name)
    except (ValueError, TypeError, AttributeError, IndexError, LookupError):
        return ""
    if isinstance(value, tuple):
        value = value[2]
    return str(value).strip().lower() if value else ""


def stored_payload(part: Message) -> object:
    """A part's payload as the parser stored it: a list of sub-parts, or text in which 8-bit bytes are
    surrogates (``surrogateescape``).

    ``get_payload()`` would first decode such bytes with the part's charset and hand back text that
    :func:`part_text` then decodes again (ISO-8859-2 "Zażółć" came out "ZaĹźĂłĹ‚Ä‡"), and it raises
    ``ValueError`` for a charset name the codec registry refuses (one with a NUL in it). compat32's
    ``Message`` keeps the parsed payload in ``_payload``, as its own generator reads it.
    """
    return part._payload  # type: ignore[attr-defined]


def children(part: Message) -> list[Message]:
    """The sub-parts of a multipart or of a ``message/*`` part (its embedded message); [] for a leaf."""
    payload = stored_payload(part)
    if isinstance(payload, list):
        return [child for child in payload if isinstance(child, Message)]
    return []


def walk(message: Message, *, into_messages: bool) -> Iterator[Message]:
    """Every part, depth first in document order, at most ``MAX_PARTS``; never recursive (deep nesting is safe).

    ``into_messages=False`` stops at embedded messages (message/rfc822): a returned original is not part of
    the report that returns it.
    """
    stack = [message]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        yield part
        if part is not message and not into_messages and content_type(part) in ORIGINAL_TYPES:
            continue
        stack.extend(reversed(children(part)))


def part_text(part: Message, limit: int = TEXT_LIMIT) -> str:
    """The decoded text of a leaf part, at most about ``limit`` characters, with ``\\n`` line ends."""
    payload = stored_payload(part)
    if not isinstance(payload, str):
        return ""
    data = _transfer_decode(payload, _encoding(part), limit)
    try:
        charset = part.get_content_charset()
    except (ValueError, TypeError, LookupError, AttributeError, IndexError):
        charset = None
    return normalise_newlines(decode_bytes(data[:limit], charset))


def _encoding(part: Message) -> str:
    return str(part.get("content-transfer-encoding", "") or "").strip().lower()


def _transfer_decode(payload: str, encoding: str, limit: int) -> bytes:
    """The bytes of (the start of) a payload under its Content-Transfer-Encoding; broken base64 gives b""."""
    if encoding == "base64":
        chunk = _BASE64_JUNK_RE.sub("", payload[: limit * 4 // 3 + 4096])
        chunk = chunk[: len(chunk) // 4 * 4]
        try:
            return binascii.a2b_base64(chunk)
        except (binascii.Error, ValueError):
            return b""
    if encoding == "quoted-printable":
        return quopri.decodestring(payload[: limit + limit // 2].encode("utf-8", "surrogateescape"))
    return payload[:limit].encode("utf-8", "surrogateescape")


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def lowered(text: str) -> str:
    """``text.lower()``, but always the same length (positions in it are positions in ``text``).

    Case-sensitive patterns over a lower-cased text are several times faster than ``re.IGNORECASE``.
    """
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR become LF."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def html_to_text(markup: str) -> str:
    """Rough text of an HTML body: enough for finding addresses and SMTP replies in an HTML-only bounce."""
    markup = _STYLE_RE.sub(" ", markup)
    markup = _TAG_RE.sub("\n", markup)
    return html.unescape(_ANY_TAG_RE.sub(" ", markup))


def addresses(value: str) -> list[str]:
    """The addresses in a header value or text, lower-cased, in order, without repeats."""
    found: list[str] = []
    for match in ADDRESS_RE.finditer(value):
        address = match.group(0).lower().strip(".")
        if address not in found:
            found.append(address)
    return found


def one_line(text: str | None, limit: int = 500) -> str | None:
    """Whitespace collapsed, trimmed, at most ``limit`` characters; None when nothing is left."""
    if not text:
        return None
    text = _SPACE_RE.sub(" ", text).strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def parse_fields(text: str) -> list[list[tuple[str, str]]]:
    """``Name: value`` fields (with folded continuation lines) grouped in blank-line separated blocks.

    Used for ``message/delivery-status`` and ``message/feedback-report`` bodies the parser left as text, and
    for header blocks quoted inline in a bounce.
    """
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
            continue
        if line[0] in " \t" and current:
            name, value = current[-1]
            current[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if sep and name and " " not in name.strip() and len(name) < 80:
            current.append((name.strip().lower(), value.strip()))
    if current:
        blocks.append(current)
    return blocks


def header_block(text: str) -> Headers:
    """The header fields at the start of ``text`` (a quoted original message or a text/rfc822-headers part)."""
    headers: Headers = {}
    started = False
    last: str | None = None
    for line in text.split("\n")[:400]:
        if not line.strip():
            if started:
                break
            continue
        if line[0] in " \t":
            if last is not None:
                headers[last][-1] = f"{headers[last][-1]} {line.strip()}"
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name.strip() or len(name) > 80:
            if started:
                break
            continue
        started = True
        last = name.strip().lower()
        headers.setdefault(last, []).append(value.strip())
    return headers


def fields_of(part: Message) -> list[list[tuple[str, str]]]:
    """The field blocks of a delivery-status or feedback-report part, whichever way the parser stored it."""
    payload = part.get_payload()
    if isinstance(payload, list) and _encoding(part) in {"base64", "quoted-printable"}:
        # the parser split encoded text into "blocks" of garbage: put it back together and decode it
        pieces: list[str] = []
        for block in payload:
            if isinstance(block, Message):
                pieces.extend(f"{name}:{value}" for name, value in block.raw_items())
                body = block.get_payload()
                pieces.append(body if isinstance(body, str) else "")
        data = _transfer_decode("\n".join(pieces), _encoding(part), TEXT_LIMIT)
        return parse_fields(normalise_newlines(decode_bytes(data, None)))
    if isinstance(payload, list):
        blocks: list[list[tuple[str, str]]] = []
        for block in payload:
            if isinstance(block, Message):
                items = [(str(name).strip().lower(), clean_header(value)) for name, value in block.raw_items()]
                if items:
                    blocks.append(items)
                body = block.get_payload()
                if isinstance(body, str) and ":" in body:
                    # a block without the blank line the parser expects after its "headers"
                    blocks.extend(parse_fields(normalise_newlines(from_surrogates(body[:TEXT_LIMIT]))))
        return blocks
    return parse_fields(part_text(part))
