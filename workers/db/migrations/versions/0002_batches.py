"""Batches: the batches table; each job may belong to one, and names its queue.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("output_format", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_batches_owner", "batches", ["owner"])
    op.create_index("ix_batches_created_at", "batches", ["created_at"])
    # Batch mode on SQLite (render_as_batch): the table is copied, so the FK can be added.
    with op.batch_alter_table("jobs") as table:
        table.add_column(sa.Column("batch_id", sa.String(32), nullable=True))
        table.add_column(sa.Column("batch_index", sa.Integer(), nullable=True))
        table.add_column(sa.Column("queue", sa.String(16), nullable=False,
                                   server_default="renders"))
        table.create_foreign_key("fk_jobs_batch_id_batches", "batches", ["batch_id"], ["id"])
        table.create_index("ix_jobs_batch_id", ["batch_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.drop_index("ix_jobs_batch_id")
        table.drop_constraint("fk_jobs_batch_id_batches", type_="foreignkey")
        table.drop_column("queue")
        table.drop_column("batch_index")
        table.drop_column("batch_id")
    op.drop_index("ix_batches_created_at", table_name="batches")
    op.drop_index("ix_batches_owner", table_name="batches")
    op.drop_table("batches")
