"""The analytics service's store: facts about orders, and daily roll-ups the reports read.

Roll-ups are sums, so events add to them in any order; only an order's current
status needs its revision to tell a late event from a new one.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Index, Integer, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from panthera.kernel.db import UTCDateTime, service_metadata
from panthera.kernel.events.outbox import event_tables


class Base(DeclarativeBase):
    metadata = service_metadata()


EVENT_TABLES = event_tables(Base.metadata)


class OrderFact(Base):
    """One order as analytics knows it: when it was placed and where it stands now."""

    __tablename__ = "order_facts"
    __table_args__ = (Index("ix_order_facts_placed_on_status", "placed_on", "status"),)

    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(20))
    revision: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    total_amount: Mapped[int] = mapped_column(BigInteger)
    # The day it was placed (or first heard of): the day "orders by status" counts it on.
    placed_on: Mapped[date] = mapped_column(Date)
    placed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DailySales(Base):
    """Money per day and currency: confirmed orders (gross), refunds, and their counts."""

    __tablename__ = "daily_sales"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    gross: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    orders: Mapped[int] = mapped_column(Integer, default=0)
    units: Mapped[int] = mapped_column(Integer, default=0)
    refunds: Mapped[int] = mapped_column(Integer, default=0)


class DailyProductSales(Base):
    """Units and revenue of one product per day and currency, from confirmed orders."""

    __tablename__ = "daily_product_sales"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    # As the order line named them when the order was placed.
    name: Mapped[str] = mapped_column(String(300))
    category_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    units: Mapped[int] = mapped_column(Integer, default=0)
    revenue: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyCount(Base):
    """A counter per day: product views, orders placed, payments confirmed, new users..."""

    __tablename__ = "daily_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
