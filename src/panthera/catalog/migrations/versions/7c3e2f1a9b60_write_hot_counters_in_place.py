"""write hot counters in place

Revision ID: 7c3e2f1a9b60
Revises: 5b0c7e1d9a42
Create Date: 2026-11-24 21:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c3e2f1a9b60"
down_revision: str | None = "5b0c7e1d9a42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every reservation moves products.available; with no index on it the row is
    # updated in place (HOT) instead of gaining an entry in each of its indexes.
    op.drop_index("ix_products_available", table_name="products")
    # Only active reservations are ever looked up by expiry.
    op.drop_index("ix_reservations_status", table_name="reservations")
    op.drop_index("ix_reservations_expires_at", table_name="reservations")
    op.create_index(
        "ix_reservations_active_expiry",
        "reservations",
        ["expires_at"],
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )


def downgrade() -> None:
    op.drop_index("ix_reservations_active_expiry", table_name="reservations")
    op.create_index("ix_reservations_expires_at", "reservations", ["expires_at"])
    op.create_index("ix_reservations_status", "reservations", ["status"])
    op.create_index("ix_products_available", "products", ["available"])
