"""campaign sends: the claim's index also orders by id

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 10:00:00.000000

A worker claims a campaign's next sends as "pending, lowest ids first" (and, apart, the sends of workers
whose lease ran out). With ``(campaign_id, status)`` the database either read every pending send of the
campaign to sort them, or walked the primary key from the first send of the table, filtering out every
send of every earlier campaign (PostgreSQL chose the latter: 27 ms a claim with 60,000 sends in the
table, growing with every campaign ever sent; docs/benchmarks.md, sending, tenth round). With ``id`` at
the end of the index a claim reads its ``size`` entries and nothing else, however large the table. The
index replaces ``ix_campaign_sends_campaign_status`` (its leading columns serve every query that one did).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_campaign_sends_campaign_status_id", "campaign_sends", ["campaign_id", "status", "id"])
    op.drop_index("ix_campaign_sends_campaign_status", table_name="campaign_sends")


def downgrade() -> None:
    op.create_index("ix_campaign_sends_campaign_status", "campaign_sends", ["campaign_id", "status"])
    op.drop_index("ix_campaign_sends_campaign_status_id", table_name="campaign_sends")
