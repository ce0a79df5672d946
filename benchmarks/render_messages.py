"""Message rendering benchmark: compile a 5 KB newsletter once, then render + footer + compose N messages.

Run: ``uv run python benchmarks/render_messages.py [--messages N] [--seed S]``

The template: a typical table-based Polish newsletter of about 5 KB (a ``<style>`` block of a dozen rules
and a media query, a header, three articles, a loop over the contact's interests, a conditional paragraph,
a button; eight merge fields). N contacts with different names, cities and interests (``random.Random``).

Measured in the same run, each over the same N contacts, on one core:

- pipeline: ``CompiledTemplate.render(..., footer=...)`` (sandboxed Jinja, CSS inlined at compile time,
  derived text part, footer) and ``compose_message`` (all headers, quoted-printable, CRLF) — what the
  sending loop does per message, DKIM aside;
- its two halves alone, and the slow path (the same template with one ``p + p`` rule, which makes the
  CSS inlining, sanitising and text conversion happen per message);
- baseline: the naive standard-library way of making the same message: ``str.replace`` of the merge
  fields into the already-inlined html and text (no sandbox, no escaping, no footer re-parse) and an
  ``email.message.EmailMessage`` with the same headers, serialised with ``as_bytes()``. It is the
  cheapest honest way to produce comparable bytes, so the ratio is the price of the sandbox, the footer
  guarantees and the hand-built MIME, against doing it carelessly;
- ``EmailMessage`` composition alone, against ``compose_message`` alone: why the MIME is built by hand.

Goals: the pipeline at 3,000 messages/s or more, ``compose_message`` at 5,000/s or more.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP

from zgoda.campaigns.footer import FooterContext
from zgoda.campaigns.message import compose_message
from zgoda.campaigns.rendering import CompiledTemplate, RenderedParts, compile_template

PIPELINE_GOAL = 3_000
COMPOSE_GOAL = 5_000
FIELDS = {"email", "phone", "first_name", "last_name", "city", "interests", "points", "joined"}
ARTICLE = """
<tr><td class="article">
  <h2>{title}</h2>
  <p>Lorem ipsum dolor sit amet, consectetur adipiscing elit. Integer nec odio. Praesent libero. Sed cursus ante
  dapibus diam. Sed nisi. Nulla quis sem at nibh elementum imperdiet. Duis sagittis ipsum. Praesent mauris. Fusce
  nec tellus sed augue semper porta. Mauris massa. Vestibulum lacinia arcu eget nulla. Zażółć gęślą jaźń.</p>
  <p><a class="more" href="https://kawiarnia.example/blog/{slug}?utm_source=newsletter">Czytaj dalej &raquo;</a></p>
</td></tr>"""
NEWSLETTER = (
    """<!DOCTYPE html>
