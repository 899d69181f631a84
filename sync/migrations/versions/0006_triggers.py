"""CI triggers: trigger_state, trigger_deliveries (the outbox), trigger_attempts,
trigger_endpoints; generations.announced_at

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("announced_at", Stamp, nullable=True))
    op.create_table(
        "trigger_state",
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("announced_generation", sa.Integer(), nullable=True),
        sa.Column("first_unsent_at", Stamp, nullable=True),
        sa.Column("last_sent_at", Stamp, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("trigger", "project_id", name="pk_trigger_state"),
    )
    op.create_table(
        "trigger_deliveries",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("previous_generation", sa.Integer(), nullable=True),
        sa.Column("msg_id", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", Stamp, nullable=False),
        sa.Column("claimed_until", Stamp, nullable=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("delivered_at", Stamp, nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trigger_deliveries"),
    )
    op.create_index(
        "ix_trigger_deliveries_status_next_attempt_at",
        "trigger_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_table(
        "trigger_attempts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("at", Stamp, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("elapsed_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trigger_attempts"),
    )
    op.create_index("ix_trigger_attempts_delivery_id", "trigger_attempts", ["delivery_id"])
    op.create_table(
        "trigger_endpoints",
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("disabled_at", Stamp, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("trigger", name="pk_trigger_endpoints"),
    )


def downgrade() -> None:
    op.drop_table("trigger_endpoints")
    op.drop_index("ix_trigger_attempts_delivery_id", table_name="trigger_attempts")
    op.drop_table("trigger_attempts")
    op.drop_index("ix_trigger_deliveries_status_next_attempt_at", table_name="trigger_deliveries")
    op.drop_table("trigger_deliveries")
    op.drop_table("trigger_state")
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("announced_at")
