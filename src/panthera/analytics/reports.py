"""The reports: read the daily roll-ups of a date range and fold them into periods."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.analytics.models import DailyCount, DailyProductSales, DailySales, OrderFact
from panthera.analytics.service import Metric
from panthera.kernel.money import InvalidAmount, Money


class Granularity(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True)
class DateRange:
    """``start`` through ``end``, both days included."""

    start: date
    end: date


def period_of(day: date, granularity: Granularity) -> date:
    """The first day of the period ``day`` falls in (weeks start on Monday, ISO 8601)."""
    if granularity is Granularity.WEEK:
        return day - timedelta(days=day.weekday())
    if granularity is Granularity.MONTH:
        return day.replace(day=1)
    return day


def amount(value: int, currency: str) -> str:
    """An exact decimal string, like every amount of the platform's APIs."""
    try:
        return Money(value, currency).format()
    except InvalidAmount:
        return str(value)


def _average(total: int, count: int, currency: str) -> str:
    if not count:
        return amount(0, currency)
    # Half up to the currency's minor unit; the exact total and count are beside it.
    return amount((2 * total + count) // (2 * count), currency)


async def sales(
    session: AsyncSession, dates: DateRange, granularity: Granularity
) -> list[dict[str, Any]]:
    """Gross, refunded and net revenue, orders, units and average order value per period."""
    rows = (
        await session.execute(
            select(DailySales).where(DailySales.day.between(dates.start, dates.end))
        )
    ).scalars()
    folded: dict[tuple[date, str], dict[str, int]] = defaultdict(
        lambda: {"gross": 0, "refunded": 0, "orders": 0, "units": 0, "refunds": 0}
    )
    for row in rows:
        bucket = folded[(period_of(row.day, granularity), row.currency)]
        for name in ("gross", "refunded", "orders", "units", "refunds"):
            bucket[name] += getattr(row, name)
    return [
        {
            "period": period.isoformat(),
            "currency": currency,
            "grossRevenue": amount(values["gross"], currency),
            "refunded": amount(values["refunded"], currency),
            "netRevenue": amount(values["gross"] - values["refunded"], currency),
            "orders": values["orders"],
            "units": values["units"],
            "refunds": values["refunds"],
            "averageOrderValue": _average(values["gross"], values["orders"], currency),
        }
        for (period, currency), values in sorted(folded.items())
    ]


async def orders_by_status(session: AsyncSession, dates: DateRange) -> list[dict[str, Any]]:
    """Orders placed in the range, by the status each is in now."""
    rows = await session.execute(
        select(OrderFact.status, func.count())
        .where(OrderFact.placed_on.between(dates.start, dates.end))
        .group_by(OrderFact.status)
        .order_by(OrderFact.status)
    )
    return [{"status": status, "orders": int(number)} for status, number in rows]


async def top_products(
    session: AsyncSession, dates: DateRange, *, limit: int, by: str
) -> list[dict[str, Any]]:
    """The products that sold most in the range, by revenue or by units, per currency."""
    units = func.sum(DailyProductSales.units)
    revenue = func.sum(DailyProductSales.revenue)
    rows = await session.execute(
        select(
            DailyProductSales.product_id,
            DailyProductSales.currency,
            func.max(DailyProductSales.name),
            units,
            revenue,
        )
        .where(DailyProductSales.day.between(dates.start, dates.end))
        .group_by(DailyProductSales.product_id, DailyProductSales.currency)
        .order_by((units if by == "units" else revenue).desc(), DailyProductSales.product_id)
        .limit(limit)
    )
    categories = await _latest_categories(session, dates)
    return [
        {
            "productId": str(product_id),
            "name": name,
            "categoryId": str(categories[product_id]) if categories.get(product_id) else None,
            "currency": currency,
            "units": int(sold),
            "revenue": amount(int(earned), currency),
        }
        for product_id, currency, name, sold, earned in rows
    ]


async def _latest_categories(
    session: AsyncSession, dates: DateRange
) -> dict[uuid.UUID, uuid.UUID | None]:
    rows = await session.execute(
        select(DailyProductSales.product_id, DailyProductSales.category_id)
        .where(DailyProductSales.day.between(dates.start, dates.end))
        .order_by(DailyProductSales.day)
    )
    return {product_id: category_id for product_id, category_id in rows}


async def categories(session: AsyncSession, dates: DateRange) -> list[dict[str, Any]]:
    """Units and revenue per category (as the order lines named it) and currency."""
    revenue = func.sum(DailyProductSales.revenue)
    rows = await session.execute(
        select(
            DailyProductSales.category_id,
            DailyProductSales.currency,
            func.sum(DailyProductSales.units),
            revenue,
            func.count(func.distinct(DailyProductSales.product_id)),
        )
        .where(DailyProductSales.day.between(dates.start, dates.end))
        .group_by(DailyProductSales.category_id, DailyProductSales.currency)
        .order_by(revenue.desc())
    )
    return [
        {
            "categoryId": str(category_id) if category_id else None,
            "currency": currency,
            "units": int(units),
            "revenue": amount(int(earned), currency),
            "products": int(products),
        }
        for category_id, currency, units, earned, products in rows
    ]


async def _counts(
    session: AsyncSession, dates: DateRange, metrics: list[Metric]
) -> list[tuple[date, str, int]]:
    rows = await session.execute(
        select(DailyCount.day, DailyCount.metric, DailyCount.value).where(
            DailyCount.day.between(dates.start, dates.end),
            DailyCount.metric.in_([metric.value for metric in metrics]),
        )
    )
    return [(day, metric, int(value)) for day, metric, value in rows]


async def new_users(
    session: AsyncSession, dates: DateRange, granularity: Granularity
) -> list[dict[str, Any]]:
    """Accounts registered per period."""
    folded: dict[date, int] = defaultdict(int)
    for day, _metric, value in await _counts(session, dates, [Metric.NEW_USERS]):
        folded[period_of(day, granularity)] += value
    return [
        {"period": period.isoformat(), "newUsers": value}
        for period, value in sorted(folded.items())
    ]


FUNNEL = (
    ("productViews", Metric.PRODUCT_VIEWS),
    ("ordersPlaced", Metric.ORDERS_PLACED),
    ("paymentsConfirmed", Metric.PAYMENTS_CONFIRMED),
)


async def funnel(session: AsyncSession, dates: DateRange) -> list[dict[str, Any]]:
    """Product views, then orders placed, then confirmed payments, and each step's conversion."""
    totals: dict[str, int] = defaultdict(int)
    for _day, metric, value in await _counts(session, dates, [m for _, m in FUNNEL]):
        totals[metric] += value
    stages: list[dict[str, Any]] = []
    previous: int | None = None
    for stage, metric in FUNNEL:
        value = totals[metric.value]
        rate = None if previous is None else (round(value / previous, 4) if previous else 0.0)
        stages.append({"stage": stage, "count": value, "conversionFromPrevious": rate})
        previous = value
    return stages