<html lang="pl"><head><meta charset="utf-8"><title>{{ campaign.name }}</title>
<style>
  body { margin: 0; padding: 0; background: #f4f1ec; }
  .wrapper { width: 100%; background: #f4f1ec; }
  .container { width: 600px; margin: 0 auto; background: #ffffff; }
  .header { padding: 24px; background: #3e2723; color: #ffffff; font-family: Georgia, serif; }
  .header h1 { margin: 0; font-size: 28px; }
  .article { padding: 16px 24px; font-family: Arial, sans-serif; color: #333333; }
  .article h2 { font-size: 20px; color: #3e2723; margin: 0 0 8px 0; }
  .article p { font-size: 15px; line-height: 1.5; margin: 0 0 12px 0; }
  a.more { color: #8d6e63; font-weight: bold; }
  .button { display: inline-block; padding: 12px 24px; background: #8d6e63; color: #ffffff; border-radius: 4px; }
  .interests li { font-size: 14px; color: #5d4037; }
  @media (max-width: 620px) { .container { width: 100% !important; } }
</style></head>
<body>
<table class="wrapper" role="presentation"><tr><td>
<table class="container" role="presentation">
<tr><td class="header"><h1>Cześć {{ contact.first_name | default('Drogi Kliencie') }}!</h1>
<p>Jesień w {{ workspace.name }} — nowości z {{ contact.city | default('Twojej okolicy') }}.</p></td></tr>"""
    + "".join(
        ARTICLE.format(title=title, slug=slug)
        for title, slug in [
            ("Nowa kawa z Etiopii", "etiopia"),
            ("Ciasto dyniowe wraca", "dynia"),
            ("Warsztaty latte art", "latte"),
        ]
    )
    + """
<tr><td class="article">
{% if contact.points %}<p>Masz {{ contact.points }} punktów — wymień je na darmową kawę.</p>{% endif %}
<ul class="interests">{% for item in contact.interests %}<li>Polecamy dla miłośników: {{ item }}</li>{% endfor %}</ul>
<p><a class="button" href="https://kawiarnia.example/oferta?miasto={{ contact.city }}">Zobacz ofertę</a></p>
<p>Klient od {{ contact.joined | default('dziś') }}, {{ contact.email }}</p>
</td></tr>
</table></td></tr></table>
</body></html>"""
)
FIRST = ["Anna", "Łucja", "Zofia", "Jan", "Paweł", "Grzegorz", "Małgorzata", "Józef", "Ewa", "Krzysztof"]
LAST = ["Nowak", "Kowalska", "Wiśniewski", "Wójcik", "Kamińska", "Lewandowski", "Zieliński", "Szymańska"]
CITIES = ["Warszawa", "Kraków", "Łódź", "Wrocław", "Poznań", "Gdańsk", "Szczecin", "Bydgoszcz", None]
INTERESTS = ["espresso", "herbata", "ciasta", "kawa przelewowa", "śniadania", "czekolada"]


def make_contacts(count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    contacts = []
    for number in range(count):
        first = rng.choice(FIRST)
        contacts.append(
            {
                "email": f"klient{number}@example.com",
                "first_name": first,
                "last_name": rng.choice(LAST),
                "city": rng.choice(CITIES),
                "interests": rng.sample(INTERESTS, rng.randint(0, 3)),
                "points": rng.choice([None, 0, 120, 450]),
                "joined": f"20{rng.randint(10, 25)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
            }
        )
    return contacts


def footer_for(number: int) -> FooterContext:
    return FooterContext(
        sender_name="Kawiarnia Zgoda sp. z o.o.",
        postal_address="ul. Prosta 1, 00-001 Warszawa, PL",
        purpose_label="Newsletter kawiarni",
        source_label="Formularz zapisu na stronie",
        unsubscribe_url=f"https://zgoda.example/u/{number:08d}.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        preferences_url=f"https://zgoda.example/p/{number:08d}.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        language="pl",
    )


def headers_for(number: int) -> dict[str, object]:
    return {
        "from_address": "news@kawiarnia.example",
        "from_name": "Kawiarnia Zgoda",
        "reply_to": "biuro@kawiarnia.example",
        "message_id": f"<s{number}.w7@kawiarnia.example>",
        "return_path": f"b+s{number}@bounce.zgoda.example",
        "list_unsubscribe_https": f"https://zgoda.example/u/{number:08d}.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        "list_unsubscribe_mailto": f"mailto:u+s{number}@bounce.zgoda.example",
        "list_id": "Jesień w kawiarni <campaign-9.kawiarnia.kawiarnia.example>",
        "feedback_id": "9:kawiarnia:zgoda",
        "ref": f"s{number}",
        "date": datetime(2026, 10, 1, 9, 0, tzinfo=UTC),
    }


def timed(label: str, count: int, work: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for number in range(count):
        work(number)
    seconds = time.perf_counter() - started
    rate = count / seconds
    print(f"  {label:<58} {rate:>9,.0f} /s  ({seconds * 1e6 / count:,.0f} µs each)")
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    count = args.messages
    contacts = make_contacts(count, args.seed)

    started = time.perf_counter()
    template = compile_template(subject="{{ contact.first_name }}, jesień w kawiarni", html=NEWSLETTER, text=None,
                                allowed_fields=FIELDS)  # fmt: skip
    compile_ms = (time.perf_counter() - started) * 1000
    slow = compile_template(subject="x", html=NEWSLETTER.replace("a.more {", "p + p { margin: 0 } a.more {"),
                            text=None, allowed_fields=FIELDS)  # fmt: skip
    assert template.fast_html
    assert template.derived_text
    assert not slow.fast_html
    sample = template.render(
        contact=contacts[0], workspace_name="Kawiarnia", campaign_name="Jesień", footer=footer_for(0)
    )
    sample_bytes = compose_message(parts=sample, to_address="klient0@example.com", **headers_for(0))  # type: ignore[arg-type]

    print(f"Python {platform.python_version()} on {platform.machine()}, {count:,} messages")
    print(f"template: {len(NEWSLETTER):,} characters of html, compiled in {compile_ms:.1f} ms")
    print(f"a message: {len(sample_bytes):,} bytes ({len(sample.html):,} html, {len(sample.text):,} text)")

    def render(number: int, compiled: CompiledTemplate = template) -> RenderedParts:
        return compiled.render(contact=contacts[number], workspace_name="Kawiarnia", campaign_name="Jesień",
                               footer=footer_for(number))  # fmt: skip

    rendered = [render(number) for number in range(count)]

    def pipeline(number: int) -> bytes:
        return compose_message(parts=render(number), to_address=str(contacts[number]["email"]),
                               **headers_for(number))  # type: ignore[arg-type]  # fmt: skip

    def compose_only(number: int) -> bytes:
        return compose_message(parts=rendered[number], to_address=str(contacts[number]["email"]),
                               **headers_for(number))  # type: ignore[arg-type]  # fmt: skip

    def email_message(parts: RenderedParts, number: int) -> bytes:
        headers = headers_for(number)
        message = EmailMessage(policy=SMTP)
        message["From"] = f"Kawiarnia Zgoda <{headers['from_address']}>"
        message["To"] = str(contacts[number]["email"])
        message["Subject"] = parts.subject
        message["Date"] = headers["date"]
        message["Message-ID"] = str(headers["message_id"])
        message["Reply-To"] = str(headers["reply_to"])
        message["List-Unsubscribe"] = f"<{headers['list_unsubscribe_https']}>, <{headers['list_unsubscribe_mailto']}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message["List-Id"] = str(headers["list_id"])
        message["Feedback-ID"] = str(headers["feedback_id"])
        message["X-Zgoda-Ref"] = str(headers["ref"])
        message.set_content(parts.text, cte="quoted-printable")
        message.add_alternative(parts.html, subtype="html", cte="quoted-printable")
        return message.as_bytes()

    plain = template.render(contact={name: f"@@{name}@@" for name in FIELDS}, workspace_name="Kawiarnia",
                            campaign_name="Jesień", footer=footer_for(0))  # fmt: skip

    def baseline(number: int) -> bytes:
        html, text, subject = plain.html, plain.text, plain.subject
        for name, value in contacts[number].items():
            html = html.replace(f"@@{name}@@", str(value))
            text = text.replace(f"@@{name}@@", str(value))
            subject = subject.replace(f"@@{name}@@", str(value))
        return email_message(RenderedParts(subject=subject, html=html, text=text), number)

    print("figures (one core):")
    pipeline_rate = timed("pipeline: render + footer + compose_message", count, pipeline)
    timed("  render + footer alone (fast path)", count, render)
    slow_count = max(count // 5, 1)
    timed("  render + footer alone (slow path: CSS per message)", slow_count, lambda n: render(n, slow))
    compose_rate = timed("  compose_message alone", count, compose_only)
    email_rate = timed("  EmailMessage composition alone (same parts and headers)", count,
                       lambda n: email_message(rendered[n], n))  # fmt: skip
    baseline_rate = timed("baseline: str.replace + EmailMessage", count, baseline)
    print(f"pipeline / baseline: {pipeline_rate / baseline_rate:.2f}x the baseline's rate")
    print(f"compose_message / EmailMessage: {compose_rate / email_rate:.1f}x faster")
    ok = pipeline_rate >= PIPELINE_GOAL and compose_rate >= COMPOSE_GOAL
    print(f"goals (pipeline ≥ {PIPELINE_GOAL:,}/s, compose ≥ {COMPOSE_GOAL:,}/s): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
