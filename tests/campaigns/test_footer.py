"""The mandatory footer: its content in both languages, and that no template can remove, hide or swallow it."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from zgoda.campaigns.footer import FooterContext, attach_footer, attach_footer_text, footer_html, footer_text
from zgoda.campaigns.htmlsafe import VOID_ELEMENTS, normalise_html5
from zgoda.campaigns.rendering import compile_template
from zgoda.core.errors import InvalidInput

CTX = FooterContext(
    sender_name='Kawiarnia "Zgoda" <sp. z o.o.>',
    postal_address="ul. Prosta 1, 00-001 Warszawa",
    purpose_label="Newsletter & promocje",
    source_label="Formularz na stronie",
    unsubscribe_url="https://zgoda.example/u/tok?a=1&b=2",
    preferences_url="https://zgoda.example/p/tok",
    language="pl",
)


class FooterLocator(HTMLParser):
    """Reads a document the way a mail client does (after an HTML5 parse) and reports where the footer sits."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.footer_ancestors: list[tuple[str, dict[str, str | None]]] | None = None
        self.in_footer = 0
        self.after_footer: list[str] = []
        self.footer_text: list[str] = []
        self.styles = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "link"):
            self.styles += 1
        if self.footer_ancestors is not None and not self.in_footer:
            self.after_footer.append(tag)
        if dict(attrs).get("class") == "zgoda-footer" and self.footer_ancestors is None:
            self.footer_ancestors = list(self.stack)
            self.in_footer = 1
        elif self.in_footer and tag not in VOID_ELEMENTS:
            self.in_footer += 1
        if tag not in VOID_ELEMENTS:
            self.stack.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            open_tag, _ = self.stack.pop()
            if self.in_footer:
                self.in_footer -= 1
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.in_footer:
            self.footer_text.append(data)
        elif self.footer_ancestors is not None and data.strip():
            self.after_footer.append(data)


def locate(html: str) -> FooterLocator:
    locator = FooterLocator()
    locator.feed(normalise_html5(html))  # an HTML5 parse, as the recipient's client does
    locator.close()
    return locator


HIDING_ATTEMPTS = {
    "unclosed hidden div": '<p>Hi</p><div style="display:none">',
    "unclosed nested elements": "<table><tr><td><div hidden><span style='font-size:0'><b>",
    "unclosed comment": "<p>Hi</p><!-- everything after me is a comment",
    "unclosed template": "<p>Hi</p><template>",
    "unclosed noscript": "<p>Hi</p><noscript>",
    "unclosed style": "<p>Hi</p><style>",
    "unclosed title": "<p>Hi</p><title>",
    "unclosed textarea": "<p>Hi</p><textarea>",
    "plaintext": "<p>Hi</p><plaintext>",
    "xmp and noembed": "<p>Hi</p><xmp><noembed>",
    "stylesheet hides the footer": (
        "<style>div { display: none !important } .zgoda-footer { font-size: 0 }</style><p>Hi</p>"
    ),
    "media query": "<style>@media all { div, body { display: none !important } }</style><p>Hi</p>",
    "sibling selector": (
        "<style>.x ~ div, .x + div, body > div:last-child { visibility: hidden }</style><p class=x>Hi</p>"
    ),
    "remote stylesheet": '<link rel="stylesheet" href="https://evil.example/hide.css"><p>Hi</p>',
    "hidden body": '<body style="display:none; font-size:0; color:white" hidden class="x"><p>Hi</p></body>',
    "style in svg": "<svg><style>div { display:none }</style></svg><p>Hi</p>",
    "content after the end": "<p>Hi</p></body></html><div style='display:none'>",
    "frameset": "<frameset><frame src='https://evil.example'></frameset>",
    "outlook ghost table": "<!--[if mso]><table style='mso-hide:all'><tr><td><![endif]--><p>Hi</p>",
    "select": "<select><option>a<div hidden>",
    "form": "<form><p>Hi</p>",
}


