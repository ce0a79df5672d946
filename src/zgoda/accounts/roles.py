"""Roles and what each may do. Routes declare a permission; this table decides."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"  # the client: the data controller
    OPERATOR = "operator"  # agency staff: the processor
    DPO = "dpo"  # the client's data protection officer
    VIEWER = "viewer"  # read-only client staff


_ALL = frozenset(Role)
_EDITORS = frozenset({Role.OWNER, Role.OPERATOR})
_OWNER = frozenset({Role.OWNER})

PERMISSIONS: dict[str, frozenset[Role]] = {
    "workspace.read": _ALL,
    "audit.read": _ALL,
    "members.read": _ALL,
    "members.manage": _OWNER,
    "tokens.read": _OWNER,
    "tokens.manage": _OWNER,
    "workspace.settings": _OWNER,  # the controller's identity shown on receipts and footers
    "contacts.read": _ALL,
    "contacts.write": _EDITORS,
    "consent.read": _ALL,
    "consent.record": frozenset({Role.OWNER, Role.OPERATOR, Role.DPO}),
    "sources.read": _ALL,
    "sources.manage": _EDITORS,
    "sources.attest": _OWNER,  # the data controller states how consent is collected
    "purposes.read": _ALL,
    "purposes.manage": frozenset({Role.OWNER, Role.OPERATOR, Role.DPO}),
    "imports.read": _ALL,
    "imports.run": _EDITORS,
    "proof.read": _ALL,  # the consent proof bundle: what a regulator asks the controller for
    "audiences.read": _ALL,
    "audiences.manage": _EDITORS,
    "campaigns.read": _ALL,
    "campaigns.manage": _EDITORS,  # templates and campaigns: create, edit, preview
    "campaigns.send": _EDITORS,  # send, schedule, pause, resume, cancel
    "domains.manage": _EDITORS,  # sending domains and their DKIM keys
    "sending.settings": _OWNER,  # the soft opt-in switch and the sending rate: the controller's decisions
    "suppressions.read": _ALL,
    "suppressions.manage": frozenset({Role.OWNER, Role.OPERATOR, Role.DPO}),  # add to or take off the list
}


def role_allows(role: Role | str, permission: str) -> bool:
    """Whether ``role`` holds ``permission``; an unknown permission is a programming error."""
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    return Role(role) in PERMISSIONS[permission]


def permissions_of(role: Role | str) -> list[str]:
    return sorted(name for name, roles in PERMISSIONS.items() if Role(role) in roles)
