"""Consent-aware tracking: pixel and signed click redirects, recorded only under a profiling consent."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.consent import record
from tests.support.factories import as_system
from tests.support.sending import SendingSetup, sending_setup
from zgoda.campaigns.links import LinkToken, make_token, new_send_ref
from zgoda.campaigns.models import Send, SendStatus
from zgoda.campaigns.tracking import add_tracking, click_url, link_signature
from zgoda.core.settings import Settings
from zgoda.feedback.models import SendEvent

SECRET = b"tracking-test-secret"


def test_links_are_rewritten_but_ours_and_mailto_are_not() -> None:
    html = (
        '<html><body><p><a href="https://shop.example/offer?a=1&amp;b=2">Offer</a> '
        '<a href="mailto:biuro@example.pl">Write</a> <a href="https://zgoda.example.com/u/tok">Unsubscribe</a>'
        "</p></body></html>"
    )
    tracked = add_tracking(html, base_url="https://zgoda.example.com", secret=SECRET, token="tok")
    assert tracked.count("/t/c/tok?u=") == 1
    assert quote("https://shop.example/offer?a=1&b=2", safe="") in tracked
    assert 'href="mailto:biuro@example.pl"' in tracked
    assert 'href="https://zgoda.example.com/u/tok"' in tracked
    assert re.search(r"<body><img src=\"https://zgoda.example.com/t/o/tok.gif\"", tracked)


@pytest.fixture
def tracked_send(session: Session, settings: Settings) -> tuple[SendingSetup, Send, str]:
    setup = sending_setup(session, eligible=2)
    contact = setup.eligible[0]
    send = Send(campaign_id=setup.campaign.id, contact_id=contact.id, ref=new_send_ref(), status=SendStatus.SENT)
    session.add(send)
    session.flush()
    token = make_token(
        settings.resolved_secret_key(),
        LinkToken(setup.workspace.id, contact.id, setup.campaign.purpose_id, send.id),
    )
    session.commit()
    return setup, send, token


def _kinds(session: Session, setup: SendingSetup) -> list[str]:
    as_system(session, setup.workspace)
    session.expire_all()
    return list(session.scalars(select(SendEvent.kind).order_by(SendEvent.id)))


def test_without_a_profiling_consent_nothing_is_recorded(
    client: TestClient, session: Session, settings: Settings, tracked_send: tuple[SendingSetup, Send, str]
) -> None:
    setup, _, token = tracked_send
    pixel = client.get(f"/t/o/{token}.gif")
    assert pixel.status_code == 200
    assert pixel.headers["content-type"] == "image/gif"
    target = "https://shop.example/offer"
    link = click_url("http://testserver", settings.resolved_secret_key(), token, target)
    response = client.get(link.removeprefix("http://testserver"), follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (302, target)
    assert _kinds(session, setup) == []


def test_with_a_profiling_consent_opens_and_clicks_are_recorded_once_a_day(
    client: TestClient, session: Session, settings: Settings, tracked_send: tuple[SendingSetup, Send, str]
) -> None:
    setup, send, token = tracked_send
    as_system(session, setup.workspace)
    record(session, setup.eligible[0], "grant", purpose="profiling")
    session.commit()
    for _ in range(3):
        client.get(f"/t/o/{token}.gif")
    link = click_url("http://testserver", settings.resolved_secret_key(), token, "https://shop.example/offer")
    for _ in range(2):
        client.get(link.removeprefix("http://testserver"), follow_redirects=False)
    assert _kinds(session, setup) == ["open", "click"]
    record(session, setup.eligible[0], "withdraw", purpose="profiling")
    session.commit()
    other = click_url("http://testserver", settings.resolved_secret_key(), token, "https://shop.example/other")
    client.get(other.removeprefix("http://testserver"), follow_redirects=False)
    assert _kinds(session, setup) == ["open", "click"]
    assert send.id is not None


def test_a_click_address_cannot_be_turned_into_an_open_redirect(
    client: TestClient, settings: Settings, tracked_send: tuple[SendingSetup, Send, str]
) -> None:
    _, _, token = tracked_send
    good = link_signature(settings.resolved_secret_key(), token, "https://shop.example/offer")
    evil = quote("https://evil.example/", safe="")
    response = client.get(f"/t/c/{token}?u={evil}&s={good}", follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers
