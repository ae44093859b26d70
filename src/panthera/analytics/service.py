"""Applying events to the analytics store: order facts and additive daily roll-ups.

Every function runs inside the consumer's unit of work, beside the inbox record
that makes a redelivered event a no-op. Roll-ups are incremented with one
``INSERT ... ON CONFLICT DO UPDATE`` each, atomic on PostgreSQL under concurrent
consumers and cheap on SQLite.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.analytics.models import DailyCount, DailyProductSales, DailySales, OrderFact


class Metric(StrEnum):
    PRODUCT_VIEWS = "product_views"
    ORDERS_PLACED = "orders_placed"
    ORDERS_CONFIRMED = "orders_confirmed"
    ORDERS_CANCELLED = "orders_cancelled"
    PAYMENTS_CONFIRMED = "payments_confirmed"
    PAYMENTS_FAILED = "payments_failed"
    NEW_USERS = "new_users"


def day_of(moment: datetime) -> date:
    """The UTC day an event counts on."""
    return moment.astimezone(UTC).date()


async def _add(
    session: AsyncSession,
    model: Any,
    key: dict[str, Any],
    increments: dict[str, int],
    labels: dict[str, Any] | None = None,
) -> None:
    """Add ``increments`` to the roll-up row at ``key``, creating it; ``labels`` overwrite."""
    await _add_many(
        session,
        model,
        list(key),
        [{**key, **increments, **(labels or {})}],
        increments=list(increments),
        labels=list(labels or {}),
    )


async def _add_many(
    session: AsyncSession,
    model: Any,
    key: list[str],
    rows: list[dict[str, Any]],
    *,
    increments: list[str],
    labels: list[str],
) -> None:
    """Many roll-up rows in one statement (one round trip), each added to as in ``_add``."""
    statement = _insert(session)(model).values(rows)
    table = model.__table__
    changes: dict[str, Any] = {
        name: table.c[name] + statement.excluded[name] for name in increments
    }
    changes.update({name: statement.excluded[name] for name in labels})
    await session.execute(statement.on_conflict_do_update(index_elements=key, set_=changes))


async def count(session: AsyncSession, metric: Metric, day: date, value: int = 1) -> None:
    """Add ``value`` to a daily counter."""
    await _add(session, DailyCount, {"day": day, "metric": metric.value}, {"value": value})


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return pg_insert if dialect == "postgresql" else sqlite_insert


async def _order_fact(
    session: AsyncSession,
    *,
    order_id: uuid.UUID,
    user_id: uuid.UUID,
    status: str,
    revision: int,
    currency: str,
    total_amount: int,
    day: date,
    now: datetime,
) -> OrderFact:
    """The order's fact, created or moved to the event's status unless the event is stale."""
    # Two events of a new order may be applied at once: the insert that loses the race
    # does nothing, and both go on with the one row, locked.
    created = await session.execute(
        _insert(session)(OrderFact)
        .values(
            order_id=order_id,
            user_id=user_id,
            status=status,
            revision=revision,
            currency=currency,
            total_amount=total_amount,
            placed_on=day,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["order_id"])
    )
    fact = await session.get(OrderFact, order_id, with_for_update=True, populate_existing=True)
    assert fact is not None
    if created.rowcount != 1 and revision > fact.revision:  # type: ignore[attr-defined]
        fact.status = status
        fact.revision = revision
        fact.total_amount = total_amount
        fact.updated_at = now
    return fact


async def order_placed(session: AsyncSession, event: Any) -> None:
    """``order.created``: a new order counts on the day it was placed."""
    day = day_of(event.occurred_at)
    fact = await _order_fact(session, **_order_fields(event), day=day, now=event.occurred_at)
    if fact.placed_at is not None:
        return  # one order is placed once, whatever the events say
    fact.placed_at = event.occurred_at
    # An order heard of first through a later event counts on the day it was placed.
    fact.placed_on = min(fact.placed_on, day)
    await count(session, Metric.ORDERS_PLACED, day)


async def order_confirmed(session: AsyncSession, event: Any) -> None:
    """``order.confirmed``: its money, units and products count on the confirmation day."""
    day = day_of(event.occurred_at)
    fact = await _order_fact(session, **_order_fields(event), day=day, now=event.occurred_at)
    if fact.confirmed_at is not None:
        return  # one order is sold once, whatever the events say
    fact.confirmed_at = event.occurred_at
    await count(session, Metric.ORDERS_CONFIRMED, day)
    units = sum(line.quantity for line in event.items)
    await _add(
        session,
        DailySales,
        {"day": day, "currency": event.currency},
        {"gross": event.total_amount, "orders": 1, "units": units, "refunded": 0, "refunds": 0},
    )
    await _add_many(
        session,
        DailyProductSales,
        ["day", "product_id", "currency"],
        [
            {
                "day": day,
                "product_id": line["product_id"],
                "currency": event.currency,
                "units": line["quantity"],
                "revenue": line["line_total"],
                "name": line["name"],
                "category_id": line["category_id"],
            }
            for line in _merged(event.items)
        ],
        increments=["units", "revenue"],
        labels=["name", "category_id"],
    )


def _merged(items: Iterable[Any]) -> list[dict[str, Any]]:
    # Two variants of one product are one product in the reports (and one upsert).
    merged: dict[uuid.UUID, dict[str, Any]] = {}
    for line in items:
        entry = merged.setdefault(
            line.product_id,
            {
                "product_id": line.product_id,
                "name": line.name,
                "category_id": line.category_id,
                "quantity": 0,
                "line_total": 0,
            },
        )
        entry["quantity"] += line.quantity
        entry["line_total"] += line.line_total
    return list(merged.values())


async def order_changed(session: AsyncSession, event: Any, *, cancelled: bool = False) -> None:
    """Another status (cancelled, shipped, delivered, refunded): the fact follows it."""
    day = day_of(event.occurred_at)
    await _order_fact(session, **_order_fields(event), day=day, now=event.occurred_at)
    if cancelled:
        await count(session, Metric.ORDERS_CANCELLED, day)


def _order_fields(event: Any) -> dict[str, Any]:
    return {
        "order_id": event.order_id,
        "user_id": event.user_id,
        "status": event.status,
        "revision": event.revision,
        "currency": event.currency,
        "total_amount": event.total_amount,
    }


async def payment_refunded(session: AsyncSession, event: Any) -> None:
    """``payment.refunded``: the refund's amount counts on the day the money went back."""
    await _add(
        session,
        DailySales,
        {"day": day_of(event.occurred_at), "currency": event.currency},
        {"refunded": event.refund_amount, "refunds": 1, "gross": 0, "orders": 0, "units": 0},
    )
