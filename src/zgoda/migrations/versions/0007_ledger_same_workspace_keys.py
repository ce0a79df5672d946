"""ledger: events and states name their contact and purpose by (id, workspace_id)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00.000000

``consent_events`` and ``consent_states`` referenced ``contacts.id``, ``purposes.id`` and
``workspaces.id`` with three single-column foreign keys. They now reference (id, workspace_id) of
contacts and purposes (new unique indexes ``ix_contacts_id_workspace`` and ``ix_purposes_id_workspace``):
the database itself refuses an event or a state whose contact or purpose belongs to another workspace,
and the workspace's own key is implied (the contact's row names an existing workspace), so each row
costs two key checks instead of three. On PostgreSQL the checks were two thirds of the ledger's insert
time (docs/benchmarks.md, ledger "Ninth round").

SQLite cannot alter a table's foreign keys: both tables are rebuilt (Alembic's batch mode copies them),
with foreign keys off for the migration (``migrations/env.py``); the new keys are checked here with
``PRAGMA foreign_key_check`` before the migration commits, and the ledger's append-only triggers, which
go with the old table, are created again. Existing rows that would break the new keys stop the migration
with the first offending row named.
"""

from __future__ import annotations

from alembic import op

from zgoda.core.chain import append_only_ddl

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TABLES = ("consent_events", "consent_states")
_PARENTS = (("contact_id", "contacts"), ("purpose_id", "purposes"))


def upgrade() -> None:
    for parent in ("contacts", "purposes"):
        op.create_index(f"ix_{parent}_id_workspace", parent, ["id", "workspace_id"], unique=True)
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_workspace_id_workspaces", type_="foreignkey")
            for column, parent in _PARENTS:
                batch.drop_constraint(f"fk_{table}_{column}_{parent}", type_="foreignkey")
                batch.create_foreign_key(
                    f"fk_{table}_{column}_{parent}",
                    parent,
                    [column, "workspace_id"],
                    ["id", "workspace_id"],
                    ondelete="RESTRICT",
                )
    _after_sqlite_rebuild()


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            for column, parent in _PARENTS:
                batch.drop_constraint(f"fk_{table}_{column}_{parent}", type_="foreignkey")
                batch.create_foreign_key(f"fk_{table}_{column}_{parent}", parent, [column], ["id"], ondelete="RESTRICT")
            batch.create_foreign_key(
                f"fk_{table}_workspace_id_workspaces", "workspaces", ["workspace_id"], ["id"], ondelete="RESTRICT"
            )
    _after_sqlite_rebuild()
    for parent in ("contacts", "purposes"):
        op.drop_index(f"ix_{parent}_id_workspace", table_name=parent)


def _after_sqlite_rebuild() -> None:
    """On SQLite: check the rebuilt tables' foreign keys (they were off) and restore the ledger's triggers."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table in _TABLES:
        broken = bind.exec_driver_sql(f"PRAGMA foreign_key_check({table})").first()
        if broken is not None:
            raise RuntimeError(
                f"{table} row {broken[1]} names a {broken[2]} row that does not exist in its workspace "
                f"(foreign key {broken[3]}): fix or remove it, then migrate again"
            )
    for statement in append_only_ddl("consent_events", "sqlite"):
        op.execute(statement)
