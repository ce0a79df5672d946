"""API shapes for contacts, their identities, and consent sent in by integrating systems."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from zgoda.accounts.schemas import StrictInput
from zgoda.consent.schemas import ConsentEventIn, ConsentEventOut, ConsentStateOut


class ContactUpdate(StrictInput):
    """Changed details; an absent (or null) field is left as it is."""

    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40, description="Without a country code: the default region.")
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    attributes: dict[str, Any] = Field(default_factory=dict, description="Merged into the stored attributes.")


class ContactUpsert(ContactUpdate):
    """A contact as a source system knows it; matched by (source, external_id), then email, then phone."""

    source: str | None = Field(default=None, max_length=120, description="The name of the source it comes from.")
    external_id: str | None = Field(default=None, max_length=200, description="Its id in that source; needs source.")


class IdentityOut(BaseModel):
    source_id: int
    source: str
    external_id: str
    created_at: datetime


class ContactOut(BaseModel):
    id: int
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    attributes: dict[str, Any]
    source_id: int | None
    source: str | None
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None
    consents: dict[str, ConsentStateOut] = Field(description="Current consent per purpose key.")


class ContactDetailOut(ContactOut):
    identities: list[IdentityOut]


class ContactPage(BaseModel):
    items: list[ContactOut]
    total: int
    limit: int
    offset: int


class UpsertOut(BaseModel):
    outcome: Literal["created", "updated", "unchanged"]
    matched_by: Literal["identity", "email", "phone"] | None
    changed_fields: list[str]
    identity_added: bool
    contact: ContactDetailOut


class InboundConsentIn(ConsentEventIn):
    """One consent event from a system that does not know our ids: the contact is matched or created first.

    The event's source defaults to the contact's and the other way round.
    """

    contact: ContactUpsert


class InboundConsentOut(BaseModel):
    contact: UpsertOut
    event: ConsentEventOut
