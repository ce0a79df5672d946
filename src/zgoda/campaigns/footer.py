"""The platform's mandatory footer: who sends, from where, why you get it, and how to leave.

Every campaign message carries it, in Polish or English: the sender's name and postal address, the
purpose the address is used for and the source it came from, a one-click unsubscribe link and a link
to the preference centre. The template cannot remove or hide it: ``attach_footer`` re-parses the
template's HTML as HTML5 and re-serialises it balanced, without stylesheets, with the body's own
styling moved onto a wrapper, and appends the footer after that wrapper as the last child of
``<body>`` (see ``htmlsafe`` for the details). The footer's own styles are inline and ``!important``.

A consent request's message also carries, just above the footer and as much beyond the template's
reach, what it asks: the purpose, the notice's exact text and the link that says yes.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from html import escape

from zgoda.campaigns.htmlsafe import sanitise
from zgoda.core.errors import InvalidInput

FOOTER_CLASS = "zgoda-footer"
_BOX_STYLE = (
    "display:block !important;visibility:visible !important;opacity:1 !important;position:relative !important;"
    "z-index:2147483647 !important;clear:both !important;float:none !important;transform:none !important;"
    "filter:none !important;height:auto !important;max-height:none !important;overflow:visible !important;"
    "margin:24px 0 0 0 !important;padding:16px !important;border-top:1px solid #dddddd !important;"
    "background:#ffffff !important;color:#444444 !important;font-family:Arial,Helvetica,sans-serif !important;"
    "font-size:13px !important;line-height:1.5 !important;text-align:left !important;text-indent:0 !important;"
    "letter-spacing:normal !important;direction:ltr !important"
)
_P_STYLE = (
    "display:block !important;visibility:visible !important;margin:0 0 8px 0 !important;color:#444444 !important;"
    "font-size:13px !important;line-height:1.5 !important"
)
_A_STYLE = "color:#1a56db !important;text-decoration:underline !important;font-size:13px !important"


@dataclass(frozen=True)
class ConsentAsk:
    """What a consent request's message asks: the notice's exact text and the link that answers yes."""

    notice_title: str
    notice_text: str
    confirm_url: str


@dataclass(frozen=True)
class FooterContext:
    """What the footer says for one message; values are plain text (escaped here)."""

    sender_name: str
    postal_address: str
    purpose_label: str
    source_label: str | None
    unsubscribe_url: str
    preferences_url: str
    language: str  # "pl" or "en"
    ask: ConsentAsk | None = None  # a consent request's: shown above the footer, as much the platform's


_WORDS = {
    "pl": {
        "sent_by": "Nadawca tej wiadomości: {sender}, {address}.",
        "purpose": "Otrzymujesz ją w celu: {purpose}.",
        "source": "Twój adres pochodzi z: {source}.",
        "unsubscribe": "Wypisz się",
        "preferences": "Zmień ustawienia zgód",
        "unsubscribe_text": "Wypisz się: {url}",
        "preferences_text": "Zmień ustawienia zgód: {url}",
        "ask": "Prosimy o Twoją zgodę w celu: {purpose}. Oto jej pełna treść:",
        "agree": "Tak, zgadzam się",
        "agree_text": "Aby wyrazić zgodę, otwórz: {url}",
        "ignore": "Jeśli się nie zgadzasz, zignoruj tę wiadomość.",
    },
    "en": {
        "sent_by": "This message was sent by {sender}, {address}.",
        "purpose": "You receive it for: {purpose}.",
        "source": "Your address comes from: {source}.",
        "unsubscribe": "Unsubscribe",
        "preferences": "Manage your preferences",
        "unsubscribe_text": "Unsubscribe: {url}",
        "preferences_text": "Manage your preferences: {url}",
        "ask": "We ask for your consent to: {purpose}. Its full text:",
        "agree": "Yes, I agree",
        "agree_text": "To agree, open: {url}",
        "ignore": "If you do not agree, ignore this message.",
    },
}


_WHITESPACE = re.compile(r"\s")  # the same characters as str.isspace


def _checked(ctx: FooterContext) -> dict[str, str]:
    if ctx.language not in _WORDS:
        raise InvalidInput(f"footer language must be pl or en, not {ctx.language!r}", field="language")
    urls = {"unsubscribe_url": ctx.unsubscribe_url, "preferences_url": ctx.preferences_url}
    if ctx.ask is not None:
        urls["confirm_url"] = ctx.ask.confirm_url
        if not ctx.ask.notice_text.strip():
            raise InvalidInput("a consent request needs the notice's text", field="notice")
    for name, url in urls.items():
        if not url.startswith(("https://", "http://")) or _WHITESPACE.search(url):
            raise InvalidInput(f"{name} must be an http(s) address without spaces", field=name)
    for name in ("sender_name", "postal_address", "purpose_label"):
        if not getattr(ctx, name).strip():
            raise InvalidInput(f"the footer needs a {name.replace('_', ' ')}", field=name)
    return _WORDS[ctx.language]


def _one_line(value: str) -> str:
    return " ".join(value.split())


def footer_html(ctx: FooterContext) -> str:
    """The footer as a self-contained ``<div>`` with inline, ``!important`` styles; every value escaped."""
    words = _checked(ctx)
    sent_by = words["sent_by"].format(
        sender=escape(_one_line(ctx.sender_name)), address=escape(_one_line(ctx.postal_address))
    )
    lines = [sent_by, words["purpose"].format(purpose=escape(_one_line(ctx.purpose_label)))]
    if ctx.source_label and ctx.source_label.strip():
        lines.append(words["source"].format(source=escape(_one_line(ctx.source_label))))
    paragraphs = "".join(f'<p style="{_P_STYLE}">{line}</p>' for line in lines)
    links = (
        f'<a href="{escape(ctx.unsubscribe_url)}" style="{_A_STYLE}">{words["unsubscribe"]}</a>'
        " &middot; "
        f'<a href="{escape(ctx.preferences_url)}" style="{_A_STYLE}">{words["preferences"]}</a>'
    )
    footer = (
        f'<div class="{FOOTER_CLASS}" lang="{ctx.language}" dir="ltr" style="{_BOX_STYLE}">'
        f'{paragraphs}<p style="{_P_STYLE}">{links}</p></div>'
    )
    return footer if ctx.ask is None else _ask_html(ctx, ctx.ask, words) + footer


_BUTTON_STYLE = (
    "display:inline-block !important;visibility:visible !important;padding:10px 18px !important;"
    "background:#1a56db !important;color:#ffffff !important;font-size:15px !important;font-weight:bold !important;"
    "text-decoration:none !important;border-radius:4px !important"
)


def _ask_html(ctx: FooterContext, ask: ConsentAsk, words: dict[str, str]) -> str:
    notice = "<br>".join(escape(line) for line in ask.notice_text.strip().splitlines())
    return (
        f'<div class="{FOOTER_CLASS}-ask" lang="{ctx.language}" dir="ltr" style="{_BOX_STYLE}">'
        f'<p style="{_P_STYLE}">{words["ask"].format(purpose=escape(_one_line(ctx.purpose_label)))}</p>'
        f'<p style="{_P_STYLE}"><strong>{escape(_one_line(ask.notice_title))}</strong><br>{notice}</p>'
        f'<p style="{_P_STYLE}"><a href="{escape(ask.confirm_url)}" style="{_BUTTON_STYLE}">{words["agree"]}</a></p>'
        f'<p style="{_P_STYLE}">{words["ignore"]}</p></div>'
    )


def footer_text(ctx: FooterContext) -> str:
    """The footer for the text part: the same facts, the links written out in full."""
    words = _checked(ctx)
    lines = [
        words["sent_by"].format(sender=_one_line(ctx.sender_name), address=_one_line(ctx.postal_address)),
        words["purpose"].format(purpose=_one_line(ctx.purpose_label)),
    ]
    if ctx.source_label and ctx.source_label.strip():
        lines.append(words["source"].format(source=_one_line(ctx.source_label)))
    lines.append(words["unsubscribe_text"].format(url=ctx.unsubscribe_url))
    lines.append(words["preferences_text"].format(url=ctx.preferences_url))
    footer = "\n".join(["-" * 40, *lines]) + "\n"
    if ctx.ask is None:
        return footer
    ask = [
        "-" * 40,
        words["ask"].format(purpose=_one_line(ctx.purpose_label)),
        "",
        _one_line(ctx.ask.notice_title),
        ctx.ask.notice_text.strip(),
        "",
        words["agree_text"].format(url=ctx.ask.confirm_url),
        words["ignore"],
    ]
    return "\n".join(ask) + "\n" + footer


def attach_footer(html: str, footer_html: str) -> str:
    """The template's html made balanced and style-free, with ``footer_html`` as the last child of ``<body>``.

    Unclosed elements, comments, ``<template>``/``<noscript>``/``<style>``/``<title>``/``<textarea>`` are
    closed or removed by an HTML5 parse first, so nothing the template leaves open can swallow the footer.
    """
    slot = f"<!--zgoda-footer-{secrets.token_hex(8)}-->"
    before, _, after = sanitise(html, slot=slot).rpartition(slot)
    return before + footer_html + after


def attach_footer_text(text: str, footer_text: str) -> str:
    """The text part with the footer after one blank line."""
    body = text.rstrip()
    return f"{body}\n\n{footer_text}" if body else footer_text
