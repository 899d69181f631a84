"""re-render every project's kept-fresh exports (their outputs changed: local-files stems,
boxes outside the image dropped, OBB corners clipped, VOC and COCO image sizes, and the CSV
fragments now keep data and outputs apart until the aggregate names the columns)

A project whose ``exports_config_version`` differs from its ``config_version`` is rebuilt
whole by its next drain (as after a label-config change), and its aggregates wait for that
rebuild instead of mixing old and new fragments. ``annosync rebuild`` does it at once.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE projects SET exports_config_version = -1 WHERE deleted = false")


def downgrade() -> None:
    op.execute("UPDATE projects SET exports_config_version = config_version")
