"""Workers announce the models they serve and hold loaded (issue #22's routing).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_presence",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("loaded", sa.JSON(), nullable=False),
        sa.Column("loads", sa.JSON(), nullable=False),
        sa.Column("speed", sa.JSON(), nullable=False),
        sa.Column("warm", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_worker_presence_seen_at", "worker_presence", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_worker_presence_seen_at", table_name="worker_presence")
    op.drop_table("worker_presence")
