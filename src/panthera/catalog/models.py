"""The catalog's tables: categories, products and variants, stock, reservations, images."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    literal_column,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from panthera.kernel.db import UTCDateTime, service_metadata
from panthera.kernel.events.outbox import event_tables


class Base(DeclarativeBase):
    metadata = service_metadata()


EVENT_TABLES = event_tables(Base.metadata)


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("categories.id", ondelete="RESTRICT")
    )
    # Slugs from the root down, "/home/kitchen/": a subtree is one prefix match.
    path: Mapped[str] = mapped_column(String(2000), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Product(Base):
    __tablename__ = "products"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    slug: Mapped[str] = mapped_column(String(220), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    category_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("categories.id", ondelete="RESTRICT"), index=True
    )
    currency: Mapped[str] = mapped_column(String(3))
    # Option names and values, e.g. [{"name": "Size", "values": ["S", "M"]}].
    options: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    featured: Mapped[bool] = mapped_column(Boolean, default=False)
    # "active" or "archived": archived products leave the shop but stay for history.
    status: Mapped[str] = mapped_column(String(20), default="active", index=True)
    # Kept equal to the cheapest variant and the sum of available stock, in the
    # same transaction as the variants, so lists sort and filter without a join.
    price_amount: Mapped[int] = mapped_column(Integer, index=True)
    # Not indexed: every reservation and release moves it, and a change to an indexed
    # column writes a new entry into each of the table's indexes, where an unindexed
    # one is updated in place in the heap (HOT). The in-stock filter reads it from the
    # rows a listing's sort index gives.
    available: Mapped[int] = mapped_column(Integer)
    # The storage key of the first image's list-size file (``cover_key``), kept with
    # the images in their transaction: a list page shows it for each product, and
    # looking it up among the images per row was a quarter of the page's statement.
    cover_image: Mapped[str | None] = mapped_column(String(300), nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Variant(Base):
    __tablename__ = "variants"
    __table_args__ = (
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("on_hand >= reserved", name="no_oversell"),
        CheckConstraint("price_amount >= 0", name="price_not_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    option_values: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    price_amount: Mapped[int] = mapped_column(Integer)
    on_hand: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Reservation(Base):
    """Stock held for someone (an order) until it is committed, released or expires."""

    __tablename__ = "reservations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # The caller's id for what the stock is held for (an order id): one reservation each.
    reference: Mapped[str] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReservationItem(Base):
    __tablename__ = "reservation_items"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    reservation_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("reservations.id", ondelete="CASCADE"), primary_key=True
    )
    variant_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("variants.id"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_amount: Mapped[int] = mapped_column(Integer)


class StockMovement(Base):
    """The stock ledger: every change of on-hand or reserved quantity, with who and why."""

    __tablename__ = "stock_movements"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    variant_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("variants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    on_hand_delta: Mapped[int] = mapped_column(Integer)
    reserved_delta: Mapped[int] = mapped_column(Integer)
    on_hand_after: Mapped[int] = mapped_column(Integer)
    reserved_after: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(500))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reservation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ProductImage(Base):
    __tablename__ = "product_images"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    alt: Mapped[str] = mapped_column(String(300), default="")
    # Object-storage keys by size name ("thumb", "medium", "large", "original").
    keys: Mapped[dict[str, str]] = mapped_column(JSON)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def cover_key(self) -> str:
        """The file a list shows: the medium size, or the original where none was made."""
        return self.keys.get("medium") or self.keys["original"]


# What the expiry sweep looks for, and only that: a reservation leaves the index as it
# is committed, released or expired, so the index stays as small as the stock held at
# the moment, and closing a reservation writes no entry into it.
RESERVATION_ACTIVE = "active"
# The status as a literal, as the index's condition has it: compared with a parameter,
# a generic plan could not use the index.
STILL_HELD = Reservation.status == literal_column(f"'{RESERVATION_ACTIVE}'")
Index(
    "ix_reservations_active_expiry",
    Reservation.expires_at,
    postgresql_where=STILL_HELD,
    sqlite_where=STILL_HELD,
)
Index("ix_products_name", Product.name)
# Listings filter on status and sort by one of these: an index per sort spares a
# sort of every active product on each page.
Index("ix_products_status_newest", Product.status, Product.created_at.desc(), Product.id)
Index("ix_products_status_price", Product.status, Product.price_amount, Product.id)
Index("ix_products_status_name", Product.status, Product.name, Product.id)
