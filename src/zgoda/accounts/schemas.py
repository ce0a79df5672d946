"""API shapes for workspaces, members and tokens. Inputs refuse unknown fields."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from zgoda.accounts.roles import Role


class StrictInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class WorkspaceOut(BaseModel):
    slug: str
    name: str
    time_zone: str
    your_role: Role
    permissions: list[str]


class MemberCreate(StrictInput):
    email: str = Field(min_length=3, max_length=320)
    role: Role


class MemberOut(BaseModel):
    id: int
    user_id: int
    email: str
    name: str
    role: Role
    created_at: datetime


class TokenCreate(StrictInput):
    name: str = Field(min_length=1, max_length=100)
    role: Role = Role.OPERATOR


class TokenOut(BaseModel):
    id: int
    name: str
    role: Role
    display_prefix: str
    created_at: datetime
    revoked_at: datetime | None


class TokenIssued(TokenOut):
    token: str = Field(description="The secret, shown this once; store it now.")
