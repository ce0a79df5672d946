"""What every reader needs from one inbound message, worked out once and shared."""

from __future__ import annotations

import re
from email.message import Message
from functools import cached_property

from zgoda.feedback.parsing import refs
from zgoda.feedback.parsing.mime import (
    ORIGINAL_TYPES,
    TEXT_LIMIT,
    Headers,
    addresses,
    children,
    content_type,
    first,
    header_block,
    header_map,
    html_to_text,
    part_text,
    walk,
)

_NOT_RECIPIENT_LOCALS = frozenset({"mailer-daemon", "postmaster", "mailerdaemon", "mail-daemon", "double-bounce"})


class Context:
    """One parsed inbound message and the facts about it that several readers use (each computed once)."""

    def __init__(self, message: Message, bounce_domain: str | None, raw: bytes = b"") -> None:
        self.message = message
        self.raw = raw
        self.bounce_domain = bounce_domain.strip().lower() if bounce_domain else None
        self.headers: Headers = header_map(message)

    @cached_property
    def envelope_ref(self) -> str | None:
        """The ref of the VERP address this message was delivered to."""
        return refs.envelope_ref(self.headers, self.bounce_domain)

    @cached_property
    def report_parts(self) -> list[Message]:
        """The parts of the message itself, not descending into returned originals."""
        return list(walk(self.message, into_messages=False))

    @cached_property
    def original_parts(self) -> list[Message]:
        """The returned originals (message/rfc822, text/rfc822-headers...), outermost first."""
        return [part for part in self.report_parts[1:] if content_type(part) in ORIGINAL_TYPES]

    @cached_property
    def original(self) -> Headers:
        """The headers of the first returned original ({} when there is none)."""
        for part in self.original_parts:
            found = original_headers(part)
            if found:
                return found
        return {}

    @cached_property
    def report_text(self) -> str:
        """The human-readable text of the message (text/plain parts, else text/html), capped."""
        plain: list[str] = []
        markup: list[str] = []
        size = 0
        for part in self.report_parts:
            kind = content_type(part)
            if kind in ORIGINAL_TYPES or not kind.startswith("text/") or size >= TEXT_LIMIT:
                continue
            if kind == "text/plain":
                text = part_text(part, TEXT_LIMIT - size)
                plain.append(text)
                size += len(text)
            elif kind == "text/html" and not plain:
                markup.append(part_text(part, TEXT_LIMIT))
        if plain:
            return "\n\n".join(plain)
        return "\n\n".join(html_to_text(text) for text in markup)[:TEXT_LIMIT]

    @cached_property
    def not_recipients(self) -> set[str]:
        """Addresses that are never the recipient a report is about: ours, the reporter's, the daemons'."""
        found: set[str] = set()
        for name in (*refs.ENVELOPE_HEADERS, "from", "sender", "reply-to", "cc"):
            for value in self.headers.get(name, ()):
                found.update(addresses(value))
        for name in ("from", "sender", "return-path", "reply-to"):
            for value in self.original.get(name, ()):
                found.update(addresses(value))
        return found

    def is_recipient_candidate(self, address: str) -> bool:
        """Whether ``address`` could be a recipient (not ours, not a daemon's, not at the bounce domain)."""
        local, _, domain = address.partition("@")
        if address in self.not_recipients or local in _NOT_RECIPIENT_LOCALS:
            return False
        if local.startswith("bounces+"):
            return False
        return not (self.bounce_domain and domain == self.bounce_domain)

    def ref_from_original(self, original: Headers) -> str | None:
        """The ref in a returned original's headers."""
        return refs.original_ref(original, self.bounce_domain)

    def mentions(self, pattern: re.Pattern[bytes]) -> bool:
        """Whether the raw message contains ``pattern`` anywhere: a cheap test before a reader walks the parts."""
        return pattern.search(self.raw) is not None

    @property
    def subject(self) -> str:
        return first(self.headers, "subject")


def original_headers(part: Message) -> Headers:
    """The headers of a returned original, whether parsed (message/rfc822) or left as text (rfc822-headers)."""
    inner = children(part)
    if inner:
        return header_map(inner[0])
    return header_block(part_text(part, 64 * 1024))
