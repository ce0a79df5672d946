"""API shapes for workspaces, members and tokens. Inputs refuse unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from zgoda.accounts.roles import Role
from zgoda.core.db import MAX_INTEGER, NUL


class StrictInput(BaseModel):
    """Base of every request body: unknown fields are refused, strings stripped, and every value (in lists
    and mappings too) one the database stores: an integer within INTEGER's range, text without a NUL
    character (PostgreSQL's text refuses it), so that none fails as a 500 when it is written."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _values_the_database_stores(cls, value: Any) -> Any:
        _check_storable(value)
        return value


def _check_storable(value: Any) -> None:
    if type(value) is int and not -MAX_INTEGER - 1 <= value <= MAX_INTEGER:
        raise ValueError(f"is out of range (at most {MAX_INTEGER})")
    if isinstance(value, str) and NUL in value:
        raise ValueError("holds a NUL character")
    if isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _check_storable(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key)
            _check_storable(item)


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


# --- workspace settings: the data controller's identity -----------------------------------


def check_email(value: str) -> str:
    """A syntactically valid address, normalised (no DNS look-up); raises ValueError for pydantic."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValueError(f"not a valid email address: {error}") from error


def check_web_url(value: str) -> str:
    """An absolute http(s) address such as https://example.pl/privacy."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ValueError("not a web address; give it in full, e.g. https://example.pl/privacy")
    return value


def check_phone(value: str) -> str:
    """A valid phone number in international format, returned as E.164."""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as error:
        raise ValueError("not a phone number in international format, e.g. +48 22 123 45 67") from error
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


Email = Annotated[str, Field(max_length=320), AfterValidator(check_email)]
WebUrl = Annotated[str, Field(max_length=2000), AfterValidator(check_web_url)]
Phone = Annotated[str, Field(max_length=40), AfterValidator(check_phone)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code, e.g. PL")]


class PostalAddress(StrictInput):
    street: str = Field(min_length=1, max_length=200)
    postal_code: str = Field(min_length=1, max_length=20)
    city: str = Field(min_length=1, max_length=100)
    country: CountryCode


class ControllerIdentity(StrictInput):
    """Who the data controller is: shown on consent receipts and in every email footer."""

    legal_name: str = Field(min_length=1, max_length=300)
    postal_address: PostalAddress
    email: Email
    phone: Phone | None = None
    website: WebUrl | None = None
    privacy_policy_url: WebUrl | None = None
    dpo_contact: str | None = Field(default=None, max_length=300, description="How to reach the DPO.")


class WorkspaceSettingsUpdate(StrictInput):
    controller: ControllerIdentity | None = Field(
        default=None, description="Replaces the stored identity as a whole; omit it to keep the current one."
    )
    jurisdiction: CountryCode | None = None


class PostalAddressOut(BaseModel):
    street: str = ""
    postal_code: str = ""
    city: str = ""
    country: str = ""


class ControllerOut(BaseModel):
    legal_name: str
    postal_address: PostalAddressOut
    email: str
    phone: str | None = None
    website: str | None = None
    privacy_policy_url: str | None = None
    dpo_contact: str | None = None


class WorkspaceSettingsOut(BaseModel):
    controller: ControllerOut | None = Field(description="None until the owner gives the controller's identity.")
    jurisdiction: str
