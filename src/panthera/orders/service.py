"""What happens to an order: every status change goes through ``move``, which checks it
against the allowed moves, records it in the history and publishes its event.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, cast
from weakref import WeakKeyDictionary

from sqlalchemy import Table, bindparam, insert, inspect, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.sql import Sql, Transaction
from panthera.orders import errors
from panthera.orders.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderLine,
    OrderPlaced,
    OrderRefunded,
    OrderShipped,
)
from panthera.orders.models import Order, OrderItem, OrderStatusChange
from panthera.orders.states import (
    COMPENSATING_STEPS,
    REFUNDABLE,
    CancelReason,
    OrderStatus,
    SagaStep,
    can_move,
)

SYSTEM = "system"

# The hot transactions (placing an order, recording a saga step's outcome) run these
# Core statements, compiled once, instead of the ORM's load, change tracking and flush.
_ORDERS = cast(Table, Order.__table__)
_COLUMNS = tuple(column.key for column in _ORDERS.columns)
# Never changed once the order is placed.
_FIXED = frozenset(
    {"id", "user_id", "currency", "total_amount", "shipping_address", "created_at", "request_key"}
)
_CHANGING = tuple(key for key in _COLUMNS if key not in _FIXED)
_ITEMS = cast(Table, OrderItem.__table__)
_HISTORY = cast(Table, OrderStatusChange.__table__)
_HISTORY_COLUMNS = tuple(column.key for column in _HISTORY.columns)
_LOCK = select(*_ORDERS.columns).where(_ORDERS.c.id == bindparam("order_id")).with_for_update()
_INSERT_ORDER = insert(_ORDERS)
_INSERT_ITEMS = insert(_ITEMS)
_INSERT_HISTORY = insert(_HISTORY)


def _bind(prefix: str, column: Any) -> Any:
    return bindparam(f"{prefix}{column.key}", type_=column.type)


def _save_statement(*, unchanged: bool) -> Any:
    """``UPDATE orders`` of every changing column, by id; with ``unchanged``, only while
    the row still holds the values the change was worked out from (``was_*``)."""
    conditions = [_ORDERS.c.id == bindparam("order_id", type_=_ORDERS.c.id.type)]
    if unchanged:
        conditions += [
            _ORDERS.c[key].is_not_distinct_from(_bind("was_", _ORDERS.c[key])) for key in _CHANGING
        ]
    return (
        update(_ORDERS)
        .where(*conditions)
        .values({key: _bind("new_", _ORDERS.c[key]) for key in _CHANGING})
    )


def _with_history(saving: Any) -> Any:
    """PostgreSQL: the order's UPDATE and its history line in one statement (a
    data-modifying CTE), one round trip fewer; no line is written if no row was."""
    saved = saving.returning(_ORDERS.c.id).cte("saved")
    values = {key: _bind("h_", _HISTORY.c[key]) for key in _HISTORY_COLUMNS}
    values["order_id"] = saved.c.id
    return insert(_HISTORY).from_select(
        list(_HISTORY_COLUMNS), select(*(values[key] for key in _HISTORY_COLUMNS))
    )


_SAVE = _save_statement(unchanged=False)
_SAVE_UNCHANGED = _save_statement(unchanged=True)
_SAVE_WITH_HISTORY = _with_history(_SAVE)
_SAVE_UNCHANGED_WITH_HISTORY = _with_history(_SAVE_UNCHANGED)
# History lines of orders taken with ``lock`` (outside the ORM), written by ``save``.
_unsaved_history: WeakKeyDictionary[Order, list[dict[str, Any]]] = WeakKeyDictionary()


def now() -> datetime:
    return datetime.now(UTC)


class NewLine(Protocol):
    """A line of an order being placed, priced by the catalog (``clients.QuotedLine``)."""

    @property
    def product_id(self) -> uuid.UUID: ...
    @property
    def variant_id(self) -> uuid.UUID: ...
    @property
    def sku(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def category_id(self) -> uuid.UUID | None: ...
    @property
    def quantity(self) -> int: ...
    @property
    def unit_price(self) -> int: ...


async def load(session: AsyncSession, order_id: uuid.UUID, *, for_update: bool = False) -> Order:
    query = select(Order).where(Order.id == order_id).execution_options(populate_existing=True)
    if for_update:
        query = query.with_for_update()
    order = (await session.execute(query)).scalar_one_or_none()
    if order is None:
        raise errors.OrderNotFound()
    return order


async def find(
    session: AsyncSession, order_id: uuid.UUID, *, for_update: bool = False
) -> Order | None:
    try:
        return await load(session, order_id, for_update=for_update)
    except errors.OrderNotFound:
        return None


async def lock(sql: Sql, order_id: uuid.UUID) -> Order | None:
    """The order, locked for this transaction, as an object outside any session.

    Changes made to it, its history lines included, are written by ``save`` in the
    same transaction.
    """
    row = await sql.fetch_one(_LOCK, {"order_id": order_id})
    return None if row is None else Order(**row._asdict())


def detached_copy(order: Order) -> Order:
    """An order outside the session with the same values: a draft to change and ``save``."""
    return Order(**{key: getattr(order, key) for key in _COLUMNS})


def _saving(
    order: Order, unchanged: Order | None, postgres: bool
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """The statement that writes the order back, its values, and the history lines
    still to be written after it."""
    params = {f"new_{key}": getattr(order, key) for key in _CHANGING}
    params["order_id"] = order.id
    if unchanged is not None:
        params.update({f"was_{key}": getattr(unchanged, key) for key in _CHANGING})
    lines = _unsaved_history.pop(order, [])
    if len(lines) == 1 and postgres:
        params.update({f"h_{key}": value for key, value in lines[0].items()})
        statement = _SAVE_WITH_HISTORY if unchanged is None else _SAVE_UNCHANGED_WITH_HISTORY
        return statement, params, []
    return (_SAVE if unchanged is None else _SAVE_UNCHANGED), params, lines


async def save(sql: Sql, order: Order, *, unchanged: Order | None = None) -> bool:
    """Write an order taken with ``lock`` (or a ``detached_copy``) back, with its history.

    With ``unchanged``, the order as the change was worked out from: the write happens
    only if the row still holds exactly that, which stands in for the row lock (a
    concurrent change makes it write nothing). Answers whether the row was written.
    """
    statement, params, lines = _saving(order, unchanged, sql.postgres)
    if not await sql.execute(statement, params):
        return False
    await sql.execute_many(_INSERT_HISTORY, lines)
    return True


async def save_and_commit(tx: Transaction, order: Order, *, unchanged: Order | None = None) -> bool:
    """``save`` as the transaction's last write, and commit it with the events it
    published; when the row was not written (see ``unchanged``), roll it all back.

    On PostgreSQL a change of one history line is one statement with its events
    (``Transaction.commit_with``).
    """
    statement, params, lines = _saving(order, unchanged, tx.sql.postgres)
    if lines:
        if not await tx.sql.execute(statement, params):
            await tx.rollback()
            return False
        await tx.sql.execute_many(_INSERT_HISTORY, lines[:-1])
        statement, params = _INSERT_HISTORY, lines[-1]
    return bool(await tx.commit_with(statement, params))


_PLACED_BY = select(*_ORDERS.columns).where(_ORDERS.c.request_key == bindparam("request_key"))


async def placed_by(sql: Sql, request_key: str) -> Order | None:
    """The order an earlier run of the same request placed, if any."""
    row = await sql.fetch_one(_PLACED_BY, {"request_key": request_key})
    return None if row is None else Order(**row._asdict())


_ITEMS_OF = (
    select(*_ITEMS.columns)
    .where(_ITEMS.c.order_id == bindparam("order_id"))
    .order_by(_ITEMS.c.position)
)


async def items_of(sql: Sql, order_id: uuid.UUID) -> list[OrderItem]:
    """The order's lines, read with ``sql``, as objects outside any session."""
    return [
        OrderItem(**row._asdict()) for row in await sql.fetch(_ITEMS_OF, {"order_id": order_id})
    ]


