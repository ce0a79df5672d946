"""The subject's side: RFC 8058 one-click unsubscribe, the footer's unsubscribe page, the preference centre."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.support.factories import as_system
from tests.support.sending import SendingSetup, sending_setup
from zgoda.campaigns.links import LinkToken, make_token, new_send_ref
from zgoda.campaigns.models import Send, SendStatus
from zgoda.consent import purposes
from zgoda.consent.models import ConsentEvent, ConsentEvidence, ConsentState
from zgoda.core.settings import Settings


@pytest.fixture
def linked(session: Session, settings: Settings) -> tuple[SendingSetup, Send, str]:
    setup = sending_setup(session, eligible=1)
    contact = setup.eligible[0]
    send = Send(campaign_id=setup.campaign.id, contact_id=contact.id, ref=new_send_ref(), status=SendStatus.SENT)
    session.add(send)
    session.flush()
    token = make_token(
        settings.resolved_secret_key(),
        LinkToken(
            workspace_id=setup.workspace.id,
            contact_id=contact.id,
            purpose_id=setup.campaign.purpose_id,
            send_id=send.id,
        ),
    )
    session.commit()
    return setup, send, token


def _state(session: Session, setup: SendingSetup, contact_id: int, key: str = "email_marketing") -> str:
    as_system(session, setup.workspace)
    session.expire_all()
    purpose = purposes.purpose_by_key(session, key)
    state = session.scalar(
        select(ConsentState).where(ConsentState.contact_id == contact_id, ConsentState.purpose_id == purpose.id)
    )
    return state.status if state else "none"


def _methods(session: Session, setup: SendingSetup, contact_id: int) -> list[str]:
    as_system(session, setup.workspace)
    return list(
        session.scalars(
            select(ConsentEvent.method).where(ConsentEvent.contact_id == contact_id).order_by(ConsentEvent.id)
        )
    )


def test_one_click_unsubscribes_without_login_and_twice_is_harmless(
    client: TestClient, session: Session, linked: tuple[SendingSetup, Send, str]
) -> None:
    setup, send, token = linked
    client.cookies.clear()
    for _ in range(2):
        response = client.post(
            f"/u/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded", "user-agent": "Mail-Provider/1.0"},
            follow_redirects=False,
        )
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
    assert _state(session, setup, send.contact_id) == "withdrawn"
    assert _methods(session, setup, send.contact_id).count("one_click") == 1
    withdrawal = session.scalar(
        select(ConsentEvent).where(ConsentEvent.contact_id == send.contact_id, ConsentEvent.method == "one_click")
    )
    assert withdrawal is not None and withdrawal.reference == f"send:{send.id}"
    evidence = session.get(ConsentEvidence, withdrawal.id)
    assert evidence is not None and evidence.user_agent == "Mail-Provider/1.0"


def test_the_footer_link_shows_a_button_and_a_get_changes_nothing(
    client: TestClient, session: Session, linked: tuple[SendingSetup, Send, str]
) -> None:
    setup, send, token = linked
    page = client.get(f"/u/{token}")
    assert page.status_code == 200
    assert 'id="unsubscribe"' in page.text
    assert "Kawiarnia Pod Zegarem" in page.text
    assert _state(session, setup, send.contact_id) == "granted"
    done = client.post(f"/u/{token}", data={"confirm": "yes"})
    assert done.status_code == 200
    assert 'id="done"' in done.text
    assert _state(session, setup, send.contact_id) == "withdrawn"
    assert "unsubscribe_link" in _methods(session, setup, send.contact_id)


@pytest.mark.parametrize("mangle", [lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), lambda t: "x" + t])
def test_forged_tokens_are_404_and_change_nothing(
    client: TestClient, session: Session, linked: tuple[SendingSetup, Send, str], mangle: object
) -> None:
    setup, send, token = linked
    forged = mangle(token)  # type: ignore[operator]
    assert client.get(f"/u/{forged}").status_code == 404
    one_click = client.post(
        f"/u/{forged}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 404
    assert _state(session, setup, send.contact_id) == "granted"


def test_the_preference_centre_grants_and_withdraws(
    client: TestClient, session: Session, linked: tuple[SendingSetup, Send, str]
) -> None:
    setup, send, token = linked
    as_system(session, setup.workspace)
    marketing = purposes.purpose_by_key(session, "email_marketing")
    purposes.create_purpose(session, key="nowosci_produktowe", name="Nowości produktowe", channel="email")
    session.commit()
    news = purposes.purpose_by_key(session, "nowosci_produktowe")
    page = client.get(f"/preferences/{token}?lang=en")
    assert page.status_code == 200
    assert "Nowości produktowe" in page.text
    form_token = re.search(r'name="form_token" value="([^"]+)"', page.text)
    assert form_token is not None
    refused = client.post(f"/preferences/{token}", data={"purpose": [str(news.id)]})
    assert refused.status_code == 403
    saved = client.post(f"/preferences/{token}", data={"purpose": [str(news.id)], "form_token": form_token.group(1)})
    assert saved.status_code == 200
    assert 'id="saved"' in saved.text
    assert _state(session, setup, send.contact_id, "email_marketing") == "withdrawn"
    assert _state(session, setup, send.contact_id, "nowosci_produktowe") == "granted"
    assert _methods(session, setup, send.contact_id)[-2:] == ["preference_centre", "preference_centre"]
    assert marketing.id != news.id
