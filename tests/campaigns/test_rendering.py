"""Campaign templates: the sandbox refuses every escape at compile time; rendering personalises safely."""

from __future__ import annotations

import pytest

from zgoda.campaigns.footer import FooterContext
from zgoda.campaigns.htmltext import html_to_text
from zgoda.campaigns.rendering import CompiledTemplate, compile_template
from zgoda.campaigns.sandbox import RenderLimitExceeded
from zgoda.core.errors import InvalidInput

FIELDS = {"email", "phone", "first_name", "city", "interests", "items", "bio", "joined"}
NEWSLETTER = """<!DOCTYPE html>
<html lang="pl"><head><title>{{ campaign.name }}</title>
<style>
  p { color: #333333; }
  .button { background: #c0392b; color: #ffffff; padding: 8px 16px; }
  h1 { font-size: 24px; }
  @media (max-width: 600px) { h1 { font-size: 30px; } }
</style></head>
<body style="background:#f4f4f4">
<h1>Cześć {{ contact.first_name | default('Kliencie') }}!</h1>
<p>Nowości w {{ workspace.name }}.</p>
{% if contact.city %}<p>Zapraszamy do kawiarni w {{ contact.city }}.</p>{% else %}<p>Zapraszamy!</p>{% endif %}
<ul>{% for item in contact.interests %}<li>{{ item | title }}</li>{% endfor %}</ul>
<table>{% for i in range(2) %}<tr><td>Wiersz {{ loop.index }}</td></tr>{% endfor %}</table>
<p><a class="button" href="https://kawiarnia.example/oferta?miasto={{ contact.city }}&amp;x=1">Zobacz ofertę</a></p>
</body></html>"""
FOOTER = FooterContext(
    sender_name="Kawiarnia Zgoda sp. z o.o.",
    postal_address="ul. Prosta 1, 00-001 Warszawa",
    purpose_label="Newsletter",
    source_label="Formularz na stronie",
    unsubscribe_url="https://zgoda.example/u/tok",
    preferences_url="https://zgoda.example/p/tok",
    language="pl",
)


def compile_html(html: str, *, subject: str = "Hej", text: str | None = None) -> CompiledTemplate:
    return compile_template(subject=subject, html=html, text=text, allowed_fields=FIELDS)


def render(template: CompiledTemplate, **contact: object) -> tuple[str, str, str]:
    parts = template.render(contact=contact, workspace_name="Kawiarnia", campaign_name="Jesień")
    return parts.subject, parts.html, parts.text


ESCAPES = [
    ("html", "{{ ''.__class__.__mro__ }}"),
    ("html", "{{ contact.__class__ }}"),
    ("html", "{{ contact['__class__'] }}"),
    ("html", "{{ cycler.__init__.__globals__ }}"),
    ("html", "{{ lipsum.__globals__['os'] }}"),
    ("html", "{{ self._TemplateReference__context }}"),
    ("html", "{{ contact.items() }}"),
    ("html", "{{ contact.email.upper() }}"),
    ("html", "{{ contact }}"),
    ("html", "{{ workspace.id }}"),
    ("html", "{{ contact.city.mro }}"),
    ("html", "{% for i in range(10**9) %}x{% endfor %}"),
    ("html", "{% for i in range(101) %}x{% endfor %}"),
    ("html", "{% for i in range(contact.city) %}x{% endfor %}"),
    ("html", "{% for i in [1, 2, 3] %}x{% endfor %}"),
    ("html", "{{ 'a' * 10**9 }}"),
    ("html", "{{ '%999999999d' % 1 }}"),
    ("html", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}"),
    ("html", "{% call x() %}y{% endcall %}"),
    ("html", "{% include 'x' %}"),
    ("html", "{% extends 'base.html' %}"),
    ("html", "{% import 'x' as y %}"),
    ("html", "{% from 'x' import y %}"),
    ("html", "{% set r = range(1000000) %}"),
    ("html", "{% set x %}captured{% endset %}"),
    ("html", "{% set a = 'aaaa' %}{% set b = a ~ a %}"),
    ("html", "{% with x = 1 %}{{ x }}{% endwith %}"),
    ("html", "{% filter upper %}x{% endfilter %}"),
    ("html", "{{ contact.city | attr('__class__') }}"),
    ("html", "{{ contact.city | safe }}"),
    ("html", "{{ contact.city | format('%s') }}"),
    ("html", "{{ contact.city[0:3] }}"),
    ("html", "{{ {'a': 1} }}"),
    ("html", "{{ contact.city is callable }}"),
    ("html", "{{ undefined_thing }}"),
    ("html", "{% for x in contact.interests recursive %}{{ loop(x) }}{% endfor %}"),
    ("subject", "{{ ''.__class__ }}"),
    ("text", "{% include 'x' %}"),
]