async def history_of(session: AsyncSession, order_id: uuid.UUID) -> list[OrderStatusChange]:
    return list(
        (
            await session.execute(
                select(OrderStatusChange)
                .where(OrderStatusChange.order_id == order_id)
                .order_by(OrderStatusChange.at, OrderStatusChange.id)
            )
        ).scalars()
    )


def _lines(items: Sequence[OrderItem]) -> tuple[OrderLine, ...]:
    return tuple(
        OrderLine(
            product_id=item.product_id,
            variant_id=item.variant_id,
            sku=item.sku,
            name=item.name,
            category_id=item.category_id,
            quantity=item.quantity,
            unit_price=item.unit_price,
            line_total=item.unit_price * item.quantity,
        )
        for item in items
    )


def _common(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "user_id": order.user_id,
        "status": order.status,
        "total_amount": order.total_amount,
        "currency": order.currency,
        "revision": order.revision,
        "occurred_at": order.updated_at,
    }


def _history_line(order: Order, reason: str | None, actor: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "order_id": order.id,
        "status": order.status,
        "reason": reason,
        "actor": actor,
        "at": order.updated_at,
    }


async def _record(sql: Sql, order: Order, reason: str | None, actor: str) -> None:
    line = _history_line(order, reason, actor)
    if inspect(order).persistent:
        # Loaded by the ORM: the line is written now, the order when the session flushes.
        await sql.execute(_INSERT_HISTORY, line)
    else:
        # Taken with ``lock``: written by ``save`` with the order, in one statement.
        _unsaved_history.setdefault(order, []).append(line)


