"""Lists, segments and the eligible audience: who a campaign may reach, and why not the others."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from tests.support.consent import record
from tests.support.factories import as_system, make_workspace
from zgoda.accounts.models import Workspace
from zgoda.audiences import service as audiences
from zgoda.audiences.eligibility import Exclusion, audience_for, stream_eligible
from zgoda.consent import purposes, sources
from zgoda.contacts import service as contacts
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.errors import InvalidInput, NotFound
from zgoda.core.keys import address_hasher
from zgoda.feedback.models import PlatformSuppression, Suppression


def _contact(session: Session, email: str | None, **attributes: object) -> Contact:
    data = contacts.ContactData(email=email, phone=None if email else "+48600100200", attributes=dict(attributes))
    return contacts.upsert_contact(session, data).contact


@pytest.fixture
def people(session: Session) -> tuple[Workspace, dict[str, Contact]]:
    """A workspace whose contacts cover every reason the gate knows."""
    workspace = make_workspace(session)
    as_system(session, workspace)
    made = {
        "granted": _contact(session, "granted@example.pl", city="Kraków"),
        "granted2": _contact(session, "granted2@example.pl", city="Gdańsk"),
        "none": _contact(session, "none@example.pl", city="Kraków"),
        "pending": _contact(session, "pending@example.pl"),
        "withdrawn": _contact(session, "withdrawn@example.pl"),
        "expired": _contact(session, "expired@example.pl"),
        "suppressed": _contact(session, "suppressed@example.pl"),
        "platform": _contact(session, "platform@example.pl"),
        "restricted": _contact(session, "restricted@example.pl"),
        "interest": _contact(session, "interest@example.pl"),
        "phone_only": _contact(session, None),
    }
    for key in ("granted", "granted2", "suppressed", "platform", "restricted", "withdrawn", "expired"):
        record(session, made[key], "grant", at=utcnow() - timedelta(days=3))
    record(session, made["pending"], "grant", requires_confirmation=True)
    record(session, made["withdrawn"], "withdraw")
    record(session, made["expired"], "expire")
    record(session, made["interest"], "grant", legal_basis="legitimate_interest")
    hasher = address_hasher(session)
    session.add(Suppression(address_hash=hasher("suppressed@example.pl"), reason="hard_bounce"))
    session.add(PlatformSuppression(address_hash=hasher("platform@example.pl"), reason="operator"))
    made["restricted"].restricted_at = utcnow()
    session.flush()
    return workspace, made


def _everyone(session: Session, made: dict[str, Contact]) -> int:
    contact_list = audiences.create_list(session, name="Everyone")
    audiences.add_members(session, list_id=contact_list.id, contact_ids=[c.id for c in made.values()])
    return contact_list.id


def test_preview_counts_every_reason(session: Session, people: tuple[Workspace, dict[str, Contact]]) -> None:
    _, made = people
    list_id = _everyone(session, made)
    result = audiences.preview_audience(session, purpose_key="email_marketing", list_id=list_id)
    assert result.total == len(made)
    assert result.eligible == 2
    excluded = {reason: count for reason, count in result.excluded.items() if count}
    assert excluded == {
        Exclusion.NO_CONSENT: 1,
        Exclusion.CONSENT_PENDING: 1,
        Exclusion.CONSENT_WITHDRAWN: 1,
        Exclusion.CONSENT_EXPIRED: 1,
        Exclusion.SUPPRESSED: 2,
        Exclusion.RESTRICTED: 1,
        Exclusion.SOFT_OPT_IN_OFF: 1,
        Exclusion.NO_ADDRESS: 1,
    }
    eligible = {
        email
        for _, email in stream_eligible(session, audience_for(session, purpose_id=_purpose(session), list_id=list_id))
    }
    assert eligible == {"granted@example.pl", "granted2@example.pl"}


def _purpose(session: Session, key: str = "email_marketing") -> int:
    return purposes.purpose_by_key(session, key).id


def test_soft_opt_in_counts_only_when_the_workspace_allows_it(
    session: Session, people: tuple[Workspace, dict[str, Contact]]
) -> None:
    workspace, made = people
    list_id = _everyone(session, made)
    workspace.settings = {**(workspace.settings or {}), "sending": {"soft_opt_in": True}}
    session.flush()
    result = audiences.preview_audience(session, purpose_key="email_marketing", list_id=list_id)
    assert result.eligible == 3
    assert result.excluded[Exclusion.SOFT_OPT_IN_OFF] == 0


def test_blocked_list_and_suspended_workspace_reach_nobody(
    session: Session, people: tuple[Workspace, dict[str, Contact]]
) -> None:
    workspace, made = people
    list_id = _everyone(session, made)
    contact_list = audiences.get_list(session, list_id=list_id)
    contact_list.blocked_at = utcnow()
    session.flush()
    blocked = audiences.preview_audience(session, purpose_key="email_marketing", list_id=list_id)
    assert blocked.eligible == 0
    assert blocked.excluded[Exclusion.LIST_BLOCKED] == 9  # all but no_address and restricted (earlier reasons)
    contact_list.blocked_at = None
    workspace.sending_suspended_at = utcnow()
    session.flush()
    suspended = audiences.preview_audience(session, purpose_key="email_marketing", list_id=list_id)
    assert suspended.eligible == 0
    assert suspended.excluded[Exclusion.WORKSPACE_SUSPENDED] == 9


def test_consent_past_its_validity_reads_as_expired(session: Session) -> None:
    workspace = make_workspace(session)
    as_system(session, workspace)
    purpose = purposes.purpose_by_key(session, "email_marketing")
    purposes.update_purpose(session, purpose_id=purpose.id, validity_days=30)
    old = _contact(session, "old@example.pl")
    record(session, old, "grant", at=utcnow() - timedelta(days=40))
    contact_list = audiences.create_list(session, name="Old")
    audiences.add_members(session, list_id=contact_list.id, contact_ids=[old.id])
    result = audiences.preview_audience(session, purpose_key="email_marketing", list_id=contact_list.id)
    assert result.eligible == 0
    assert result.excluded[Exclusion.CONSENT_EXPIRED] == 1


def test_segment_rules(session: Session, people: tuple[Workspace, dict[str, Contact]]) -> None:
    _, made = people
    krakow = {"match": "all", "rules": [{"field": "attribute", "key": "city", "op": "eq", "value": "kraków"}]}
    assert audiences.count_matching(session, krakow) == 2
    granted = {"rules": [{"field": "consent", "purpose": "email_marketing", "op": "is", "value": "granted"}]}
    # granted, granted2, suppressed, platform, restricted, interest (legitimate interest is a granted state)
    assert audiences.count_matching(session, granted) == 6
    both = {"match": "all", "rules": [*krakow["rules"], *granted["rules"]]}
    assert audiences.count_matching(session, both) == 1
    either = {"match": "any", "rules": [*krakow["rules"], *granted["rules"]]}
    assert audiences.count_matching(session, either) == 7
    domain = {"rules": [{"field": "email", "op": "ends_with", "value": "@EXAMPLE.pl"}]}
    assert audiences.count_matching(session, domain) == 10
    withdrawn = {"rules": [{"field": "consent", "purpose": "email_marketing", "op": "is", "value": "withdrawn"}]}
    assert audiences.count_matching(session, withdrawn) == 1
    nothing = {"rules": [{"field": "consent", "purpose": "email_marketing", "op": "is", "value": "none"}]}
    assert audiences.count_matching(session, nothing) == 2  # "none" (a contact without any event) and phone_only
    recent = {"rules": [{"field": "created", "op": "within_days", "days": 1}]}
    assert audiences.count_matching(session, recent) == len(made)
    never_sent = {"rules": [{"field": "activity", "event": "sent", "op": "not_within_days", "days": 90}]}
    assert audiences.count_matching(session, never_sent) == len(made)


def test_segment_on_list_membership_and_preview(session: Session, people: tuple[Workspace, dict[str, Contact]]) -> None:
    _, made = people
    vip = audiences.create_list(session, name="VIP")
    audiences.add_members(session, list_id=vip.id, contact_ids=[made["granted"].id, made["none"].id])
    segment = audiences.create_segment(
        session, name="VIP", definition={"rules": [{"field": "list", "op": "in", "list_id": vip.id}]}
    )
    result = audiences.preview_audience(session, purpose_key="email_marketing", segment_id=segment.id)
    assert (result.total, result.eligible, result.excluded[Exclusion.NO_CONSENT]) == (2, 1, 1)


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        ({"rules": []}, "definition.rules"),
        ({"match": "some", "rules": [{"field": "email", "op": "exists"}]}, "definition.match"),
        ({"rules": [{"field": "shoe_size", "op": "eq", "value": "42"}]}, "definition.rules[0].field"),
        ({"rules": [{"field": "email", "op": "like", "value": "x"}]}, "definition.rules[0].op"),
        ({"rules": [{"field": "attribute", "op": "eq", "value": "x"}]}, "definition.rules[0].key"),
        (
            {"rules": [{"field": "consent", "purpose": "nope", "op": "is", "value": "granted"}]},
            "definition.rules[0].purpose",
        ),
        (
            {"rules": [{"field": "consent", "purpose": "email_marketing", "op": "is", "value": "yes"}]},
            "definition.rules[0].value",
        ),
        (
            {"rules": [{"field": "activity", "event": "opened", "op": "within_days", "days": 0}]},
            "definition.rules[0].days",
        ),
        ({"rules": [{"field": "list", "op": "in", "list_id": 999999}]}, "definition.rules[0].list_id"),
        ({"rules": [{"field": "email", "op": "exists"}], "extra": 1}, "definition.extra"),
    ],
)
def test_bad_segment_definitions_name_the_rule(session: Session, definition: object, field: str) -> None:
    workspace = make_workspace(session)
    as_system(session, workspace)
    with pytest.raises(InvalidInput) as error:
        audiences.create_segment(session, name="Bad", definition=definition)
    assert error.value.field == field


def test_lists_of_another_workspace_are_invisible(session: Session) -> None:
    first = make_workspace(session)
    as_system(session, first)
    theirs = audiences.create_list(session, name="Theirs")
    member = _contact(session, "a@example.pl")
    audiences.add_members(session, list_id=theirs.id, contact_ids=[member.id])
    second = make_workspace(session)
    as_system(session, second)
    with pytest.raises(NotFound):
        audiences.get_list(session, list_id=theirs.id)
    with pytest.raises(InvalidInput):
        audiences.create_segment(
            session, name="S", definition={"rules": [{"field": "list", "op": "in", "list_id": theirs.id}]}
        )
    mine = audiences.create_list(session, name="Mine")
    with pytest.raises(InvalidInput) as error:
        audiences.add_members(session, list_id=mine.id, contact_ids=[member.id])
    assert error.value.field == "contact_ids"


def test_list_members_keep_their_source(session: Session) -> None:
    workspace = make_workspace(session)
    as_system(session, workspace)
    shop = sources.create_source(session, name="Shop", kind="shop")
    fair = sources.create_source(session, name="Fair", kind="manual")
    contact_list = audiences.create_list(session, name="Mixed")
    a, b, c = (_contact(session, f"{n}@example.pl") for n in "abc")
    assert audiences.add_members(session, list_id=contact_list.id, contact_ids=[a.id, b.id], source_id=shop.id) == 2
    assert audiences.add_members(session, list_id=contact_list.id, contact_ids=[b.id, c.id], source_id=fair.id) == 1
    report = {row["name"]: row["members"] for row in audiences.list_sources(session, list_id=contact_list.id)}
    assert report == {"Shop": 2, "Fair": 1}
    assert audiences.remove_members(session, list_id=contact_list.id, contact_ids=[a.id, 424242]) == 1
