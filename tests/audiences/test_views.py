"""The pages for lists and segments: they render with their names, and their forms do what they say."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.campaigns import make_list, make_segment
from tests.support.consent import record
from tests.support.factories import make_workspace
from tests.support.web import Browser
from zgoda.accounts.roles import Role
from zgoda.audiences import service as audiences
from zgoda.audiences.models import ContactList, ListMember, Segment
from zgoda.consent import sources
from zgoda.contacts import service as contacts
from zgoda.core.clock import utcnow


def _contact(browser: Browser, email: str, city: str = "Kraków", *, consent: bool = False) -> int:
    session = browser.scoped()
    contact = contacts.upsert_contact(session, contacts.ContactData(email=email, attributes={"city": city})).contact
    if consent:
        record(session, contact, "grant", at=utcnow() - timedelta(days=1))
    session.commit()
    return contact.id


def test_lists_and_campaigns_are_in_the_navigation(browser: Browser) -> None:
    html = browser.sign_in(Role.VIEWER).page("/")
    assert f'href="/w/{browser.slug}/lists"' in html
    assert f'href="/w/{browser.slug}/campaigns"' in html


def test_lists_index_shows_names_and_counts(browser: Browser) -> None:
    contact_list = make_list(browser.session, browser.workspace, name="Newsletter zimowy")
    audiences.add_members(browser.scoped(), list_id=contact_list.id, contact_ids=[_contact(browser, "a@example.pl")])
    make_segment(browser.session, browser.workspace, name="Krakowianie")
    browser.session.commit()
    html = browser.sign_in(Role.VIEWER).page("/lists")
    assert "Newsletter zimowy" in html and "Krakowianie" in html
    assert "<td>1</td>" in html
    assert 'id="list-create"' not in html  # a viewer changes nothing


def test_create_a_list_and_add_members_by_id_and_from_a_segment(browser: Browser) -> None:
    shop = sources.create_source(browser.scoped(), name="Sklep WWW", kind="web_form")
    browser.session.commit()
    anna = _contact(browser, "anna@example.pl")
    piotr = _contact(browser, "piotr@example.pl", "Gdańsk")
    segment = make_segment(browser.session, browser.workspace, name="Kraków")
    browser.session.commit()
    browser.sign_in(Role.OPERATOR)

    created = browser.post("/lists", name="Klienci", description="Ze sklepu")
    assert created.status_code == 200 and "Klienci" in created.text
    list_id = browser.scoped().scalar(select(ContactList.id).where(ContactList.name == "Klienci"))

    added = browser.post(f"/lists/{list_id}/members", contact_ids=f"{piotr}", source_id=str(shop.id))
    assert added.status_code == 200 and "1 contact(s) added" in added.text
    assert "piotr@example.pl" in added.text and "Sklep WWW" in added.text
    from_segment = browser.post(f"/lists/{list_id}/members/segment", segment_id=str(segment.id))
    assert from_segment.status_code == 200 and "anna@example.pl" in from_segment.text
    members = set(browser.scoped().scalars(select(ListMember.contact_id).where(ListMember.list_id == list_id)))
    assert members == {anna, piotr}

    bad = browser.post(f"/lists/{list_id}/members", contact_ids="12, abc")
    assert bad.status_code == 422 and "contact_ids" in bad.text
    for wrong in ("\u00b2", "\u0663", "99999999999999999999"):  # digits to str.isdigit, not ids
        bad = browser.post(f"/lists/{list_id}/members", contact_ids=wrong)
        assert bad.status_code == 422 and "is not a contact id" in bad.text, wrong
    removed = browser.post(f"/lists/{list_id}/members/remove", contact_ids=str(anna))
    assert removed.status_code == 200 and "1 contact(s) removed" in removed.text


def test_segment_editor_live_count_and_preview(browser: Browser) -> None:
    _contact(browser, "anna@example.pl", consent=True)
    _contact(browser, "piotr@example.pl")
    _contact(browser, "ewa@example.pl", "Gdańsk")
    browser.sign_in(Role.OPERATOR)
    index = browser.page("/segments")
    assert 'hx-post="/w/' in index and "/segments/count" in index and "Rule format" in index

    definition = json.dumps(
        {"match": "all", "rules": [{"field": "attribute", "key": "city", "op": "eq", "value": "kraków"}]}
    )
    count = browser.post("/segments/count", definition=definition)
    assert count.status_code == 200 and '<strong id="count-value">2</strong>' in count.text
    broken = browser.post("/segments/count", definition='{"match": "all", "rules": [')
    assert "Not valid JSON" in broken.text
    wrong_op = browser.post("/segments/count", definition=definition.replace('"eq"', '"like"'))
    assert "definition.rules[0].op" in wrong_op.text

    created = browser.post("/segments", name="Kraków", definition=definition)
    assert created.status_code == 200 and "Kraków" in created.text
    assert 'id="preview-eligible">1<' in created.text  # anna has consent, piotr does not
    assert "No consent for this purpose" in created.text
    segment_id = browser.scoped().scalar(select(Segment.id).where(Segment.name == "Kraków"))
    fragment = browser.client.get(f"/w/{browser.slug}/segments/{segment_id}/preview", params={"purpose": "nope"})
    assert fragment.status_code == 200 and 'id="preview-error"' in fragment.text

    saved = browser.post(f"/segments/{segment_id}", name="Gdańsk", definition=definition.replace("kraków", "Gdańsk"))
    assert saved.status_code == 200 and "Gdańsk" in saved.text
    assert browser.scoped().scalar(select(func.count()).select_from(Segment)) == 1
    refused = browser.post(f"/segments/{segment_id}", name="Gdańsk", definition="[]")
    assert refused.status_code == 422 and "definition" in refused.text


def test_list_page_of_another_workspace_is_not_found(browser: Browser, session: Session) -> None:
    theirs = make_list(session, make_workspace(session), name="Their list")
    session.commit()
    browser.sign_in(Role.OWNER)
    response = browser.client.get(f"/w/{browser.slug}/lists/{theirs.id}")
    assert response.status_code == 404 and "Their list" not in response.text
