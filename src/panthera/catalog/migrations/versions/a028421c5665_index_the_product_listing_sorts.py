"""index the product listing sorts

Revision ID: a028421c5665
Revises: 362ff5b8d044
Create Date: 2026-11-24 04:01:24.562260
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a028421c5665"
down_revision: str | None = "362ff5b8d044"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_products_status_name", "products", ["status", "name", "id"])
    op.create_index(
        "ix_products_status_newest",
        "products",
        ["status", sa.literal_column("created_at DESC"), "id"],
    )
    op.create_index("ix_products_status_price", "products", ["status", "price_amount", "id"])


def downgrade() -> None:
    op.drop_index("ix_products_status_price", table_name="products")
    op.drop_index("ix_products_status_newest", table_name="products")
    op.drop_index("ix_products_status_name", table_name="products")
