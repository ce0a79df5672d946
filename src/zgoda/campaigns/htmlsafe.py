"""Make a message's HTML safe to carry the mandatory footer: balanced, style-free, with a slot after everything.

The input is first parsed as HTML5 by css_inline's parser (html5ever, the same algorithm browsers and mail
clients use) and serialised back, which closes every element, comment and raw-text element the template
left open. ``Sanitiser`` then re-reads that canonical text (every element now has its end tag, so Python's
``html.parser`` sees the same tree) and writes it out again:

- elements that could hide or restyle what follows them go, with their content: ``<style>`` (template CSS is
  already inlined; a kept stylesheet could target the footer), ``<link>``, ``<script>``, ``<noscript>``,
  ``<template>``, ``<iframe>``, ``<object>``, ``<embed>``, ``<base>``, frames, ``<svg>``/``<math>`` (foreign
  content re-parses differently), ``<plaintext>``/``<xmp>``/``<noembed>``/``<noframes>``; ``<form>`` tags
  are dropped but their content kept; ``on*`` event attributes are dropped;
- ``<html>`` keeps only ``lang`` and ``dir``; ``<head>`` and ``<body>`` keep no attributes: the body's
  style moves onto a wrapper ``<div>`` around the template's content, so nothing the template says about
  the body can reach the footer;
- Outlook conditional comments (``<!--[if mso]><table><tr><td><![endif]-->``) that leave tables open in
  Outlook's view are closed by one more conditional comment at the end of the wrapper;
- after the wrapper comes the footer slot, the last thing in ``<body>``.

The same class, given placeholders, turns a template's html skeleton (Jinja constructs replaced by
``<!--zgoda-NONCE-N-->`` comments) back into a Jinja source, and records where each placeholder sat, so
that ``rendering`` can prove every rendered variant balanced (see ``PlaceholderMap``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser

import css_inline

VOID_ELEMENTS = frozenset(
    {
        "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "img", "input",
        "keygen", "link", "meta", "param", "source", "track", "wbr",
    }
)  # fmt: skip
DROPPED_ELEMENTS = frozenset(
    {
        "style", "link", "script", "noscript", "template", "iframe", "object", "embed", "applet", "base",
        "frame", "frameset", "svg", "math", "plaintext", "xmp", "noembed", "noframes",
    }
)  # fmt: skip
UNWRAPPED_ELEMENTS = frozenset({"form"})
RAW_TEXT_ELEMENTS = ("script", "style", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext")
CONTENT_CLASS = "zgoda-content"
CONTENT_STYLE = "position:relative;overflow:hidden"
_CONDITIONAL_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:]*)\b[^>]*?(/?)>")
_JINJA_OPENERS = re.compile(r"\{(?=[{%#])")

_NORMALISER = css_inline.CSSInliner(
    inline_style_tags=False,
    keep_style_tags=False,
    keep_link_tags=False,
    keep_at_rules=False,
    load_remote_stylesheets=False,
)


def normalise_html5(html: str) -> str:
    """Parse as HTML5 and serialise back (every element closed), dropping ``<style>`` and ``<link>``."""
    return _NORMALISER.inline(html)


@dataclass
class PlaceholderMap:
    """Where each placeholder landed: its order of appearance and its context (open elements or attribute)."""

    order: list[int] = field(default_factory=list)
    contexts: dict[int, tuple[object, ...]] = field(default_factory=dict)


class Sanitiser(HTMLParser):
    """Re-serialise canonical (html5ever) HTML safely, wrapping the body and leaving ``slot`` at its end.

    With ``constructs`` and ``placeholder``, each placeholder is replaced by its Jinja construct and
    literal text is protected from being read as Jinja (``{{`` becomes ``{{ '{' }}{``).
    """

    # html5ever writes these elements' content unescaped: read it as raw text too (typeshed marks this Final)
    CDATA_CONTENT_ELEMENTS = RAW_TEXT_ELEMENTS  # type: ignore[misc]

    def __init__(
        self, *, slot: str, placeholder: re.Pattern[str] | None = None, constructs: Sequence[str] = ()
    ) -> None:
        super().__init__(convert_charrefs=True)
        self.slot = slot
        self.placeholder = placeholder
        self.constructs = constructs
        self.out: list[str] = []
        self.stack: list[tuple[str, int]] = []  # (tag, serial); serial < 0 for dropped/unwrapped
        self.serial = 0
        self.dropping = 0  # depth inside dropped elements
        self.body_open = False
        self.body_seen = False
        self.mso_stack: list[str] = []
        self.found = PlaceholderMap()

    # --- helpers ------------------------------------------------------------------------------

    def literal(self, text: str) -> str:
        """Escaped text; in template mode also made inert for Jinja."""
        escaped = escape(text, quote=True)
        if self.placeholder is not None:
            escaped = _JINJA_OPENERS.sub("{{ '{' }}", escaped)
        return escaped

    def context_key(self) -> tuple[object, ...]:
        # tbody is transparent: html5ever inserts it implicitly before the first row, and a segment holding an
        # unmatched <tbody> or </tbody> still cannot leave anything open past the table's own end tag.
        return ("text", *(serial for tag, serial in self.stack if tag != "tbody"))

    def with_placeholders(self, text: str, context: tuple[object, ...]) -> str:
        """Escape ``text``, replacing each placeholder by its construct and recording where it sat."""
        if self.placeholder is None:
            return escape(text, quote=True)
        pieces: list[str] = []
        position = 0
        for match in self.placeholder.finditer(text):
            pieces.append(self.literal(text[position : match.start()]))
            index = int(match.group(1))
            self.record(index, context)
            pieces.append(self.constructs[index] if index < len(self.constructs) else "")
            position = match.end()
        pieces.append(self.literal(text[position:]))
        return "".join(pieces)

    def record(self, index: int, context: tuple[object, ...]) -> None:
        if self.dropping:
            return
        self.found.order.append(index)
        self.found.contexts[index] = context

    def attributes(self, tag: str, attrs: list[tuple[str, str | None]]) -> str:
        serial = self.serial
        pieces = []
        for name, value in attrs:
            if name.startswith("on") or not re.fullmatch(r"[^\s\"'>/=\x00-\x1f]+", name):
                continue
            if value is None:
                pieces.append(f" {name}")
            else:
                pieces.append(f' {name}="{self.with_placeholders(value, ("attr", serial, name))}"')
        return "".join(pieces)

    def ensure_body(self) -> None:
        if not self.body_seen:
            self.body_seen = True
            self.body_open = True
            self.out.append(f'<body><div class="{CONTENT_CLASS}" style="{CONTENT_STYLE}">')
            self.stack.append(("body", 0))

    # --- parser callbacks ---------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.serial += 1
        if self.dropping or tag in DROPPED_ELEMENTS:
            if tag not in VOID_ELEMENTS:
                self.dropping += 1
                self.stack.append((tag, -self.serial))
            return
        if tag in UNWRAPPED_ELEMENTS:
            self.stack.append((tag, -self.serial))
            return
        if tag == "html":
            kept = [(name, value) for name, value in attrs if name in ("lang", "dir")]
            self.out.append(f"<html{self.attributes(tag, kept)}>")
            self.stack.append((tag, self.serial))
            return
        if tag == "meta" and any(name in ("charset", "http-equiv") for name, _ in attrs):
            return  # the MIME part says UTF-8; a template's own charset or refresh must not contradict it
        if tag == "head":
            self.out.append('<head><meta charset="utf-8">')
            self.stack.append((tag, self.serial))
            return
        if tag == "body":
            if self.body_seen:
                return
            self.body_seen = True
            self.body_open = True
            style = CONTENT_STYLE
            own = [value for name, value in attrs if name == "style" and value]
            colour = [value for name, value in attrs if name == "bgcolor" and value]
            if colour:
                style = f"background-color:{colour[0]};{style}"
            if own:
                style = f"{own[0].rstrip().rstrip(';')};{style}"
            self.out.append(f'<body><div class="{CONTENT_CLASS}"{self.attributes(tag, [("style", style)])}>')
            self.stack.append((tag, self.serial))
            return
        self.out.append(f"<{tag}{self.attributes(tag, attrs)}>")
        if tag not in VOID_ELEMENTS:
            self.stack.append((tag, self.serial))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID_ELEMENTS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("body", "html"):
            return  # closed at the very end, after the footer slot
        if not any(open_tag == tag for open_tag, _ in self.stack):
            return  # a stray end tag (html5ever never writes one): ignore, as browsers do
        while self.stack:
            open_tag, serial = self.stack.pop()
            if serial < 0:
                if open_tag not in UNWRAPPED_ELEMENTS:
                    self.dropping -= 1
            elif not self.dropping:
                self.out.append(f"</{open_tag}>")
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.dropping:
            return
        if not self.body_open and self.stack and self.stack[-1][0] == "html" and data.strip():
            self.ensure_body()
        self.out.append(self.with_placeholders(data, self.context_key()))

    def handle_comment(self, data: str) -> None:
        if self.dropping:
            return
        comment = f"<!--{data}-->"
        if self.placeholder is not None and self.placeholder.fullmatch(comment):
            self.out.append(self.with_placeholders(comment, self.context_key()))
            return
        if data.startswith("[if") and data.endswith("<![endif]"):
            for closing, tag, self_closing in _CONDITIONAL_TAG.findall(data):
                tag = tag.lower()
                if tag in VOID_ELEMENTS or self_closing:
                    continue
                if not closing:
                    self.mso_stack.append(tag)
                elif tag in self.mso_stack:
                    while self.mso_stack.pop() != tag:
                        pass
        safe = data.replace("--!>", "").replace("-->", "")
        if self.placeholder is not None:
            safe = _JINJA_OPENERS.sub("{{ '{' }}", safe)
        self.out.append(f"<!--{safe}-->")

    def handle_decl(self, decl: str) -> None:
        if decl.lower().startswith("doctype"):
            self.out.append("<!DOCTYPE html>")

    def unknown_decl(self, data: str) -> None:
        return  # CDATA sections live only in foreign content, which is dropped

    def handle_pi(self, data: str) -> None:
        return

    def finish(self) -> str:
        """Close everything, put the footer slot last in ``<body>`` and return the document."""
        self.close()
        self.ensure_body()
        while self.stack and self.stack[-1][0] not in ("body", "html"):
            self.handle_endtag(self.stack[-1][0])
        if self.mso_stack:
            closing = "".join(f"</{tag}>" for tag in reversed(self.mso_stack))
            self.out.append(f"<!--[if mso | IE]>{closing}<![endif]-->")
        self.out.append(f"</div>{self.slot}</body></html>")
        return "".join(self.out)


def sanitise(html: str, *, slot: str) -> str:
    """Normalise ``html`` as HTML5 and re-serialise it safely with ``slot`` as the last thing in ``<body>``."""
    sanitiser = Sanitiser(slot=slot)
    sanitiser.feed(normalise_html5(html))
    return sanitiser.finish()
