"""Request and response bodies of the catalog API. Prices are exact decimal strings."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Price = Annotated[
    str,
    Field(
        pattern=r"^\d{1,12}(\.\d{1,3})?$",
        examples=["19.99"],
        description="A non-negative decimal string with at most the currency's decimal places.",
    ),
]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=120)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Sku = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Quantity = Annotated[int, Field(ge=0, le=1_000_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductSort(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"
    PRICE_ASC = "price"
    PRICE_DESC = "-price"
    NAME_ASC = "name"
    NAME_DESC = "-name"
    RELEVANCE = "relevance"


class ProductSummary(BaseModel):
    """One product in a list: the seed's four fields, and what a storefront card needs."""

    productId: uuid.UUID
    name: str
    price: str = Field(examples=["19.99"])
    stock: int
    currency: str
    slug: str
    category: str | None = Field(description="The category's slug")
    imageUrl: str | None
    featured: bool


class OptionSpec(_Strict):
    name: Name
    values: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(
        min_length=1, max_length=50
    )


class VariantIn(_Strict):
    sku: Sku | None = None
    title: Name | None = None
    optionValues: dict[str, Annotated[str, StringConstraints(min_length=1, max_length=100)]] = (
        Field(default_factory=dict, max_length=10)
    )
    price: Price
    stock: Quantity = 0


class VariantOut(BaseModel):
    variantId: uuid.UUID
    sku: str
    title: str
    optionValues: dict[str, str]
    price: str
    stock: int = Field(description="Available to sell: on hand minus reserved")
    onHand: int
    reserved: int


class ImageOut(BaseModel):
    imageId: uuid.UUID
    alt: str
    width: int
    height: int
    urls: dict[str, str]


class ProductDetail(ProductSummary):
    description: str
    options: list[OptionSpec]
    variants: list[VariantOut]
    images: list[ImageOut]
    categoryPath: list[str]
    createdAt: datetime
    updatedAt: datetime


class ProductCreate(_Strict):
    """The seed's ``{name, description, price, stock}``, plus optional category and variants."""

    name: Name
    description: Annotated[str, StringConstraints(max_length=20_000)] = ""
    price: Price | None = None
    stock: Quantity | None = None
    category: Slug | None = Field(default=None, description="A category slug")
    currency: Currency | None = None
    slug: Slug | None = None
    sku: Sku | None = None
    featured: bool = False
    options: list[OptionSpec] = Field(default_factory=list, max_length=5)
    variants: list[VariantIn] = Field(default_factory=list, max_length=100)


class ProductCreated(BaseModel):
    productId: uuid.UUID
    message: str = Field(examples=["Product created"])


class ProductUpdate(_Strict):
    name: Name | None = None
    description: Annotated[str, StringConstraints(max_length=20_000)] | None = None
    category: Slug | None = None
    featured: bool | None = None
    price: Price | None = Field(default=None, description="Sets the price of every variant")


class VariantUpdate(_Strict):
    price: Price | None = None
    title: Name | None = None


class CategoryIn(_Strict):
    name: Name
    slug: Slug | None = None
    description: Annotated[str, StringConstraints(max_length=5_000)] = ""
    parent: Slug | None = Field(default=None, description="The parent category's slug")
    position: int = Field(default=0, ge=0, le=10_000)


class CategoryUpdate(_Strict):
    name: Name | None = None
    description: Annotated[str, StringConstraints(max_length=5_000)] | None = None
    position: int | None = Field(default=None, ge=0, le=10_000)


class CategoryOut(BaseModel):
    categoryId: uuid.UUID
    slug: str
    name: str
    description: str
    parent: str | None
    position: int
    children: list[CategoryOut] = Field(default_factory=list)


class StockAdjustment(_Strict):
    delta: int = Field(
        ge=-1_000_000, le=1_000_000, description="Units added (or removed, negative)"
    )
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]


class StockMovementOut(BaseModel):
    movementId: uuid.UUID
    variantId: uuid.UUID
    kind: str
    onHandDelta: int
    reservedDelta: int
    onHandAfter: int
    reservedAfter: int
    reason: str
    actorId: uuid.UUID | None
    reservationId: uuid.UUID | None
    createdAt: datetime


class ReservationLineIn(_Strict):
    productId: uuid.UUID | None = None
    variantId: uuid.UUID | None = None
    quantity: int = Field(ge=1, le=10_000)


class ReservationIn(_Strict):
    reference: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    lines: list[ReservationLineIn] = Field(min_length=1, max_length=100)
    ttlSeconds: int = Field(default=900, ge=10, le=86_400)


class QuoteIn(_Strict):
    lines: list[ReservationLineIn] = Field(min_length=1, max_length=100)


class QuoteLineOut(BaseModel):
    productId: uuid.UUID
    variantId: uuid.UUID
    sku: str
    name: str
    categoryId: uuid.UUID | None
    quantity: int
    unitPriceAmount: int = Field(description="Minor units of the product's currency")
    currency: str
    available: int


class QuoteOut(BaseModel):
    lines: list[QuoteLineOut]
    unknown: list[uuid.UUID] = Field(description="Products or variants that cannot be ordered")


class CallOffOut(BaseModel):
    reference: str
    status: str


class ReservationLineOut(BaseModel):
    productId: uuid.UUID
    variantId: uuid.UUID
    sku: str
    name: str
    categoryId: uuid.UUID | None
    quantity: int
    unitPrice: str
    unitPriceAmount: int = Field(description="Minor units of the reservation's currency")


class RejectedLineOut(BaseModel):
    productId: uuid.UUID | None
    variantId: uuid.UUID | None
    requested: int
    available: int


class ReservationOut(BaseModel):
    reservationId: uuid.UUID | None
    reference: str
    status: str
    currency: str | None
    lines: list[ReservationLineOut]
    expiresAt: datetime | None
    reason: str | None = None
    # A rejection's lines: unknown ones (available 0) or those short of stock.
    problems: list[RejectedLineOut] = Field(default_factory=list)