@pytest.mark.parametrize("html", HIDING_ATTEMPTS.values(), ids=HIDING_ATTEMPTS.keys())
def test_the_footer_is_the_last_child_of_body_whatever_the_template_did(html: str) -> None:
    result = attach_footer(html, footer_html(CTX))
    where = locate(result)
    assert where.footer_ancestors is not None, "footer missing"
    assert [tag for tag, _ in where.footer_ancestors] == ["html", "body"]
    assert all(len(attrs) == 0 for tag, attrs in where.footer_ancestors if tag == "body")
    assert where.after_footer == []
    assert where.styles == 0
    assert "Wypisz się" in "".join(where.footer_text)
    assert "mso-hide" not in result.split('class="zgoda-footer"')[0].rsplit("<![endif]-->", 1)[-1]


def test_outlook_conditional_tables_are_closed_before_the_footer() -> None:
    result = attach_footer("<!--[if mso]><table><tr><td><![endif]--><p>Hi</p>", footer_html(CTX))
    before_footer = result.split('<div class="zgoda-footer"')[0]
    assert before_footer.endswith("<!--[if mso | IE]></td></tr></table><![endif]--></div>")


@pytest.mark.parametrize("html", HIDING_ATTEMPTS.values(), ids=HIDING_ATTEMPTS.keys())
def test_rendered_templates_carry_the_footer_last_in_both_parts(html: str) -> None:
    template = compile_template(subject="Hej", html=html, text=None, allowed_fields={"email"})
    parts = template.render(contact={"email": "a@b.example"}, workspace_name="W", campaign_name="C", footer=CTX)
    where = locate(parts.html)
    assert [tag for tag, _ in where.footer_ancestors or []] == ["html", "body"]
    assert where.after_footer == []
    assert parts.footer_attached
    assert parts.text.endswith(footer_text(CTX))


def test_body_styling_moves_to_the_content_wrapper() -> None:
    result = attach_footer('<body style="background:#eee" bgcolor="#fff"><p>x</p></body>', footer_html(CTX))
    assert '<body><div class="zgoda-content" style="background:#eee;background-color:#fff;' in result
    assert "<body>" in result


def test_scripts_and_event_handlers_are_removed() -> None:
    result = attach_footer('<p onclick="x()">a</p><script>alert(1)</script><iframe src="x"></iframe>', "<div>F</div>")
    assert "onclick" not in result and "<script" not in result and "<iframe" not in result
    assert "<p>a</p>" in result


def test_footer_html_says_who_why_and_how_to_leave_all_escaped() -> None:
    html = footer_html(CTX)
    assert "Kawiarnia &quot;Zgoda&quot; &lt;sp. z o.o.&gt;" in html
    assert "ul. Prosta 1, 00-001 Warszawa" in html
    assert "Newsletter &amp; promocje" in html
    assert "Formularz na stronie" in html
    assert 'href="https://zgoda.example/u/tok?a=1&amp;b=2"' in html
    assert 'href="https://zgoda.example/p/tok"' in html
    assert "Wypisz się" in html and 'lang="pl"' in html
    assert "<" not in html.replace("<div", "").replace("</div>", "").replace("<p", "").replace("</p>", "").replace(
        "<a ", ""
    ).replace("</a>", "")


def test_footer_in_english_and_without_a_source() -> None:
    ctx = FooterContext(
        sender_name="Cafe", postal_address="1 Main St", purpose_label="News", source_label=None,
        unsubscribe_url="https://z.example/u", preferences_url="https://z.example/p", language="en",
    )  # fmt: skip
    text = footer_text(ctx)
    assert "This message was sent by Cafe, 1 Main St." in text
    assert "You receive it for: News." in text
    assert "comes from" not in text
    assert "Unsubscribe: https://z.example/u" in text
    assert "Manage your preferences: https://z.example/p" in text
    assert "Unsubscribe</a>" in footer_html(ctx)


def test_footer_text_is_appended_after_one_blank_line() -> None:
    assert attach_footer_text("Hello\n\n\n", "F\n") == "Hello\n\nF\n"
    assert attach_footer_text("", "F\n") == "F\n"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"language": "de"}, "language"),
        ({"unsubscribe_url": "javascript:alert(1)"}, "unsubscribe_url"),
        ({"preferences_url": "https://x.example/a b"}, "preferences_url"),
        ({"postal_address": " "}, "postal_address"),
    ],
)
def test_footer_refuses_bad_context(change: dict[str, str], field: str) -> None:
    ctx = FooterContext(**{**CTX.__dict__, **change})
    with pytest.raises(InvalidInput) as caught:
        footer_html(ctx)
    assert caught.value.field == field
