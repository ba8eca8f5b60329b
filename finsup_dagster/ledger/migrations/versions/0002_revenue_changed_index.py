"""revenue_events.status_changed_at index, for the warehouse's incremental replica

Downgrade: yes, lossless (an index only). The warehouse's incremental
replica reads slower without it. Books at 0003 or later cannot come down to
it (0003 says no).

Revision ID: 0002_revenue_changed_index
Revises: 0001_baseline
Create Date: 2026-11-25 19:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0002_revenue_changed_index"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("revenue_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_revenue_events_status_changed_at", ["status_changed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("revenue_events", schema=None) as batch_op:
        batch_op.drop_index("ix_revenue_events_status_changed_at")
