"""incarnations and failures: tasks.born/error, annotations.born, projects.config_error

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("born", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("born", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("config_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("refused_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("refused_digest")
        batch_op.drop_column("config_error")
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.drop_column("born")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("error")
        batch_op.drop_column("born")
