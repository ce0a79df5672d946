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

PERMISSIONS: dict[str, frozenset[Role]] = {
    "workspace.read": _ALL,
    "audit.read": _ALL,
    "members.read": _ALL,
    "members.manage": frozenset({Role.OWNER}),
    "tokens.read": frozenset({Role.OWNER}),
    "tokens.manage": frozenset({Role.OWNER}),
}


def role_allows(role: Role | str, permission: str) -> bool:
    """Whether ``role`` holds ``permission``; an unknown permission is a programming error."""
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    return Role(role) in PERMISSIONS[permission]


def permissions_of(role: Role | str) -> list[str]:
    return sorted(name for name, roles in PERMISSIONS.items() if Role(role) in roles)


_ = _EDITORS  # kept for the domains that add editing permissions
