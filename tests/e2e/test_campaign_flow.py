"""End to end in a real browser: the demo campaign is sent, caught by the sink, and its unsubscribe link works."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_browser import OWNER, _sign_in
from zgoda.demo import DEMO_PASSWORD, DEMO_SLUG


def _send_demo_campaign(page: Page, name: str) -> int:
    """Sign in as the demo's owner, send the named campaign from its page and wait until it is sent;
    the number of messages sent."""
    _sign_in(page, OWNER, DEMO_PASSWORD)
    page.goto(f"/w/{DEMO_SLUG}/campaigns")
    page.get_by_role("link", name=name).click()
    expect(page.locator("h1")).to_have_text(name)
    page.locator("#send-now button").click()
    expect(page.locator("#campaign-status")).to_have_text("sent", timeout=60_000)
    return int(page.locator("#progress-sent").inner_text())


def _as_recipient(page: Page, url: str) -> Page:
    """A new page without the staff session, opened at ``url``: the recipient's browser."""
    subject = page.context.new_page()
    subject.context.clear_cookies()
    subject.goto(url)
    return subject


@pytest.mark.browser
def test_the_demo_campaign_reaches_the_sink_and_its_recipient_can_unsubscribe(page: Page, live_server: str) -> None:
    assert _send_demo_campaign(page, "Karta zimowa 2026") > 0
    assert int(page.locator("#progress-refused").inner_text()) > 0  # the demo list has contacts without consent

    page.goto(f"/w/{DEMO_SLUG}/caught-mail")
    rows = page.locator("#caught-mail tbody tr")
    expect(rows.first).to_be_visible()
    rows.first.locator("a").first.click()
    checks = page.locator("#message-checks")
    expect(checks).to_contain_text("List-Unsubscribe-Post")
    headers = page.locator("#message-headers").inner_text()
    assert "DKIM-Signature" in headers
    link = re.search(r"<(http://127\.0\.0\.1:\d+/u/[^>]+)>", headers)
    assert link is not None, headers

    subject = _as_recipient(page, link.group(1))
    subject.locator("#unsubscribe").click()
    expect(subject.locator("#done")).to_be_visible()


@pytest.mark.browser
def test_the_demo_consent_request_is_answered_in_the_browser(page: Page, live_server: str) -> None:
    assert _send_demo_campaign(page, "Potwierdź zapis na newsletter") > 0
    expect(page.locator("#campaign-kind")).to_contain_text("Consent request")

    page.goto(f"/w/{DEMO_SLUG}/caught-mail")
    request = page.locator("#caught-mail tbody tr", has_text="Potwierdź zapis").first
    expect(request).to_be_visible()
    request.locator("a").first.click()
    text = page.locator("#message-text").inner_text()
    link = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", text)
    assert link is not None, text

    subject = _as_recipient(page, link.group(1))
    expect(subject.locator("#notice")).to_be_visible()  # the notice's full text, before anything is recorded
    subject.locator("#agree").click()
    expect(subject.locator("#done")).to_be_visible()
    subject.goto(link.group(1))  # the same link again: already recorded, no button
    expect(subject.locator("#done")).to_be_visible()
    expect(subject.locator("#agree")).to_have_count(0)
