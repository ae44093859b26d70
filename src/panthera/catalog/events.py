"""Events the catalog publishes: its public contract."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from panthera.kernel.events import EventContract


class VariantSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    variant_id: uuid.UUID
    sku: str
    price_amount: int


class _ProductEvent(EventContract):
    product_id: uuid.UUID
    revision: int

    def subject(self) -> str:
        return str(self.product_id)


class ProductCreated(_ProductEvent):
    event_type = "product.created"
    version = 1

    name: str
    slug: str
    category_id: uuid.UUID | None
    currency: str
    variants: list[VariantSummary]
    occurred_at: datetime


class ProductUpdated(_ProductEvent):
    event_type = "product.updated"
    version = 1

    name: str
    slug: str
    category_id: uuid.UUID | None
    currency: str
    variants: list[VariantSummary]
    changed: list[str]
    occurred_at: datetime


class ProductDeleted(_ProductEvent):
    event_type = "product.deleted"
    version = 1

    occurred_at: datetime


class PriceChanged(_ProductEvent):
    event_type = "price.changed"
    version = 1

    variant_id: uuid.UUID
    sku: str
    currency: str
    old_amount: int
    new_amount: int
    occurred_at: datetime


class StockChanged(EventContract):
    """Stock of one variant changed in a way the reservation events do not tell.

    Published for every adjustment (a delivery, a count, opening stock), and when a
    reservation, release or return takes the variant out of stock or brings it back:
    what shop pages show. ``available`` is what can be sold.
    """

    event_type = "stock.changed"
    version = 1

    product_id: uuid.UUID
    variant_id: uuid.UUID
    sku: str
    on_hand: int
    reserved: int
    available: int
    cause: str
    occurred_at: datetime

    def subject(self) -> str:
        return str(self.variant_id)


class ReservedLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: uuid.UUID
    variant_id: uuid.UUID
    sku: str
    quantity: int
    unit_price_amount: int


class StockReserved(EventContract):
    event_type = "stock.reserved"
    version = 1

    reservation_id: uuid.UUID
    reference: str
    currency: str
    lines: list[ReservedLine]
    expires_at: datetime

    def subject(self) -> str:
        return self.reference


class RejectedLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: uuid.UUID | None
    variant_id: uuid.UUID | None
    requested: int
    available: int


class StockRejected(EventContract):
    event_type = "stock.rejected"
    version = 1

    reference: str
    reason: str
    lines: list[RejectedLine]

    def subject(self) -> str:
        return self.reference


class StockReleased(EventContract):
    event_type = "stock.released"
    version = 1

    reservation_id: uuid.UUID
    reference: str
    reason: str

    def subject(self) -> str:
        return self.reference


class StockCommitted(EventContract):
    """Reserved stock left the shelf: the sale is final."""

    event_type = "stock.committed"
    version = 1

    reservation_id: uuid.UUID
    reference: str

    def subject(self) -> str:
        return self.reference


class CategoryChanged(EventContract):
    """A category was created, changed or deleted: copies of the category tree are stale."""

    event_type = "category.changed"
    version = 1

    category_id: uuid.UUID
    slug: str
    change: Literal["created", "updated", "deleted"]
    occurred_at: datetime

    def subject(self) -> str:
        return str(self.category_id)


class ViewCount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: uuid.UUID
    views: int


class ProductViewed(EventContract):
    """Product pages shown by one catalog instance over a window, counted per product.

    Batched rather than one event per view, so browsing costs a counter increment;
    a crash loses at most one window of counts. Pages the gateway serves from its
    response cache never reach the catalog and are not counted.
    """

    event_type = "product.viewed"
    version = 1

    window_start: datetime
    window_end: datetime
    counts: list[ViewCount]


PUBLISHED = (
    CategoryChanged,
    ProductCreated,
    ProductUpdated,
    ProductDeleted,
    PriceChanged,
    StockChanged,
    StockReserved,
    StockRejected,
    StockReleased,
    StockCommitted,
    ProductViewed,
)
