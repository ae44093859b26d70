"""Applying events to the analytics store: order facts and additive daily roll-ups.

Every function runs inside the consumer's transaction, beside the inbox record
that makes a redelivered event a no-op. Order facts and roll-up increments are
collected in the transaction and written just before it commits, the facts by
:func:`write_facts` (one upsert per kind of event for a batch, more only for an
order with several events in it), then the roll-ups the facts say count by
:func:`write_rollups`: one ``INSERT ... ON CONFLICT DO UPDATE`` per table for a
whole batch of events, atomic on PostgreSQL under concurrent consumers and cheap
on SQLite.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import case
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from panthera.analytics.models import DailyCount, DailyProductSales, DailySales, OrderFact
from panthera.kernel.db import WrittenBeforeCommit
from panthera.kernel.sql import Sql, Transaction


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

    async def write(self, sql: Sql) -> None:
        """One upsert per table; rows in key order so concurrent writers lock alike."""
        tables, self._tables = self._tables, {}
        for model, table in tables.items():
            if table.rows:
                await _add_many(
                    sql,
                    model,
                    table.key,
                    [table.rows[key] for key in sorted(table.rows, key=_sortable)],
                    increments=table.increments,
                    labels=table.labels,
                )


def _sortable(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(part) for part in key)


# Increments nobody wrote would be lost with their events recorded as applied.
_ROLLUPS = WrittenBeforeCommit("analytics roll-ups", Rollups, lambda found: bool(found.pending))


def rollups(tx: Transaction) -> Rollups:
    """The roll-ups of ``tx``, to be written by ``write_rollups``."""
    return _ROLLUPS.of(tx)


async def write_rollups(tx: Transaction) -> None:
    """Write what the transaction's events added to the roll-ups."""
    found = _ROLLUPS.gathered(tx)
    if found is not None:
        await found.write(tx.sql)


_ROLLUP_UPSERTS: dict[tuple[Any, ...], Any] = {}


async def _add_many(
    sql: Sql,
    model: Any,
    key: list[str],
    rows: list[dict[str, Any]],
    *,
    increments: list[str],
    labels: list[str],
) -> None:
    """Many roll-up rows in one round trip, each added to, labels replaced."""
    # Rows as executemany parameters, not inlined VALUES, and the statement kept
    # per dialect and table: built and compiled once, whatever the batch holds.
    shape = (sql.postgres, model, tuple(key), frozenset(increments), frozenset(labels))
    statement = _ROLLUP_UPSERTS.get(shape)
    if statement is None:
        insert = (pg_insert if sql.postgres else sqlite_insert)(model)
        table = model.__table__
        changes: dict[str, Any] = {
            name: table.c[name] + insert.excluded[name] for name in increments
        }
        changes.update({name: insert.excluded[name] for name in labels})
        statement = _ROLLUP_UPSERTS[shape] = insert.on_conflict_do_update(
            index_elements=key, set_=changes
        )
    await sql.execute_many(statement, rows)


def _fact_upserts(insert: Any) -> dict[str, Any]:
    """The order-fact statements of one dialect, built once: one upsert per order event.

    The merge rule is in SQL so a single statement, atomic under concurrent
    consumers, creates the fact or moves it: a newer revision takes the
    status, amount and time; an older one leaves them. Placing and confirming
    update only a fact not yet placed (or confirmed), so the ids they return
    are the orders for which this event is the one that counts.
    """
    table = OrderFact.__table__
    c = table.c
    statement = insert(table)
    new = statement.excluded
    newer = new.revision > c.revision
    moved = {
        name: case((newer, new[name]), else_=c[name])
        for name in ("status", "total_amount", "updated_at")
    }
    # SET expressions all read the row as it was, so the revision moves alongside.
    moved["revision"] = case((newer, new.revision), else_=c.revision)
    placed = {
        **moved,
        "placed_at": new.placed_at,
        # An order heard of first through a later event counts on the day it was placed.
        "placed_on": case((new.placed_on < c.placed_on, new.placed_on), else_=c.placed_on),
    }
    placing = statement.on_conflict_do_update(
        index_elements=[c.order_id], set_=placed, where=c.placed_at.is_(None)
    )
    confirming = statement.on_conflict_do_update(
        index_elements=[c.order_id],
        set_={**moved, "confirmed_at": new.confirmed_at},
        where=c.confirmed_at.is_(None),
    )
    return {
        # The orders a batch of events placed (or confirmed) come back.
        "placed_returning": placing.returning(c.order_id),
        "confirmed_returning": confirming.returning(c.order_id),
        "changed": statement.on_conflict_do_update(
            index_elements=[c.order_id],
            set_={name: new[name] for name in ("status", "total_amount", "updated_at", "revision")},
            where=newer,
        ),
    }


