"""End to end in a real browser: sign in, switch workspaces, sign out, and tenant isolation on the pages."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from zgoda.demo import DEMO_PASSWORD, DEMO_SLUG, SECOND_SLUG

OWNER = "owner@demo.zgoda.example"
OPERATOR = "operator@demo.zgoda.example"
VIEWER = "viewer@demo.zgoda.example"
DEMO_NAME = "Kawiarnia Zgoda sp. z o.o."
CATERING_NAME = "Zgoda Catering sp. z o.o."
SESSION_COOKIE = "zgoda_session"


def _path(page: Page) -> str:
    return urlsplit(page.url).path


def _has_session(context: BrowserContext) -> bool:
    return any(cookie["name"] == SESSION_COOKIE for cookie in context.cookies())


def _sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    expect(page.get_by_role("heading", name="Sign in to Zgoda")).to_be_visible()
    page.locator("input[name='email']").fill(email)
    page.locator("input[name='password']").fill(password)
    page.get_by_role("button", name="Sign in").click()


@pytest.mark.browser
def test_owner_signs_in_switches_workspace_and_signs_out(
    page: Page, context: BrowserContext, live_server: str, tmp_path: Path
) -> None:
    _sign_in(page, OWNER, DEMO_PASSWORD)

    expect(page).to_have_url(f"{live_server}/w/{DEMO_SLUG}/")
    expect(page.locator("#workspace-name")).to_have_text(DEMO_NAME)
    assert _has_session(context)
    screenshot = tmp_path / "dashboard.png"
    page.screenshot(path=screenshot, full_page=True)
    assert screenshot.stat().st_size > 0
    assert screenshot.read_bytes().startswith(b"\x89PNG")

    switcher = page.locator("#workspace-switcher")
    catering_link = switcher.locator(f"a[data-slug='{SECOND_SLUG}']")
    expect(catering_link).to_be_hidden()
    switcher.locator("summary").click()
    expect(catering_link).to_be_visible()
    expect(catering_link).to_contain_text(CATERING_NAME)
    catering_link.click()

    expect(page).to_have_url(f"{live_server}/w/{SECOND_SLUG}/")
    expect(page.locator("#workspace-name")).to_have_text(CATERING_NAME)
    expect(switcher.locator("summary")).to_have_text(CATERING_NAME)

    page.locator("#logout").click()

    expect(page).to_have_url(re.compile(r"/login(\?|$)"))
    expect(page.get_by_role("status")).to_contain_text("You have signed out")
    assert not _has_session(context)

    page.goto(f"/w/{DEMO_SLUG}/")
    assert _path(page) == "/login"
    expect(page.get_by_role("heading", name="Sign in to Zgoda")).to_be_visible()
    expect(page.locator("#workspace-name")).to_have_count(0)


@pytest.mark.browser
def test_operator_cannot_see_a_workspace_they_are_not_a_member_of(page: Page, live_server: str) -> None:
    _sign_in(page, OPERATOR, DEMO_PASSWORD)
    expect(page).to_have_url(f"{live_server}/w/{DEMO_SLUG}/")
    expect(page.locator("#workspace-name")).to_have_text(DEMO_NAME)
    expect(page.locator("#workspace-switcher a[data-slug]")).to_have_count(1)
    expect(page.locator(f"#workspace-switcher a[data-slug='{SECOND_SLUG}']")).to_have_count(0)

    for path in (f"/w/{SECOND_SLUG}/", f"/w/{SECOND_SLUG}/audit"):
        response = page.goto(path)
        assert response is not None
        assert response.status == 404, path
        assert _path(page) == path  # answered in place, not redirected to a sign-in or another workspace
        main = page.locator("main")
        expect(main.get_by_role("heading", name="Not found")).to_be_visible()
        expect(main).to_contain_text(f"There is no workspace '{SECOND_SLUG}', or you are not a member of it.")
        assert CATERING_NAME not in page.content()
        expect(page.locator("#workspace-name")).to_have_count(0)

    response = page.goto(f"/w/{DEMO_SLUG}/audit")
    assert response is not None
    assert response.status == 200
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
    rows = page.locator("#audit-rows tr")
    expect(rows.first).to_be_visible()
    expect(rows.first).not_to_contain_text("No entries.")
    assert CATERING_NAME not in page.content()


@pytest.mark.browser
def test_wrong_password_is_refused_without_a_session(page: Page, context: BrowserContext) -> None:
    page.goto("/login")
    page.locator("input[name='email']").fill(VIEWER)
    page.locator("input[name='password']").fill("not-the-demo-password")
    with page.expect_response(lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/login") as answer:
        page.get_by_role("button", name="Sign in").click()

    assert answer.value.status == 401
    expect(page.locator("#login-error")).to_contain_text("Wrong email or password")
    assert _path(page) == "/login"
    expect(page.locator("input[name='email']")).to_have_value(VIEWER)
    assert not _has_session(context)

    page.goto(f"/w/{DEMO_SLUG}/")
    assert _path(page) == "/login"
