"""keep what reconciling payments with the provider needs

Revision ID: 5b2e7c41a9d3
Revises: d9f7100c9caa
Create Date: 2026-11-24 04:35:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b2e7c41a9d3"
down_revision: str | None = "d9f7100c9caa"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment_method", sa.String(length=210), nullable=True))
        batch_op.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_column("checked_at")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("checked_at")
        batch_op.drop_column("payment_method")
