"""Applying events to the analytics store: order facts and additive daily roll-ups.

Every function runs inside the consumer's unit of work, beside the inbox record
that makes a redelivered event a no-op. Roll-up increments are collected in the
transaction's :class:`Rollups` and written by :func:`write_rollups` just before
it commits: one ``INSERT ... ON CONFLICT DO UPDATE`` per table for a whole batch
of events, atomic on PostgreSQL under concurrent consumers and cheap on SQLite.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

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


class _Table:
    """The increments waiting for one roll-up table, merged by key."""

    def __init__(self, key: list[str], increments: list[str], labels: list[str]) -> None:
        self.key = key
        self.increments = increments
        self.labels = labels
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}


class Rollups:
    """The roll-up increments of one transaction, written together before it commits."""

    def __init__(self) -> None:
        self._tables: dict[Any, _Table] = {}

    def add(
        self,
        model: Any,
        key: dict[str, Any],
        increments: dict[str, int],
        labels: dict[str, Any] | None = None,
    ) -> None:
        """Add ``increments`` to the row at ``key``, creating it; ``labels`` overwrite."""
        labels = labels or {}
        table = self._tables.get(model)
        if table is None:
            table = self._tables[model] = _Table(list(key), list(increments), list(labels))
        row = table.rows.get(tuple(key.values()))
        if row is None:
            table.rows[tuple(key.values())] = {**key, **increments, **labels}
            return
        for name, value in increments.items():
            row[name] += value
        row.update(labels)

    def count(self, metric: Metric, day: date, value: int = 1) -> None:
        """Add ``value`` to a daily counter."""
        self.add(DailyCount, {"day": day, "metric": metric.value}, {"value": value})

    @property
    def pending(self) -> bool:
        return any(table.rows for table in self._tables.values())

    async def write(self, session: AsyncSession) -> None:
        """One upsert per table; rows in key order so concurrent writers lock alike."""
        tables, self._tables = self._tables, {}
        for model, table in tables.items():
            if table.rows:
                await _add_many(
                    session,
                    model,
                    table.key,
                    [table.rows[key] for key in sorted(table.rows, key=_sortable)],
                    increments=table.increments,
                    labels=table.labels,
                )


def _sortable(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(part) for part in key)


_ROLLUPS = "analytics.rollups"


def rollups(session: AsyncSession) -> Rollups:
    """The roll-ups of ``session``'s transaction, to be written by ``write_rollups``."""
    sync_session = session.sync_session
    found: Rollups | None = sync_session.info.get(_ROLLUPS)
    if found is None:
        found = sync_session.info[_ROLLUPS] = Rollups()
        sa_event.listen(sync_session, "before_commit", _refuse_unwritten)
    return found


def _refuse_unwritten(sync_session: Session) -> None:
    # Committing increments nobody wrote would lose them silently; the
    # transaction must fail, and the events be retried, instead.
    found: Rollups | None = sync_session.info.get(_ROLLUPS)
    if found is not None and found.pending:
        raise RuntimeError("analytics roll-ups were not written before the commit")


async def write_rollups(session: AsyncSession) -> None:
    """Write what the transaction's events added to the roll-ups."""
    found: Rollups | None = session.sync_session.info.get(_ROLLUPS)
    if found is not None:
        await found.write(session)


async def _add_many(
    session: AsyncSession,
    model: Any,
    key: list[str],
    rows: list[dict[str, Any]],
    *,
    increments: list[str],
    labels: list[str],
) -> None:
    """Many roll-up rows in one round trip, each added to, labels replaced."""
    # Rows as executemany parameters, not inlined VALUES: one statement shape
    # whatever the batch holds, compiled once and then found in the cache.
    statement = _insert(session)(model)
    table = model.__table__
    changes: dict[str, Any] = {
        name: table.c[name] + statement.excluded[name] for name in increments
    }
    changes.update({name: statement.excluded[name] for name in labels})
    await session.execute(statement.on_conflict_do_update(index_elements=key, set_=changes), rows)


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
    rollups(session).count(Metric.ORDERS_PLACED, day)


async def order_confirmed(session: AsyncSession, event: Any) -> None:
    """``order.confirmed``: its money, units and products count on the confirmation day."""
    day = day_of(event.occurred_at)
    fact = await _order_fact(session, **_order_fields(event), day=day, now=event.occurred_at)
    if fact.confirmed_at is not None:
        return  # one order is sold once, whatever the events say
    fact.confirmed_at = event.occurred_at
    added = rollups(session)
    added.count(Metric.ORDERS_CONFIRMED, day)
    units = sum(line.quantity for line in event.items)
    added.add(
        DailySales,
        {"day": day, "currency": event.currency},
        {"gross": event.total_amount, "orders": 1, "units": units, "refunded": 0, "refunds": 0},
    )
    for line in _merged(event.items):
        added.add(
            DailyProductSales,
            {"day": day, "product_id": line["product_id"], "currency": event.currency},
            {"units": line["quantity"], "revenue": line["line_total"]},
            {"name": line["name"], "category_id": line["category_id"]},
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
        rollups(session).count(Metric.ORDERS_CANCELLED, day)


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
    rollups(session).add(
        DailySales,
        {"day": day_of(event.occurred_at), "currency": event.currency},
        {"refunded": event.refund_amount, "refunds": 1, "gross": 0, "orders": 0, "units": 0},
    )
