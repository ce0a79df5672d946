"""JSON API: the workspace, its settings (the controller identity), its members and its API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from zgoda.accounts import service
from zgoda.accounts.models import ApiToken, Membership, Workspace
from zgoda.accounts.roles import Role, permissions_of
from zgoda.accounts.schemas import (
    ControllerOut,
    MemberCreate,
    MemberOut,
    TokenCreate,
    TokenIssued,
    TokenOut,
    WorkspaceOut,
    WorkspaceSettingsOut,
    WorkspaceSettingsUpdate,
)
from zgoda.core.errors import NotFound
from zgoda.web.context import RequestContext, require

router = APIRouter(tags=["workspace"])


def _member_out(membership: Membership) -> MemberOut:
    return MemberOut(
        id=membership.id,
        user_id=membership.user_id,
        email=membership.user.email,
        name=membership.user.name,
        role=Role(membership.role),
        created_at=membership.created_at,
    )


def _token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        role=Role(token.role),
        display_prefix=token.display_prefix,
        created_at=token.created_at,
        revoked_at=token.revoked_at,
    )


@router.get("/workspace", response_model=WorkspaceOut)
def get_workspace(ctx: RequestContext = require("workspace.read")) -> WorkspaceOut:
    """The workspace this token (or the X-Zgoda-Workspace header) names, and your role in it."""
    workspace = ctx.workspace_required
    assert ctx.role is not None
    return WorkspaceOut(
        slug=workspace.slug,
        name=workspace.name,
        time_zone=workspace.time_zone,
        your_role=ctx.role,
        permissions=permissions_of(ctx.role),
    )


def settings_out(workspace: Workspace) -> WorkspaceSettingsOut:
    """The workspace's controller identity and jurisdiction as the API shows them."""
    controller = service.controller_of(workspace)
    return WorkspaceSettingsOut(
        controller=ControllerOut.model_validate(controller) if controller else None,
        jurisdiction=service.jurisdiction_of(workspace),
    )


@router.get("/workspace/settings", response_model=WorkspaceSettingsOut)
def get_workspace_settings(ctx: RequestContext = require("workspace.read")) -> WorkspaceSettingsOut:
    """Who the data controller is (shown on consent receipts and email footers) and its jurisdiction."""
    return settings_out(ctx.workspace_required)


@router.patch("/workspace/settings", response_model=WorkspaceSettingsOut)
def update_workspace_settings(
    body: WorkspaceSettingsUpdate, ctx: RequestContext = require("workspace.settings")
) -> WorkspaceSettingsOut:
    """Set the controller identity (replaced as a whole) and/or the jurisdiction; the change is audited."""
    workspace = service.update_workspace_settings(
        ctx.session,
        workspace=ctx.workspace_required,
        controller=body.controller.model_dump() if body.controller else None,
        jurisdiction=body.jurisdiction,
    )
    return settings_out(workspace)


@router.get("/members", response_model=list[MemberOut])
def list_members(ctx: RequestContext = require("members.read")) -> list[MemberOut]:
    return [_member_out(m) for m in service.list_members(ctx.session)]


@router.post("/members", response_model=MemberOut, status_code=201)
def add_member(body: MemberCreate, ctx: RequestContext = require("members.manage")) -> MemberOut:
    """Give an existing user a role here (users are created with `zgoda user create`)."""
    user = service.get_user_by_email(ctx.session, body.email)
    if user is None:
        raise NotFound(f"No user has the address {body.email}.", field="email")
    membership = service.add_member(ctx.session, workspace=ctx.workspace_required, user=user, role=body.role)
    return _member_out(membership)


@router.delete("/members/{member_id}", status_code=204)
def remove_member(member_id: int, ctx: RequestContext = require("members.manage")) -> Response:
    service.remove_member(ctx.session, member_id=member_id)
    return Response(status_code=204)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(ctx: RequestContext = require("tokens.read")) -> list[TokenOut]:
    return [_token_out(t) for t in service.list_api_tokens(ctx.session)]


@router.post("/tokens", response_model=TokenIssued, status_code=201)
def create_token(body: TokenCreate, ctx: RequestContext = require("tokens.manage")) -> TokenIssued:
    """A new token; the secret is in this answer only."""
    issued = service.create_api_token(
        ctx.session, name=body.name, role=body.role, created_by_user_id=ctx.user.id if ctx.user else None
    )
    return TokenIssued(**_token_out(issued.token).model_dump(), token=issued.plaintext)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: int, ctx: RequestContext = require("tokens.manage")) -> Response:
    service.revoke_api_token(ctx.session, token_id=token_id)
    return Response(status_code=204)
