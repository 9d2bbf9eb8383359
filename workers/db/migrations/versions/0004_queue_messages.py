"""The embedded mode's queue: task messages in the job database.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(16), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deliveries", sa.Integer(), nullable=False),
    )
    op.create_index("ix_queue_messages_queue_available_at", "queue_messages",
                    ["queue", "available_at"])


def downgrade() -> None:
    op.drop_index("ix_queue_messages_queue_available_at", table_name="queue_messages")
    op.drop_table("queue_messages")
