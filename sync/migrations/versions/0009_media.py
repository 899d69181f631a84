"""media files copied beside the labels

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
        "media_files",
        sa.Column("task_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("keys", sa.Text(), nullable=False),
        sa.Column("written", sa.Text(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("etag", sa.String(200), nullable=True),
        sa.Column("md5", sa.String(32), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_media_files_project_id", "media_files", ["project_id"])
    op.create_index("ix_media_files_status", "media_files", ["status"])


def downgrade() -> None:
    op.drop_index("ix_media_files_status", table_name="media_files")
    op.drop_index("ix_media_files_project_id", table_name="media_files")
    op.drop_table("media_files")