@pytest.mark.parametrize(("part", "source"), ESCAPES)
def test_escapes_are_refused_at_compile_time_naming_the_part_and_line(part: str, source: str) -> None:
    sources = {"subject": "Hej", "html": "<p>ok</p>", "text": None}
    sources[part] = "line one\n" + source
    with pytest.raises(InvalidInput) as caught:
        compile_template(
            subject=str(sources["subject"]), html=str(sources["html"]), text=sources["text"], allowed_fields=FIELDS
        )
    assert caught.value.field == part
    assert f"{part}, line 2" in caught.value.detail


def test_unknown_merge_field_names_it_and_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        compile_html("<p>\n{{ contact.foo }}</p>")
    assert caught.value.field == "html"
    assert "line 2" in caught.value.detail
    assert "unknown merge field contact.foo; known: bio, city, email" in caught.value.detail


def test_syntax_errors_name_the_part_and_line() -> None:
    with pytest.raises(InvalidInput) as caught:
        compile_template(subject="ok", html="<p>ok</p>", text="a\nb\n{% if %}", allowed_fields=FIELDS)
    assert caught.value.field == "text"
    assert "line 3" in caught.value.detail


def test_the_typical_newsletter_takes_the_fast_path() -> None:
    template = compile_html(NEWSLETTER)
    assert template.fast_html
    assert template.derived_text
    assert template.contact_fields == {"first_name", "city", "interests"}


def test_personalisation_missing_fields_default_and_escaping() -> None:
    template = compile_html(NEWSLETTER, subject="Hej {{ contact.first_name }} <3")
    subject, html, text = render(template, first_name="Ala <b>&", city="Kraków", interests=["kawa", "herbata"])
    assert subject == "Hej Ala <b>& <3"  # subjects are not HTML
    assert "Cześć Ala &lt;b&gt;&amp;!" in html
    assert "Cześć Ala <b>&!" in text
    assert "Zapraszamy do kawiarni w Kraków." in html
    assert "<li>Kawa</li><li>Herbata</li>" in html
    assert "Wiersz 1" in html and "Wiersz 2" in html
    assert "- Kawa\n- Herbata\n" in text
    assert "Zobacz ofertę (https://kawiarnia.example/oferta?miasto=Kraków&x=1)" in text

    _, html, text = render(template, city=None)
    assert "Cześć Kliencie!" in html
    assert "Zapraszamy!" in html and "kawiarni w" not in html
    assert "Cześć Kliencie!" in text


def test_css_is_inlined_and_no_stylesheet_is_left() -> None:
    _, html, _ = render(compile_html(NEWSLETTER), city="Gdańsk")
    assert "<style" not in html
    assert "@media" not in html  # dropped: a kept stylesheet could reach the footer (docs/templates.md)
    assert 'style="font-size: 24px;"' in html
    assert "background: #c0392b" in html
    assert "background:#f4f4f4" in html  # the body's own style, moved onto the content wrapper


def test_jinja_spelt_with_entities_or_raw_stays_literal_text() -> None:
    template = compile_html("<p>&#123;&#123; contact.email }} {% raw %}{{ contact.city }}{% endraw %}</p>")
    assert template.fast_html
    _, html, text = render(template, email="a@b.example", city="Kraków")
    assert "{{ contact.email }} {{ contact.city }}" in html
    assert "a@b.example" not in html and "Kraków" not in html
    assert "{{ contact.email }} {{ contact.city }}" in text


def test_a_field_named_like_a_dict_method_is_the_field() -> None:
    _, html, _ = render(compile_html("<p>{{ contact.items }}</p>"), items="three cups")
    assert "<p>three cups</p>" in html


def test_subject_is_one_line_whatever_the_data() -> None:
    template = compile_html("<p>x</p>", subject="Hej {{ contact.first_name }}\n  i  {{ contact.city }}")
    subject, _, _ = render(template, first_name="Ala\r\nBcc: victim@example.com", city="A\u2028B\x00C\tD")
    assert subject == "Hej Ala Bcc: victim@example.com i A B C D"
    assert "\n" not in subject and "\r" not in subject