# By whether the statements run on PostgreSQL.
_FACT_UPSERTS = {True: _fact_upserts(pg_insert), False: _fact_upserts(sqlite_insert)}


@dataclass
class _Fact:
    kind: str
    row: dict[str, Any]
    # Run when this event is the one that placed (or confirmed) the order.
    counted: Callable[[], None] | None


class _Facts:
    """The order-fact upserts of one transaction, written together before it commits."""

    def __init__(self) -> None:
        self.pending: list[_Fact] = []

    async def write(self, sql: Sql) -> None:
        """Each event's upsert, as few statements as keep every order's events in order.

        An order's n-th event of the transaction goes in the n-th round, so one
        statement never touches an order twice (which ON CONFLICT DO UPDATE
        refuses) and an order's events apply in the order they came. Within a
        round, one statement per kind; the ids it returns are the orders whose
        placing (or confirmation) this event is.
        """
        pending, self.pending = self.pending, []
        rounds: list[list[_Fact]] = []
        seen: dict[Any, int] = {}
        for fact in pending:
            index = seen.get(fact.row["order_id"], 0)
            seen[fact.row["order_id"]] = index + 1
            if index == len(rounds):
                rounds.append([])
            rounds[index].append(fact)
        upserts = _FACT_UPSERTS[sql.postgres]
        for facts in rounds:
            for kind in ("placed", "confirmed", "changed"):
                of_kind = [fact for fact in facts if fact.kind == kind]
                if not of_kind:
                    continue
                rows = [fact.row for fact in of_kind]
                if kind == "changed":
                    await sql.execute_many(upserts["changed"], rows)
                    continue
                counted = {
                    row[0] for row in await sql.fetch_many(upserts[f"{kind}_returning"], rows)
                }
                later: list[dict[str, Any]] = []
                for fact in of_kind:
                    if fact.row["order_id"] in counted:
                        if fact.counted is not None:
                            fact.counted()
                    else:
                        # Placed (or confirmed) before: the event may still
                        # carry a newer status.
                        later.append(fact.row)
                if later:
                    await sql.execute_many(upserts["changed"], later)


_FACTS = WrittenBeforeCommit("analytics order facts", _Facts, lambda found: bool(found.pending))


def _facts(tx: Transaction) -> _Facts:
    return _FACTS.of(tx)


async def write_facts(tx: Transaction) -> None:
    """Write the order facts the transaction's events moved (before its roll-ups)."""
    found = _FACTS.gathered(tx)
    if found is not None:
        await found.write(tx.sql)


def _order_fact(
    tx: Transaction,
    kind: str,
    event: Any,
    *,
    placed_at: datetime | None = None,
    confirmed_at: datetime | None = None,
    counted: Callable[[], None] | None = None,
) -> None:
    """Create or move the order's fact before the commit; ``counted`` runs if this event
    placed (or confirmed) it."""
    day = day_of(event.occurred_at)
    row = {
        "order_id": event.order_id,
        "user_id": event.user_id,
        "status": event.status,
        "revision": event.revision,
        "currency": event.currency,
        "total_amount": event.total_amount,
        "placed_on": day,
        "placed_at": placed_at,
        "confirmed_at": confirmed_at,
        "updated_at": event.occurred_at,
    }
    _facts(tx).pending.append(_Fact(kind, row, counted))


async def order_placed(tx: Transaction, event: Any) -> None:
    """``order.created``: a new order counts on the day it was placed."""
    day = day_of(event.occurred_at)

    def counted() -> None:
        rollups(tx).count(Metric.ORDERS_PLACED, day)

    # One order is placed once, whatever the events say.
    _order_fact(tx, "placed", event, placed_at=event.occurred_at, counted=counted)


async def order_confirmed(tx: Transaction, event: Any) -> None:
    """``order.confirmed``: its money, units and products count on the confirmation day."""

    def counted() -> None:
        day = day_of(event.occurred_at)
        added = rollups(tx)
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

    # One order is sold once, whatever the events say.
    _order_fact(tx, "confirmed", event, confirmed_at=event.occurred_at, counted=counted)


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


async def order_changed(tx: Transaction, event: Any, *, cancelled: bool = False) -> None:
    """Another status (cancelled, shipped, delivered, refunded): the fact follows it."""
    _order_fact(tx, "changed", event)
    if cancelled:
        rollups(tx).count(Metric.ORDERS_CANCELLED, day_of(event.occurred_at))


async def payment_refunded(tx: Transaction, event: Any) -> None:
    """``payment.refunded``: the refund's amount counts on the day the money went back."""
    rollups(tx).add(
        DailySales,
        {"day": day_of(event.occurred_at), "currency": event.currency},
        {"refunded": event.refund_amount, "refunds": 1, "gross": 0, "orders": 0, "units": 0},
    )
