"""The PBX's users in the CRM store.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21

Written out by hand, like the earlier revisions: the table ``users`` (id, extension, name, role,
department, caller ID, whether the config still has them, when they were last written), which
the PBX fills from its config at start and at each reload. A table that exists already is left
alone (a PBX that had this model but not yet this revision made it with ``create_all``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def _tables() -> set[str]:
    if op.get_context().as_sql:  # offline: rendering SQL, there is no database to look at
        return set()
    return set(sa.inspect(op.get_bind()).get_table_names())


def upgrade() -> None:
    if "users" in _tables():
        return
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("extension", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=True),
        sa.Column("caller_id", sa.String(length=64), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_users_extension", "users", ["extension"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_users_extension", table_name="users")
    op.drop_table("users")
