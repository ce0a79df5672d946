"""JSON API: a source's webhook secret, its notification URL and deliveries, and the signed form endpoint."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field, ValidationError
from sqlalchemy.orm import Session

from zgoda.accounts.models import Workspace
from zgoda.accounts.schemas import StrictInput
from zgoda.consent.models import Source
from zgoda.contacts.connectors import inbound, outbound
from zgoda.contacts.connectors.signing import HEADER
from zgoda.core.errors import AuthenticationRequired, InvalidInput, NotFound
from zgoda.core.settings import Settings
from zgoda.core.tenancy import Actor, bind_scope, unscoped
from zgoda.web.context import (
    RequestContext,
    client_ip,
    get_session,
    get_settings_dep,
    public,
    request_body,
    require,
    require_existing,
)

router = APIRouter(tags=["integrations"])


def _source(session: Session, source_id: int) -> object:
    from zgoda.consent import sources

    return sources.get_source(session, source_id=source_id)


class OutboundConfig(StrictInput):
    url: str = Field(max_length=2048)


@router.post("/sources/{source_id}/inbound-secret")
def rotate_inbound_secret(source_id: int, ctx: RequestContext = require("sources.manage")) -> dict[str, str]:
    """A new secret for signing form submissions; shown once, the previous one stops working."""
    secret = inbound.rotate_secret(ctx.session, source_id=source_id)
    return {"secret": secret, "header": HEADER, "endpoint": f"/api/v1/sources/{source_id}/submissions"}


@router.put("/sources/{source_id}/outbound")
def configure_outbound(
    source_id: int,
    body: OutboundConfig,
    ctx: RequestContext = require_existing("sources.manage", source_id=_source),
) -> dict[str, str]:
    """Where to notify this source of withdrawals (and erasures); returns the signing secret once."""
    secret = outbound.configure(ctx.session, source_id=source_id, url=body.url)
    return {"url": body.url, "secret": secret, "header": HEADER}


@router.get("/sources/{source_id}/deliveries")
def list_deliveries(source_id: int, ctx: RequestContext = require("sources.read")) -> list[dict[str, Any]]:
    """Notifications sent to this source, with their attempts and outcome."""
    from zgoda.consent import sources

    sources.get_source(ctx.session, source_id=source_id)
    return [outbound.describe(d) for d in outbound.list_deliveries(ctx.session, source_id=source_id)]


@router.post("/sources/{source_id}/submissions")
@public("a client's website posts signed form submissions; the HMAC signature authenticates it")
def receive_submission(
    source_id: int,
    request: Request,
    body: bytes = Depends(request_body),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> dict[str, Any]:
    """A signup from the source's own form: verified by its signature, idempotent by submission_id."""
    if len(body) > inbound.MAX_BODY_BYTES:
        raise InvalidInput("A submission is at most 64 KB.", field="body")
    with unscoped(session):
        source = session.get(Source, source_id)
    if source is None:
        raise AuthenticationRequired("Unknown source or wrong signature.")
    inbound.authenticate(source, body, request.headers.get(HEADER))
    workspace = session.get(Workspace, source.workspace_id)
    if workspace is None:
        raise NotFound("Unknown source.", field="source_id")
    bind_scope(
        session,
        workspace_id=source.workspace_id,
        actor=Actor(label=f"source:{source.name}", via="webhook", ip=client_ip(request)),
    )
    try:
        submission = inbound.FormSubmission.model_validate_json(body)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise InvalidInput(f"{field}: {first.get('msg')}", field=field) from None
    return inbound.accept(session, source=source, submission=submission, region=settings.default_phone_region)


_ = Annotated  # keep the import for future query parameters