def touch(order: Order) -> None:
    order.revision += 1
    order.updated_at = now()


def new_order(
    *,
    user_id: uuid.UUID,
    lines: Sequence[NewLine],
    currency: str,
    shipping_address: str,
    payment_method: str,
    request_key: str | None = None,
    order_id: uuid.UUID | None = None,
    reserved_until: datetime | None = None,
    placed_at: datetime | None = None,
) -> tuple[Order, list[OrderItem]]:
    """A PENDING order priced by the catalog, with its lines, not yet written.

    ``reserved_until``: its stock is held already (a reservation with the order's id
    as its reference, until then): the saga starts at the payment. ``placed_at``:
    when placing it began (before its stock was held), now by default.
    """
    at = placed_at or now()
    order = Order(
        id=order_id or uuid.uuid4(),
        user_id=user_id,
        status=OrderStatus.PENDING,
        currency=currency,
        total_amount=sum(line.unit_price * line.quantity for line in lines),
        amount_refunded=0,
        shipping_address=shipping_address,
        cancel_reason=None,
        cancel_message=None,
        tracking_number=None,
        carrier=None,
        revision=1,
        created_at=at,
        updated_at=at,
        saga_step=SagaStep.RESERVE if reserved_until is None else SagaStep.PAY,
        saga_attempts=0,
        saga_next_at=at,
        saga_lease_until=None,
        saga_last_error=None,
        request_key=request_key,
        payment_method=payment_method,
        reservation_expires_at=reserved_until,
        payment_deadline=None,
        payment_id=None,
        payment_status=None,
        payment_revision=0,
    )
    items = [
        OrderItem(
            id=uuid.uuid4(),
            order_id=order.id,
            position=position,
            product_id=line.product_id,
            variant_id=line.variant_id,
            sku=line.sku,
            name=line.name,
            category_id=line.category_id,
            quantity=line.quantity,
            unit_price=line.unit_price,
        )
        for position, line in enumerate(lines)
    ]
    return order, items


_ITEM_COLUMNS = tuple(column.key for column in _ITEMS.columns)
_place_statements: dict[int, Any] = {}


def _place_statement(line_count: int) -> Any:
    """PostgreSQL: ``WITH o AS (INSERT order), i AS (INSERT lines) INSERT history``.

    One shape per number of lines, built on first use and kept.
    """
    statement = _place_statements.get(line_count)
    if statement is not None:
        return statement
    placed = (
        insert(_ORDERS)
        .values({key: _bind("o_", _ORDERS.c[key]) for key in _COLUMNS})
        .returning(_ORDERS.c.id)
        .cte("placed")
    )
    # INSERT ... SELECT of typed parameters, not a multi-row VALUES: SQLAlchemy caches
    # the compiled form of the one and compiles the other again on every execution.
    rows = [
        select(*(_bind(f"i{n}_", _ITEMS.c[key]) for key in _ITEM_COLUMNS))
        for n in range(line_count)
    ]
    lines = (
        insert(_ITEMS)
        .from_select(list(_ITEM_COLUMNS), union_all(*rows) if len(rows) > 1 else rows[0])
        .cte("lines")
    )
    values = {key: _bind("h_", _HISTORY.c[key]) for key in _HISTORY_COLUMNS}
    values["order_id"] = placed.c.id
    statement = (
        insert(_HISTORY)
        .from_select(list(_HISTORY_COLUMNS), select(*(values[key] for key in _HISTORY_COLUMNS)))
        .add_cte(lines)
    )
    _place_statements[line_count] = statement
    return statement


