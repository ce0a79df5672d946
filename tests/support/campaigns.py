"""Lists, segments, templates, campaigns and sending domains, made through the services."""

from __future__ import annotations

import itertools

from sqlalchemy.orm import Session

from tests.support.factories import as_system
from zgoda.accounts import service as accounts
from zgoda.accounts.models import Workspace
from zgoda.audiences import service as audiences
from zgoda.audiences.models import ContactList, Segment
from zgoda.campaigns import domains
from zgoda.campaigns import service as campaigns
from zgoda.campaigns.models import Campaign, SendingDomain, Template

_numbers = itertools.count(1)
DKIM_SECRET = b"test-secret-key-not-for-production-0123456789"  # the test settings' secret key
HTML = (
    "<html><body><h1>Cześć {{ contact.first_name | default('') }}!</h1>"
    "<p>Nowości w {{ workspace.name }}.</p></body></html>"
)
CONTROLLER = {
    "legal_name": "Kawiarnia Pod Zegarem sp. z o.o.",
    "postal_address": {"street": "ul. Długa 5", "postal_code": "00-238", "city": "Warszawa", "country": "PL"},
    "email": "biuro@kawiarnia.example.pl",
}


def make_list(session: Session, workspace: Workspace, *, name: str | None = None) -> ContactList:
    as_system(session, workspace)
    return audiences.create_list(session, name=name or f"List {next(_numbers)}")


def make_segment(session: Session, workspace: Workspace, *, name: str | None = None, city: str = "Kraków") -> Segment:
    as_system(session, workspace)
    definition = {"match": "all", "rules": [{"field": "attribute", "key": "city", "op": "eq", "value": city}]}
    return audiences.create_segment(session, name=name or f"Segment {next(_numbers)}", definition=definition)


def make_template(session: Session, workspace: Workspace, *, name: str | None = None) -> Template:
    as_system(session, workspace)
    return campaigns.create_template(
        session, name=name or f"Template {next(_numbers)}", subject="Nowości w {{ workspace.name }}", html=HTML
    )


def make_campaign(
    session: Session,
    workspace: Workspace,
    *,
    name: str | None = None,
    list_id: int | None = None,
    segment_id: int | None = None,
) -> Campaign:
    """A draft campaign (to a new list unless one is named) with a new template."""
    template = make_template(session, workspace)
    if list_id is None and segment_id is None:
        list_id = make_list(session, workspace).id
    as_system(session, workspace)
    return campaigns.create_campaign(
        session,
        name=name or f"Campaign {next(_numbers)}",
        purpose_key="email_marketing",
        template_id=template.id,
        from_name="Kawiarnia",
        from_email="news@kawiarnia.example.pl",
        list_id=list_id,
        segment_id=segment_id,
        language="pl",
    )


def make_sending_domain(session: Session, workspace: Workspace, *, domain: str | None = None) -> SendingDomain:
    as_system(session, workspace)
    return domains.add_sending_domain(session, domain=domain or f"news{next(_numbers)}.example.pl", secret=DKIM_SECRET)


def make_sendable(session: Session, workspace: Workspace) -> None:
    """Give the workspace the controller identity every footer carries, so its campaigns may start."""
    as_system(session, workspace)
    accounts.update_workspace_settings(session, workspace=workspace, controller=CONTROLLER)
