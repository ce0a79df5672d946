"""The sections of a workspace, in the order data flows; later releases switch theirs on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Section:
    key: str
    label: str
    path: str  # under /w/{slug}/
    permission: str | None  # None: not built yet, shown disabled


SECTIONS: list[Section] = [
    Section("dashboard", "Dashboard", "", "workspace.read"),
    Section("contacts", "Contacts", "contacts", "contacts.read"),
    Section("sources", "Sources", "sources", "sources.read"),
    Section("purposes", "Purposes & notices", "purposes", "purposes.read"),
    Section("imports", "Imports", "imports", "imports.read"),
    Section("lists", "Lists", "lists", "audiences.read"),
    Section("campaigns", "Campaigns", "campaigns", "campaigns.read"),
    Section("suppressions", "Suppressions", "suppressions", "suppressions.read"),
    Section("requests", "Requests", "requests", None),
    Section("compliance", "Compliance", "compliance", None),
    Section("audit", "Audit log", "audit", "audit.read"),
    Section("members", "Members", "members", "members.read"),
    Section("tokens", "API tokens", "tokens", "tokens.read"),
    Section("settings", "Settings", "settings", "workspace.read"),  # owners edit, everyone reads
]


def enable_section(key: str, permission: str) -> None:
    """Called by a domain when its pages exist."""
    for index, section in enumerate(SECTIONS):
        if section.key == key:
            SECTIONS[index] = Section(section.key, section.label, section.path, permission)


def sections_for(context: Any) -> list[dict[str, Any]]:
    """Nav entries for this caller: available, hidden (not allowed) or shown disabled (not built yet)."""
    entries = []
    for section in SECTIONS:
        if section.permission is not None and not context.can(section.permission):
            continue
        entries.append(
            {
                "key": section.key,
                "label": section.label,
                "path": section.path,
                "available": section.permission is not None,
            }
        )
    return entries