async def place(tx: Transaction, order: Order, items: Sequence[OrderItem]) -> None:
    """Write an order from ``new_order`` with its lines, history and event, and commit
    the transaction; the saga takes it from there."""
    sql = tx.sql
    placed = {key: getattr(order, key) for key in _COLUMNS}
    lines = [{key: getattr(item, key) for key in _ITEM_COLUMNS} for item in items]
    history = _history_line(order, None, str(order.user_id))
    tx.publish(
        OrderPlaced(**_common(order), items=_lines(items), shipping_address=order.shipping_address)
    )
    if sql.postgres and lines:
        # The order, its lines, its first history line and its event in one statement.
        params = {f"o_{key}": value for key, value in placed.items()}
        params.update({f"h_{key}": value for key, value in history.items()})
        for position, line in enumerate(lines):
            params.update({f"i{position}_{key}": value for key, value in line.items()})
        written = await tx.commit_with(_place_statement(len(lines)), params)
    else:
        await sql.execute(_INSERT_ORDER, placed)
        await sql.execute_many(_INSERT_ITEMS, lines)
        written = await tx.commit_with(_INSERT_HISTORY, history)
    if not written:
        raise RuntimeError(f"order {order.id} was not written")


async def move(
    tx: Transaction,
    order: Order,
    target: OrderStatus,
    *,
    actor: str = SYSTEM,
    reason: str | None = None,
    items: Sequence[OrderItem] | None = None,
) -> None:
    """Change the order's status, if the rules allow it, with its history line and event.

    ``items``: the order's lines, when the caller has them (they never change).
    """
    current = OrderStatus(order.status)
    if not can_move(current, target):
        raise errors.TransitionNotAllowed(current, target)
    order.status = target
    touch(order)
    await _record(tx.sql, order, reason, actor)
    common = _common(order)
    lines = None if items is None else _lines(items)
    if target == OrderStatus.CONFIRMED:
        tx.publish(
            OrderConfirmed(
                **common,
                items=lines or _lines(await items_of(tx.sql, order.id)),
                payment_id=order.payment_id,
            )
        )
    elif target == OrderStatus.CANCELLED:
        tx.publish(
            OrderCancelled(
                **common,
                reason=order.cancel_reason or reason or "cancelled",
                message=order.cancel_message,
                items=lines or _lines(await items_of(tx.sql, order.id)),
            )
        )
    elif target == OrderStatus.SHIPPED:
        tx.publish(
            OrderShipped(
                **common,
                tracking_number=order.tracking_number or "",
                carrier=order.carrier,
            )
        )
    elif target == OrderStatus.DELIVERED:
        tx.publish(OrderDelivered(**common))


async def cancel(
    tx: Transaction,
    order: Order,
    reason: CancelReason,
    *,
    actor: str = SYSTEM,
    message: str | None = None,
    compensate: bool = True,
) -> None:
    """Call the order off; with ``compensate``, the saga then gives back stock and money."""
    order.cancel_reason = reason
    order.cancel_message = message
    await move(tx, order, OrderStatus.CANCELLED, actor=actor, reason=reason)
    order.payment_method = None
    schedule(order, SagaStep.RELEASE if compensate else SagaStep.DONE)


def note_payment(order: Order, *, payment_id: uuid.UUID, status: str, revision: int) -> None:
    """Keep what is known of the order's payment, unless newer word is already here."""
    if revision < order.payment_revision:
        return
    order.payment_id = payment_id
    order.payment_status = status
    order.payment_revision = revision


def schedule(order: Order, step: SagaStep, *, at: datetime | None = None) -> None:
    """Make ``step`` the saga's next one, due at ``at`` (now by default), with fresh tries."""
    order.saga_step = step
    order.saga_attempts = 0
    order.saga_next_at = at or now()
    order.saga_last_error = None


def ensure_money_goes_back(order: Order) -> None:
    """A cancelled order must end with nothing charged: queue a refund unless one is queued."""
    if order.saga_step not in COMPENSATING_STEPS:
        # A new revision gives the refund a new idempotency key: the earlier one
        # found nothing to give back.
        touch(order)
        schedule(order, SagaStep.REFUND)


async def apply_refunded(
    tx: Transaction,
    order: Order,
    *,
    amount_refunded: int,
    reason: str,
    actor: str = SYSTEM,
) -> None:
    """Record money given back; a paid order refunded in full becomes REFUNDED.

    ``amount_refunded`` is the payment's total so far, so applying it twice is harmless.
    """
    total = min(order.total_amount, max(order.amount_refunded, amount_refunded))
    if total == order.amount_refunded:
        return
    refund_amount = total - order.amount_refunded
    order.amount_refunded = total
    fully = order.amount_refunded >= order.total_amount
    if fully and OrderStatus(order.status) in REFUNDABLE:
        await move(tx, order, OrderStatus.REFUNDED, actor=actor, reason=reason[:40])
    else:
        touch(order)
    tx.publish(
        OrderRefunded(
            **_common(order),
            refund_amount=refund_amount,
            amount_refunded=order.amount_refunded,
            fully_refunded=fully,
            reason=reason,
        )
    )
