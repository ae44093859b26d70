"""Response bodies of the reports (their CSV form has the same columns as ``rows``)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field


class SalesRow(BaseModel):
    period: date = Field(description="First day of the period (weeks start on Monday).")
    currency: str
    grossRevenue: str = Field(description="Confirmed orders' totals, a decimal string.")
    refunded: str = Field(description="Refunds paid out in the period.")
    netRevenue: str
    orders: int = Field(description="Orders confirmed in the period.")
    units: int
    refunds: int
    averageOrderValue: str = Field(description="Gross revenue per confirmed order.")


class OrdersByStatusRow(BaseModel):
    status: str
    orders: int


class TopProductRow(BaseModel):
    productId: str
    name: str
    categoryId: str | None
    currency: str
    units: int
    revenue: str


class CategoryRow(BaseModel):
    categoryId: str | None
    currency: str
    units: int
    revenue: str
    products: int


class NewUsersRow(BaseModel):
    period: date
    newUsers: int


class FunnelStage(BaseModel):
    stage: str = Field(description="productViews, ordersPlaced or paymentsConfirmed.")
    count: int
    conversionFromPrevious: float | None


class _Report(BaseModel):
    from_: date = Field(alias="from")
    to: date


class SalesReport(_Report):
    granularity: str
    rows: list[SalesRow]


class OrdersByStatusReport(_Report):
    rows: list[OrdersByStatusRow]


class TopProductsReport(_Report):
    rows: list[TopProductRow]


class CategoriesReport(_Report):
    rows: list[CategoryRow]


class NewUsersReport(_Report):
    granularity: str
    rows: list[NewUsersRow]


class FunnelReport(_Report):
    rows: list[FunnelStage]
