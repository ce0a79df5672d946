"""ledger: drop the workspace_id indexes no query needs, narrow the (contact, purpose) index

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00.000000

Every ledger batch writes these indexes. On ``consent_events`` the unique (workspace_id, seq) index and
on ``consent_states`` ix_consent_states_purpose_status both start with ``workspace_id`` and serve every
lookup by workspace (the foreign key's checks included); ``consent_evidence`` is read by ``event_id``
only (its primary key). ix_consent_events_contact_purpose loses ``occurred_at``: the queries find a
pair's (or a contact's) few events by (contact_id, purpose_id) or contact_id and sort or filter those
by time themselves, while each batch writes the index at random places (on SQLite, where a timestamp
is 26 bytes of text, ``occurred_at`` made up most of each entry). Constraints, foreign keys and the
append-only triggers are untouched. Plain DROP/CREATE INDEX (no batch mode): on SQLite a batch table
copy would lose the ledger's triggers.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_WORKSPACE_INDEXES = (
    ("consent_events", "ix_consent_events_workspace_id"),
    ("consent_evidence", "ix_consent_evidence_workspace_id"),
    ("consent_states", "ix_consent_states_workspace_id"),
)
_CONTACT_PURPOSE = "ix_consent_events_contact_purpose"


def upgrade() -> None:
    for table, name in _WORKSPACE_INDEXES:
        op.drop_index(name, table_name=table)
    op.drop_index(_CONTACT_PURPOSE, table_name="consent_events")
    op.create_index(_CONTACT_PURPOSE, "consent_events", ["contact_id", "purpose_id"], unique=False)


def downgrade() -> None:
    op.drop_index(_CONTACT_PURPOSE, table_name="consent_events")
    op.create_index(_CONTACT_PURPOSE, "consent_events", ["contact_id", "purpose_id", "occurred_at"], unique=False)
    for table, name in _WORKSPACE_INDEXES:
        op.create_index(name, table, ["workspace_id"], unique=False)