def test_given_text_part_is_used_without_autoescape() -> None:
    template = compile_html("<p>{{ contact.city }}</p>", text="Miasto: {{ contact.city }}\n")
    assert not template.derived_text
    _, html, text = render(template, city="A&B <C>")
    assert "A&amp;B &lt;C&gt;" in html
    assert text == "Miasto: A&B <C>\n"


def test_loop_over_contact_data_is_capped() -> None:
    template = compile_html("{% for x in contact.interests %}{{ x }}{% endfor %}")
    render(template, interests=["a"] * 1000)
    with pytest.raises(RenderLimitExceeded) as caught:
        render(template, interests=["a"] * 1001)
    assert caught.value.field == "html"
    assert "loops more than 1000" in caught.value.detail


def test_nested_ranges_hit_the_iteration_cap() -> None:
    template = compile_html("{% for i in range(100) %}{% for j in range(100) %}.{% endfor %}{% endfor %}")
    with pytest.raises(RenderLimitExceeded):
        render(template)


def test_output_size_is_capped() -> None:
    template = compile_html("{% for i in range(100) %}{{ contact.bio }}{% endfor %}")
    render(template, bio="x" * 1000)
    with pytest.raises(RenderLimitExceeded) as caught:
        render(template, bio="x" * 20_000)
    assert "longer than 1000000 characters" in caught.value.detail


def test_replace_cannot_grow_text_exponentially() -> None:
    chain = "".join(" | replace('a', 'aaaaaaaaaa')" for _ in range(8))
    template = compile_html("{{ contact.bio" + chain + " }}")
    with pytest.raises(RenderLimitExceeded):
        render(template, bio="aaaa")


def test_format_date_and_loop_attributes() -> None:
    template = compile_html(
        "<p>{{ contact.joined | format_date('long', 'en') }}</p>"
        "{% for x in contact.interests %}{{ loop.index }}{% if not loop.last %},{% endif %}{% endfor %}"
    )
    _, html, _ = render(template, joined="2025-03-04", interests=["a", "b", "c"])
    assert "March 4, 2025" in html
    assert "1,2,3" in html


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ("<style>p { color: {{ contact.city }} }</style><p>x</p>", "Jinja inside <style>"),
        (
            "<style>li:first-child { color: red }</style>"
            "<ul>{% for x in contact.interests %}<li>{{ x }}</li>{% endfor %}</ul>",
            "structural CSS",
        ),
        ("<div {% if contact.city %}class=a{% endif %}>x</div>", "Jinja inside a tag"),
        ("{% if contact.city %}<div style='display:none'>{% endif %}<p>x</p>", "block straddles an element"),
        ("<p>{% if contact.city %}</p><div>{% endif %}x</div>", "block closes an element it did not open"),
        ("<!--[if mso]><td width='{{ contact.city }}'><![endif]--><p>x</p>", "Jinja inside a comment"),
    ],
)
def test_templates_the_proof_cannot_cover_take_the_slow_path_with_the_same_guarantees(html: str, reason: str) -> None:
    template = compile_html(html)
    assert not template.fast_html, reason
    for contact in ({"city": "Kraków", "interests": ["a", "b"]}, {}):
        parts = template.render(contact=contact, workspace_name="W", campaign_name="C", footer=FOOTER)
        assert parts.html.rstrip().endswith("</div></body></html>")
        tail = parts.html[parts.html.index('class="zgoda-footer"') :]
        assert "Wypisz się" in tail
        assert "<style" not in parts.html


def test_slow_path_inlines_css_after_rendering() -> None:
    template = compile_html("<style>.c { color: {{ contact.city }} }</style><p class='c'>x</p>")
    _, html, _ = render(template, city="red")
    assert 'style="color: red;"' in html


@pytest.mark.parametrize("contact", [{}, {"first_name": "Ola", "city": "Łódź", "interests": ["kawa", "ciasto"]}])
def test_derived_text_equals_converting_each_rendered_message(contact: dict[str, object]) -> None:
    template = compile_html(NEWSLETTER)
    _, html, text = render(template, **contact)
    assert text == html_to_text(html)


def test_fast_and_slow_paths_say_the_same() -> None:
    fast = compile_html(NEWSLETTER)
    slow = compile_html(NEWSLETTER.replace("h1 { font-size: 24px; }", "h1 { font-size: 24px; } p + p { margin: 0 }"))
    assert fast.fast_html and not slow.fast_html
    contact = {"first_name": "Ola", "city": "Łódź", "interests": ["kawa"]}
    assert render(fast, **contact)[2] == render(slow, **contact)[2]
