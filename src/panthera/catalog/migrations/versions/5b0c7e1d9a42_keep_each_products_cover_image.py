"""keep each product's cover image

Revision ID: 5b0c7e1d9a42
Revises: a028421c5665
Create Date: 2026-11-24 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b0c7e1d9a42"
down_revision: str | None = "a028421c5665"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The first image's list-size file, as ProductImage.cover_key picks it.
_BACKFILL_SQLITE = (
    "UPDATE products SET cover_image = ("
    "SELECT coalesce(nullif(json_extract(keys, '$.medium'), ''), json_extract(keys, '$.original')) "
    "FROM product_images WHERE product_images.product_id = products.id "
    "ORDER BY product_images.position LIMIT 1)"
)
_BACKFILL_POSTGRES = (
    "UPDATE products SET cover_image = ("
    "SELECT coalesce(nullif(keys ->> 'medium', ''), keys ->> 'original') "
    "FROM product_images WHERE product_images.product_id = products.id "
    "ORDER BY product_images.position LIMIT 1)"
)


def upgrade() -> None:
    op.add_column("products", sa.Column("cover_image", sa.String(length=300), nullable=True))
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute(_BACKFILL_SQLITE if sqlite else _BACKFILL_POSTGRES)


def downgrade() -> None:
    # Not a batch operation: on SQLite that copies the table and drops the old one,
    # and dropping products cascades to every product's images.
    op.execute("ALTER TABLE products DROP COLUMN cover_image")
