"""A batch's items by status: one index on (batch_id, status) in place of batch_id's own.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.drop_index("ix_jobs_batch_id")
        table.create_index("ix_jobs_batch_id_status", ["batch_id", "status"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.drop_index("ix_jobs_batch_id_status")
        table.create_index("ix_jobs_batch_id", ["batch_id"])
