"""one payment per order and request

A request sent again (the orders saga's, keyed by order) finds its payment by
this constraint rather than through an idempotency key row of its own. The
order reference leads it, so the plain index on that column is not needed.

Revision ID: 647701018899
Revises: 5b2e7c41a9d3
Create Date: 2026-11-24 07:27:06.808869
"""

from collections.abc import Sequence

from alembic import op

revision: str = "647701018899"
down_revision: str | None = "5b2e7c41a9d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_payments_order_reference_request_key", ["order_reference", "request_key"]
        )
        batch_op.drop_index("ix_payments_order_reference")


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index("ix_payments_order_reference", ["order_reference"], unique=False)
        batch_op.drop_constraint("uq_payments_order_reference_request_key", type_="unique")
