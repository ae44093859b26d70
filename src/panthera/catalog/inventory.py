"""Stock: adjustments, reservations (made, released, committed, expired) and the ledger.

Reservations never oversell: each line is held by a conditional UPDATE
(``reserved = reserved + q WHERE on_hand - reserved >= q``), which PostgreSQL
serialises on the row and SQLite on its write lock; variants are taken in id
order, then their products in id order, so concurrent multi-line reservations
cannot deadlock. On PostgreSQL all lines are one such UPDATE and the lines, ledger
and products' totals one more statement; committing or releasing moves all lines in
one UPDATE too. SQLite runs one statement for each.

Reserving and settling are the hottest writes of an order, so they are Core
statements run on the driver (``kernel/sql.py``): the conditional UPDATE answers the
variant's new stock with ``RETURNING`` (what the ledger records), the ledger and
the reservation's lines are one INSERT each, and a product's ``available`` total
moves by the same delta as its variants instead of being summed again.

A reservation publishes one event carrying its lines (``stock.reserved``,
``stock.committed``, ``stock.released``); ``stock.changed`` is kept for what those
do not tell: adjustments, and a variant going out of stock or back in stock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    any_,
    bindparam,
    column,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.catalog import errors
from panthera.catalog.events import (
    RejectedLine,
    ReservedLine,
    StockChanged,
    StockCommitted,
    StockRejected,
    StockReleased,
    StockReserved,
)
from panthera.catalog.models import (
    RESERVATION_ACTIVE,
    STILL_HELD,
    Product,
    Reservation,
    ReservationItem,
    StockMovement,
    Variant,
)
from panthera.kernel.db import UnitOfWork
from panthera.kernel.events import EventContract
from panthera.kernel.recent import Recent
from panthera.kernel.sql import Sql, Transaction

_variants = cast(Table, Variant.__table__)
_products = cast(Table, Product.__table__)
_reservations = cast(Table, Reservation.__table__)
_items = cast(Table, ReservationItem.__table__)
_movements = cast(Table, StockMovement.__table__)


def _bind(name: str, column: Any, *, expanding: bool = False) -> Any:
    return bindparam(name, type_=column.type, expanding=expanding)


# The hot path's statements, built once: building one costs more Python than
# running it, and the values are parameters anyway.
_RESERVE_LINE = (
    update(_variants)
    .where(
        _variants.c.id == _bind("variant", _variants.c.id),
        _variants.c.on_hand - _variants.c.reserved >= _bind("quantity", _variants.c.reserved),
    )
    .values(
        reserved=_variants.c.reserved + _bind("quantity", _variants.c.reserved),
        updated_at=_bind("at", _variants.c.updated_at),
    )
    .returning(_variants.c.on_hand, _variants.c.reserved, _variants.c.price_amount)
)
_MOVE_VARIANT = (
    update(_variants)
    .where(_variants.c.id == _bind("variant", _variants.c.id))
    .values(
        on_hand=_variants.c.on_hand + _bind("on_hand_by", _variants.c.on_hand),
        reserved=_variants.c.reserved + _bind("reserved_by", _variants.c.reserved),
        updated_at=_bind("at", _variants.c.updated_at),
    )
    .returning(_variants.c.on_hand, _variants.c.reserved)
)
_MOVE_PRODUCT = (
    update(_products)
    .where(_products.c.id == _bind("product", _products.c.id))
    .values(available=_products.c.available + _bind("by", _products.c.available))
)
_CLOSE = (
    update(_reservations)
    .where(
        _reservations.c.reference == _bind("ref", _reservations.c.reference),
        _reservations.c.status == _bind("was", _reservations.c.status),
    )
    .values(
        status=_bind("becomes", _reservations.c.status),
        updated_at=_bind("at", _reservations.c.updated_at),
    )
    .returning(_reservations.c.id)
)
_STATUS = select(_reservations.c.status).where(
    _reservations.c.reference == _bind("ref", _reservations.c.reference)
)
_HELD_ITEMS = (
    select(_items.c.variant_id, _items.c.quantity, _variants.c.product_id, _variants.c.sku)
    .join_from(_items, _variants, _variants.c.id == _items.c.variant_id)
    .where(_items.c.reservation_id == _bind("reservation", _items.c.reservation_id))
    .order_by(_items.c.variant_id)
)
_STATUS_LOCKED = _STATUS.with_for_update()
_AVAILABLE = select(_variants.c.on_hand - _variants.c.reserved).where(
    _variants.c.id == _bind("variant", _variants.c.id)
)
_INSERT_ITEMS = insert(_items)
_INSERT_MOVEMENTS = insert(_movements)
_CLAIM = {
    name: dialect.insert(_reservations)
    .on_conflict_do_nothing(index_elements=[_reservations.c.reference])
    .returning(_reservations.c.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


class ReservationStatus:
    ACTIVE = RESERVATION_ACTIVE
    RELEASED = "released"
    COMMITTED = "committed"
    EXPIRED = "expired"
    REJECTED = "rejected"
    # Sold, then the sale was called off: the goods went back on the shelf.
    RETURNED = "returned"


@dataclass(frozen=True)
class LineRequest:
    quantity: int
    product_id: uuid.UUID | None = None
    variant_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class StockItem:
    """The variant a reservation line holds."""

    id: uuid.UUID
    product_id: uuid.UUID
    sku: str


@dataclass(frozen=True, slots=True)
class HeldReservation:
    id: uuid.UUID
    reference: str
    status: str
    expires_at: datetime


@dataclass(frozen=True)
class ReservationOutcome:
    reservation: HeldReservation | None
    lines: list[tuple[StockItem, int, int]]
    currency: str | None
    rejected: StockRejected | None = None
    # Each held variant's name as an order line shows it, and its product's category.
    names: dict[uuid.UUID, tuple[str, uuid.UUID | None]] = field(default_factory=dict)


def line_name(product_name: str, variant_title: str) -> str:
    """A line's name: the product's, with the variant's title when it says more."""
    if variant_title in ("", product_name):
        return product_name
    return f"{product_name} ({variant_title})"


def _now() -> datetime:
    return datetime.now(UTC)


async def _refresh_product_totals(session: AsyncSession, product_id: uuid.UUID) -> None:
    """Set the product's list price and available total from its variants.

    For price changes; stock changes move ``available`` by their delta instead.
    The product row is locked before the variants are summed: on PostgreSQL each
    statement reads what was committed when it began, so a sum taken before waiting
    for a concurrent change of another variant would overwrite that change's total.
    """
    await session.execute(select(Product.id).where(Product.id == product_id).with_for_update())
    cheapest, available = (
        await session.execute(
            select(
                func.min(Variant.price_amount), func.sum(Variant.on_hand - Variant.reserved)
            ).where(Variant.product_id == product_id)
        )
    ).one()
    await session.execute(
        update(Product)
        .where(Product.id == product_id)
        .values(price_amount=cheapest or 0, available=available or 0)
    )


async def _move_product_totals(sql: Sql, deltas: dict[uuid.UUID, int]) -> None:
    """Move each product's ``available`` by what its variants' available stock moved.

    Products in id order, after the variants: one lock order for every writer. On
    PostgreSQL an UPDATE that waited for a concurrent one applies its delta to the
    value that one committed, so no change is lost without reading the variants.
    """
    for product_id in sorted(deltas):
        if deltas[product_id]:
            await sql.execute(_MOVE_PRODUCT, {"product": product_id, "by": deltas[product_id]})


def _record(
    uow: UnitOfWork,
    variant: Variant,
    *,
    kind: str,
    on_hand_delta: int,
    reserved_delta: int,
    reason: str,
    actor_id: uuid.UUID | None = None,
    reservation_id: uuid.UUID | None = None,
) -> None:
    """Ledger row and ``stock.changed`` for a change of one variant loaded in the session."""
    now = _now()
    uow.session.add(
        StockMovement(
            id=uuid.uuid4(),
            variant_id=variant.id,
            kind=kind,
            on_hand_delta=on_hand_delta,
            reserved_delta=reserved_delta,
            on_hand_after=variant.on_hand,
            reserved_after=variant.reserved,
            reason=reason,
            actor_id=actor_id,
            reservation_id=reservation_id,
            created_at=now,
        )
    )
    uow.publish(
        StockChanged(
            product_id=variant.product_id,
            variant_id=variant.id,
            sku=variant.sku,
            on_hand=variant.on_hand,
            reserved=variant.reserved,
            available=variant.on_hand - variant.reserved,
            cause=kind,
            occurred_at=now,
        )
    )


@dataclass(frozen=True, slots=True)
class _Moved:
    """One variant's stock after a reservation line moved it."""

    item: StockItem
    on_hand_delta: int
    reserved_delta: int
    on_hand: int
    reserved: int

    @property
    def available_delta(self) -> int:
        return self.on_hand_delta - self.reserved_delta

    @property
    def crossed_zero(self) -> bool:
        """Whether the variant went out of stock or came back: what a shop page shows."""
        after = self.on_hand - self.reserved
        before = after - self.available_delta
        return (before > 0) != (after > 0)


_ITEM_KEYS = tuple(item.key for item in _items.columns)
_MOVEMENT_KEYS = tuple(movement.key for movement in _movements.columns)
_written_together: dict[tuple[int, int, int], Any] = {}


def _rows_of(table: Table, keys: Sequence[str], prefix: str, count: int) -> Any:
    """``INSERT`` of ``count`` rows whose values are parameters named ``<prefix><n>_<key>``.

    ``INSERT ... SELECT`` of typed parameters, not a multi-row ``VALUES``: SQLAlchemy
    caches the compiled form of the one and compiles the other on every execution.
    """
    rows = [
        select(*(_bind(f"{prefix}{n}_{key}", table.c[key]) for key in keys)) for n in range(count)
    ]
    return insert(table).from_select(list(keys), union_all(*rows) if count > 1 else rows[0])


def _write_together_statement(items: int, movements: int, products: int) -> Any:
    """PostgreSQL: a reservation's lines, its ledger rows and the products' totals'
    moves as one statement (data-modifying CTEs): round trips fewer, same effect.

    The products' rows are the only ones it locks, in id order (as every writer takes
    them) when there are several.
    """
    key = (items, movements, min(products, 2))
    statement = _written_together.get(key)
    if statement is not None:
        return statement
    ledger = _rows_of(_movements, _MOVEMENT_KEYS, "m", movements)
    parts = [_rows_of(_items, _ITEM_KEYS, "i", items).cte("held")] if items else []
    if products:
        moves = _MOVE_PRODUCT if products == 1 else _MOVE_PRODUCTS
        statement = moves.add_cte(*parts, ledger.cte("ledger"))
    else:
        statement = ledger.add_cte(*parts) if parts else ledger
    _written_together[key] = statement
    return statement


async def _write(
    sql: Sql,
    items: list[dict[str, Any]],
    movements: list[dict[str, Any]],
    deltas: dict[uuid.UUID, int],
    *,
    commit: Transaction | None = None,
) -> None:
    """Write a reservation's ``items`` (reserve only), the ledger's ``movements`` and
    move the products' totals by ``deltas``; with ``commit``, as that transaction's
    last write, and commit it (on PostgreSQL, with its events, in one statement)."""
    products = sorted(product for product, delta in deltas.items() if delta)
    if not sql.postgres or not movements:
        await sql.execute_many(_INSERT_ITEMS, items)
        await sql.execute_many(_INSERT_MOVEMENTS, movements)
        await _move_product_totals(sql, deltas)
        if commit is not None:
            await commit.commit()
        return
    params: dict[str, Any] = {}
    for n, row in enumerate(items):
        params.update({f"i{n}_{key}": value for key, value in row.items()})
    for n, row in enumerate(movements):
        params.update({f"m{n}_{key}": value for key, value in row.items()})
    if len(products) == 1:
        params.update({"product": products[0], "by": deltas[products[0]]})
    elif products:
        params.update({"products": products, "bys": [deltas[p] for p in products]})
    statement = _write_together_statement(len(items), len(movements), len(products))
    if commit is None:
        await sql.execute(statement, params)
    # Every product moved or ledger row written counts: the statement always writes.
    elif not await commit.commit_with(statement, params):
        raise AssertionError("a stock movement wrote nothing")


async def _settle(
    tx: Transaction,
    sql: Sql,
    moved: Sequence[_Moved],
    *,
    kind: str,
    reason: str,
    reservation_id: uuid.UUID,
    now: datetime,
    items: list[dict[str, Any]] | None = None,
    then: EventContract | None = None,
    commit: bool = False,
) -> None:
    """The ledger rows of ``moved``, product totals, and ``stock.changed`` where it counts
    (then the event ``then``); with ``items``, the reservation's lines too, written
    together. With ``commit``, the transaction commits with them."""
    if not moved:
        await sql.execute_many(_INSERT_ITEMS, items or [])
        if then is not None:
            tx.publish(then)
        if commit:
            await tx.commit()
        return
    movements = [
        {
            "id": uuid.uuid4(),
            "variant_id": line.item.id,
            "kind": kind,
            "on_hand_delta": line.on_hand_delta,
            "reserved_delta": line.reserved_delta,
            "on_hand_after": line.on_hand,
            "reserved_after": line.reserved,
            "reason": reason,
            "actor_id": None,
            "reservation_id": reservation_id,
            "created_at": now,
        }
        for line in moved
    ]
    deltas: dict[uuid.UUID, int] = {}
    for line in moved:
        deltas[line.item.product_id] = deltas.get(line.item.product_id, 0) + line.available_delta
    for line in moved:
        if line.crossed_zero:
            tx.publish(
                StockChanged(
                    product_id=line.item.product_id,
                    variant_id=line.item.id,
                    sku=line.item.sku,
                    on_hand=line.on_hand,
                    reserved=line.reserved,
                    available=line.on_hand - line.reserved,
                    cause=kind,
                    occurred_at=now,
                )
            )
    if then is not None:
        tx.publish(then)
    await _write(sql, items or [], movements, deltas, commit=tx if commit else None)


async def adjust(
    uow: UnitOfWork, variant_id: uuid.UUID, delta: int, reason: str, actor_id: uuid.UUID | None
) -> Variant:
    """Add or remove units on hand (a delivery, a count, breakage), recorded in the ledger."""
    session = uow.session
    result = await session.execute(
        update(Variant)
        .where(Variant.id == variant_id, Variant.on_hand + delta >= Variant.reserved)
        .values(on_hand=Variant.on_hand + delta, updated_at=_now())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        if await session.get(Variant, variant_id) is None:
            raise errors.VariantNotFound()
        raise errors.StockBelowReserved()
    variant = (
        await session.execute(
            select(Variant)
            .where(Variant.id == variant_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    _record(
        uow,
        variant,
        kind="adjustment",
        on_hand_delta=delta,
        reserved_delta=0,
        reason=reason,
        actor_id=actor_id,
    )
    await _move_product_totals(uow.sql, {variant.product_id: delta})
    return variant


@dataclass(frozen=True, slots=True)
class QuotedLine:
    """A line priced as the catalog sells it today."""

    variant_id: uuid.UUID
    product_id: uuid.UUID
    sku: str
    name: str
    category_id: uuid.UUID | None
    quantity: int
    unit_price_amount: int
    currency: str
    available: int


_LINE_COLUMNS = (
    _variants.c.id,
    _variants.c.product_id,
    _variants.c.sku,
    _variants.c.title,
    _variants.c.price_amount,
    _variants.c.on_hand,
    _variants.c.reserved,
    _products.c.status,
    _products.c.currency,
    _products.c.name,
    _products.c.category_id,
)
_LINES = (
    select(*_LINE_COLUMNS)
    .join_from(_variants, _products, _products.c.id == _variants.c.product_id)
    .where(
        or_(
            _variants.c.id.in_(_bind("variants", _variants.c.id, expanding=True)),
            _variants.c.product_id.in_(_bind("products", _variants.c.product_id, expanding=True)),
        )
    )
)
# PostgreSQL: the same with arrays, one compiled form whatever the number of lines.
_LINES_ANY = (
    select(*_LINE_COLUMNS)
    .join_from(_variants, _products, _products.c.id == _variants.c.product_id)
    .where(
        or_(
            _variants.c.id
            == any_(bindparam("variants", type_=postgresql.ARRAY(_variants.c.id.type))),
            _variants.c.product_id
            == any_(bindparam("products", type_=postgresql.ARRAY(_variants.c.id.type))),
        )
    )
)


async def _resolve(sql: Sql, requests: Sequence[LineRequest]) -> list[tuple[LineRequest, Any]]:
    """Each line with its variant's row (joined with its product), or None if it names none.

    One statement for all lines; a line naming a product stands for that product's
    variant when it has exactly one. Archived products name nothing.
    """
    variant_ids = {r.variant_id for r in requests if r.variant_id is not None}
    product_ids = {
        r.product_id for r in requests if r.variant_id is None and r.product_id is not None
    }
    rows = await sql.fetch(
        _LINES_ANY if sql.postgres else _LINES,
        {"variants": list(variant_ids), "products": list(product_ids)},
    )
    by_variant = {row.id: row for row in rows}
    by_product: dict[uuid.UUID, list[Any]] = {}
    for row in rows:
        by_product.setdefault(row.product_id, []).append(row)
    resolved: list[tuple[LineRequest, Any]] = []
    for request in requests:
        named: Any = None
        if request.variant_id is not None:
            named = by_variant.get(request.variant_id)
        elif request.product_id is not None:
            found = by_product.get(request.product_id, [])
            named = found[0] if len(found) == 1 else None
        active = named is not None and named.status == "active"
        resolved.append((request, named if active else None))
    return resolved


def _unknown(request: LineRequest) -> RejectedLine:
    return RejectedLine(
        product_id=request.product_id,
        variant_id=request.variant_id,
        requested=request.quantity,
        available=0,
    )


_WANTED = (
    func.unnest(
        bindparam("variants", type_=postgresql.ARRAY(_variants.c.id.type)),
        bindparam("quantities", type_=postgresql.ARRAY(_variants.c.reserved.type)),
    )
    .table_valued(
        column("variant_id", _variants.c.id.type), column("quantity", _variants.c.reserved.type)
    )
    .render_derived(name="wanted")
)


def _locked(which: Any) -> Any:
    """The variants ``which`` names, locked in id order, the order every writer takes
    them in, before any is changed: a subquery's FOR UPDATE locks its rows in the order
    it returns them."""
    return (
        select(_variants.c.id)
        .where(which)
        .order_by(_variants.c.id)
        .with_for_update()
        .subquery("locked")
    )


def _moving(locked: Any, lines: Any) -> Any:
    """UPDATE of each of ``lines``' variants (``locked``) by its quantity times the
    signs: which counts a line's quantity moves, so one compiled statement serves every
    kind of move (committed, released, put back)."""
    return (
        update(_variants)
        .where(_variants.c.id == locked.c.id, _variants.c.id == lines.c.variant_id)
        .values(
            on_hand=_variants.c.on_hand
            + lines.c.quantity * _bind("on_hand_sign", _variants.c.on_hand),
            reserved=_variants.c.reserved
            + lines.c.quantity * _bind("reserved_sign", _variants.c.reserved),
            updated_at=_bind("at", _variants.c.updated_at),
        )
    )


_LOCKED = _locked(
    _variants.c.id == any_(bindparam("variants", type_=postgresql.ARRAY(_variants.c.id.type)))
)
# PostgreSQL: every line of a reservation in one statement, each held only where
# enough is left (the same condition as _RESERVE_LINE). A row changed meanwhile is
# checked again at its newest version, as for any UPDATE.
_RESERVE_LINES = (
    update(_variants)
    .where(
        _variants.c.id == _LOCKED.c.id,
        _variants.c.id == _WANTED.c.variant_id,
        _variants.c.on_hand - _variants.c.reserved >= _WANTED.c.quantity,
    )
    .values(
        reserved=_variants.c.reserved + _WANTED.c.quantity,
        updated_at=_bind("at", _variants.c.updated_at),
    )
    .returning(_variants.c.id, _variants.c.on_hand, _variants.c.reserved, _variants.c.price_amount)
)


# PostgreSQL: every line of a reservation moved in one statement, the variants locked
# in id order as for holding them.
_MOVE_LINES = _moving(_LOCKED, _WANTED).returning(
    _variants.c.id, _variants.c.on_hand, _variants.c.reserved
)

# PostgreSQL: several products' totals moved in one statement, the products locked in
# id order (as every writer takes them) before any is changed.
_PRODUCT_IDS = bindparam("products", type_=postgresql.ARRAY(_products.c.id.type))
_PRODUCT_DELTAS = (
    func.unnest(_PRODUCT_IDS, bindparam("bys", type_=postgresql.ARRAY(_products.c.available.type)))
    .table_valued(
        column("product_id", _products.c.id.type), column("by", _products.c.available.type)
    )
    .render_derived(name="deltas")
)
_LOCKED_PRODUCTS = (
    select(_products.c.id)
    .where(_products.c.id == any_(_PRODUCT_IDS))
    .order_by(_products.c.id)
    .with_for_update()
    .subquery("locked_products")
)
_MOVE_PRODUCTS = (
    update(_products)
    .where(_products.c.id == _LOCKED_PRODUCTS.c.id, _products.c.id == _PRODUCT_DELTAS.c.product_id)
    .values(available=_products.c.available + _PRODUCT_DELTAS.c.by)
)


_CLAIMING = _CLAIM["postgresql"].cte("claimed")
_HOLDING = _RESERVE_LINES.where(exists(select(_CLAIMING.c.id))).cte("holding")
# PostgreSQL: the reference claimed and, only if this request got it, every line held
# where enough is left (``_claim`` then ``_hold_lines``) in one statement. No row: the
# claim met an earlier request's; a row without a variant: claimed, nothing held.
_CLAIM_AND_HOLD = select(
    _CLAIMING.c.id.label("claimed"),
    _HOLDING.c.id,
    _HOLDING.c.on_hand,
    _HOLDING.c.reserved,
    _HOLDING.c.price_amount,
).select_from(_CLAIMING.outerjoin(_HOLDING, true()))


def _ledger_of(moved: Any, on_hand_delta: Any, reserved_delta: Any, *, reservation: str) -> Any:
    """PostgreSQL: ``INSERT`` of a ledger row for each row of ``moved`` (a CTE returning a
    variant's id, on_hand and reserved after its move): the deltas given, what was after,
    and the kind, reason, reservation (the parameter named ``reservation``) and time."""
    return insert(_movements).from_select(
        list(_MOVEMENT_KEYS),
        select(
            func.gen_random_uuid(),
            moved.c.id,
            _bind("kind", _movements.c.kind),
            on_hand_delta,
            reserved_delta,
            moved.c.on_hand,
            moved.c.reserved,
            _bind("reason", _movements.c.reason),
            null(),
            _bind(reservation, _movements.c.reservation_id),
            _bind("at", _movements.c.created_at),
        ),
    )


_WANTED_PRICED = (
    func.unnest(
        bindparam("variants", type_=postgresql.ARRAY(_variants.c.id.type)),
        bindparam("quantities", type_=postgresql.ARRAY(_variants.c.reserved.type)),
        bindparam("prices", type_=postgresql.ARRAY(_variants.c.price_amount.type)),
    )
    .table_valued(
        column("variant_id", _variants.c.id.type),
        column("quantity", _variants.c.reserved.type),
        column("price", _variants.c.price_amount.type),
    )
    .render_derived(name="wanted")
)
_LOCKED_ROWS = (
    select(_variants.c.id, _variants.c.on_hand, _variants.c.reserved, _variants.c.price_amount)
    .where(
        _variants.c.id == any_(bindparam("variants", type_=postgresql.ARRAY(_variants.c.id.type)))
    )
    .order_by(_variants.c.id)
    .with_for_update()
    .cte("locked")
)
# Every line can be held, at the price it was read at, and none runs out by it.
_ALL_FIT = (
    select(
        and_(
            func.count() == _bind("line_count", _variants.c.reserved),
            func.bool_and(
                and_(
                    _LOCKED_ROWS.c.on_hand - _LOCKED_ROWS.c.reserved - _WANTED_PRICED.c.quantity
                    > 0,
                    _LOCKED_ROWS.c.price_amount == _WANTED_PRICED.c.price,
                )
            ),
        ).label("fit")
    )
    .select_from(
        _LOCKED_ROWS.join(_WANTED_PRICED, _LOCKED_ROWS.c.id == _WANTED_PRICED.c.variant_id)
    )
    .cte("fit")
)
_CLAIMED_IF_FIT = (
    postgresql.insert(_reservations)
    .from_select(
        ["id", "reference", "status", "expires_at", "created_at", "updated_at"],
        select(
            _bind("id", _reservations.c.id),
            _bind("reference", _reservations.c.reference),
            _bind("status", _reservations.c.status),
            _bind("expires_at", _reservations.c.expires_at),
            _bind("created_at", _reservations.c.created_at),
            _bind("updated_at", _reservations.c.updated_at),
        ).where(select(_ALL_FIT.c.fit).scalar_subquery()),
    )
    .on_conflict_do_nothing(index_elements=[_reservations.c.reference])
    .returning(_reservations.c.id)
    .cte("claimed")
)
_HELD_AT_ONCE = (
    update(_variants)
    .where(
        _variants.c.id == _WANTED_PRICED.c.variant_id,
        exists(select(_CLAIMED_IF_FIT.c.id)),
    )
    .values(
        reserved=_variants.c.reserved + _WANTED_PRICED.c.quantity,
        updated_at=_bind("at", _variants.c.updated_at),
    )
    .returning(
        _variants.c.id,
        _variants.c.on_hand,
        _variants.c.reserved,
        _WANTED_PRICED.c.quantity,
        _WANTED_PRICED.c.price,
    )
    .cte("held")
)
_LINES_OF_HELD = (
    insert(_items)
    .from_select(
        list(_ITEM_KEYS),
        select(
            _bind("id", _items.c.reservation_id),
            _HELD_AT_ONCE.c.id,
            _HELD_AT_ONCE.c.quantity,
            _HELD_AT_ONCE.c.price,
        ),
    )
    .cte("lines")
)
_LEDGER_OF_HELD = _ledger_of(
    _HELD_AT_ONCE,
    literal(0, type_=_movements.c.on_hand_delta.type),
    _HELD_AT_ONCE.c.quantity,
    reservation="id",
)
_HELD_ANY = exists(select(_HELD_AT_ONCE.c.id))
# PostgreSQL: a whole reservation in one statement, when every line fits with stock to
# spare: the variants locked in id order, the reference claimed only if all fit, each
# line held, the reservation's lines and ledger rows written from what was held and
# the products' totals moved. Nothing at all is written otherwise (a line short or
# running out, a price changed since it was read, the reference answered before): the
# caller then takes the general way, which tells those apart. The ledger's rows are
# the statement's own.
_RESERVE_AT_ONCE = {
    products: _LEDGER_OF_HELD.add_cte(
        _LINES_OF_HELD,
        (_MOVE_PRODUCT if products == 1 else _MOVE_PRODUCTS).where(_HELD_ANY).cte("totals"),
    )
    for products in (1, 2)
}


async def _reserve_at_once(
    tx: Transaction,
    reservation: HeldReservation,
    lines: Sequence[tuple[StockItem, int, int]],
    event: StockReserved,
    now: datetime,
) -> bool:
    """:data:`_RESERVE_AT_ONCE` with ``event``, committed on its own; whether it held."""
    deltas: dict[uuid.UUID, int] = {}
    for item, quantity, _ in lines:
        deltas[item.product_id] = deltas.get(item.product_id, 0) - quantity
    products = sorted(deltas)
    params: dict[str, Any] = {
        **_claim_values(reservation, now),
        "variants": [item.id for item, _, _ in lines],
        "quantities": [quantity for _, quantity, _ in lines],
        "prices": [price for _, _, price in lines],
        "line_count": len(lines),
        "at": now,
        "kind": "reservation",
        "reason": f"reserved for {reservation.reference}",
    }
    if len(products) == 1:
        params.update({"product": products[0], "by": deltas[products[0]]})
    else:
        params.update({"products": products, "bys": [deltas[p] for p in products]})
    tx.publish(event)
    statement = _RESERVE_AT_ONCE[min(len(products), 2)]
    return bool(await tx.commit_with(statement, params))


async def _claim_and_hold(
    sql: Sql, reservation: HeldReservation, wanted: dict[uuid.UUID, int], now: datetime
) -> tuple[HeldReservation | None, dict[uuid.UUID, Any]]:
    """``_claim``, and when this request got the reference, ``_hold_lines``: the earlier
    request's reservation (nothing held) or None and the rows held."""
    if not sql.postgres:
        winner = await _claim(sql, reservation, now)
        return winner, {} if winner is not None else await _hold_lines(sql, wanted, now)
    ids = sorted(wanted)
    rows = await sql.fetch(
        _CLAIM_AND_HOLD,
        {
            **_claim_values(reservation, now),
            "variants": ids,
            "quantities": [wanted[v] for v in ids],
            "at": now,
        },
    )
    if not rows:
        return await _winner(sql, reservation.reference), {}
    return None, {row.id: row for row in rows if row.id is not None}


async def _hold_lines(
    sql: Sql, wanted: dict[uuid.UUID, int], now: datetime
) -> dict[uuid.UUID, Any]:
    """SQLite: hold each variant's wanted quantity where enough is left; the rows held,
    by id (with the stock after and the price). Variants in id order. (PostgreSQL holds
    them all with the claim, ``_claim_and_hold``.)"""
    held = {}
    for variant_id in sorted(wanted):
        row = await sql.fetch_one(
            _RESERVE_LINE, {"variant": variant_id, "quantity": wanted[variant_id], "at": now}
        )
        if row is not None:
            held[variant_id] = row
    return held


class HeldReferences(Recent[str, uuid.UUID]):
    """The reservations this process made, their ids by reference (PostgreSQL), so that
    the sale of one is a single statement that needs no read of its id (:func:`commit`).
    A guess, never trusted alone: that statement holds only for this id, still active.
    """


async def reserve(
    tx: Transaction,
    reference: str,
    requests: Sequence[LineRequest],
    ttl: timedelta,
    *,
    held_here: HeldReferences | None = None,
) -> ReservationOutcome:
    """Hold stock for ``reference``, all lines or none; asking again returns the same answer.

    Commits what it wrote (the stock held, or the refusal remembered) with its events;
    ``held_here`` is told of a reservation made.
    """
    sql = tx.sql
    # PostgreSQL, with the reservations made here kept: the lines are read before the
    # transaction, and when every one fits with stock to spare the whole reservation
    # is one statement (``_reserve_at_once``).
    kept = held_here if sql.postgres else None
    wanted: dict[uuid.UUID, int] = {}
    items: dict[uuid.UUID, StockItem] = {}
    read: dict[uuid.UUID, Any] = {}
    currencies: set[str] = set()
    problems: list[RejectedLine] = []
    names: dict[uuid.UUID, tuple[str, uuid.UUID | None]] = {}
    for request, row in await _resolve(await tx.sql_alone() if kept is not None else sql, requests):
        if row is None:
            problems.append(_unknown(request))
            continue
        items[row.id] = StockItem(id=row.id, product_id=row.product_id, sku=row.sku)
        names[row.id] = (line_name(row.name, row.title), row.category_id)
        wanted[row.id] = wanted.get(row.id, 0) + request.quantity
        read[row.id] = row
        currencies.add(row.currency)
    if problems or len(currencies) > 1:
        reason = "unknown_product" if problems else "mixed_currencies"
        return await _reject(tx, reference, reason, problems)
    now = _now()
    reservation = HeldReservation(
        id=uuid.uuid4(),
        reference=reference,
        status=ReservationStatus.ACTIVE,
        expires_at=now + ttl,
    )
    if kept is not None and all(read[v].on_hand - read[v].reserved > wanted[v] for v in wanted):
        lines = [(items[v], wanted[v], read[v].price_amount) for v in sorted(wanted)]
        currency = next(iter(currencies))
        event = _reserved_event(reservation, currency, lines)
        if await _reserve_at_once(tx, reservation, lines, event, now):
            kept.put(reference, reservation.id)
            return ReservationOutcome(
                reservation=reservation, lines=lines, currency=currency, names=names
            )
    # A retry of a reference already answered gets that answer, and nothing is held.
    winner, held = await _claim_and_hold(sql, reservation, wanted, now)
    if winner is not None:
        return await _outcome_of(sql, winner)
    short: list[RejectedLine] = []
    moved: list[_Moved] = []
    prices: dict[uuid.UUID, int] = {}
    for variant_id in sorted(wanted):
        quantity = wanted[variant_id]
        row = held.get(variant_id)
        if row is None:
            available = await sql.fetch_value(_AVAILABLE, {"variant": variant_id})
            short.append(
                RejectedLine(
                    product_id=items[variant_id].product_id,
                    variant_id=variant_id,
                    requested=quantity,
                    available=available or 0,
                )
            )
            continue
        prices[variant_id] = row.price_amount
        moved.append(
            _Moved(
                item=items[variant_id],
                on_hand_delta=0,
                reserved_delta=quantity,
                on_hand=row.on_hand,
                reserved=row.reserved,
            )
        )
    if short:
        # Undo the lines that did succeed: the caller's transaction is rolled
        # back, and the rejection is recorded in a fresh one.
        await tx.rollback()
        return await _reject(tx, reference, "insufficient_stock", short)
    lines = [(items[v], wanted[v], prices[v]) for v in sorted(wanted)]
    currency = currencies.pop()
    reserved = _reserved_event(reservation, currency, lines)
    await _settle(
        tx,
        sql,
        moved,
        kind="reservation",
        reason=f"reserved for {reference}",
        reservation_id=reservation.id,
        now=now,
        items=[
            {
                "reservation_id": reservation.id,
                "variant_id": variant_id,
                "quantity": wanted[variant_id],
                "unit_price_amount": prices[variant_id],
            }
            for variant_id in sorted(wanted)
        ],
        then=reserved,
        commit=True,
    )
    if kept is not None:
        kept.put(reference, reservation.id)
    return ReservationOutcome(reservation=reservation, lines=lines, currency=currency, names=names)


def _reserved_event(
    reservation: HeldReservation, currency: str, lines: Sequence[tuple[StockItem, int, int]]
) -> StockReserved:
    return StockReserved(
        reservation_id=reservation.id,
        reference=reservation.reference,
        currency=currency,
        lines=[
            ReservedLine(
                product_id=item.product_id,
                variant_id=item.id,
                sku=item.sku,
                quantity=quantity,
                unit_price_amount=price,
            )
            for item, quantity, price in lines
        ],
        expires_at=reservation.expires_at,
    )


async def _reject(
    tx: Transaction, reference: str, reason: str, problems: list[RejectedLine]
) -> ReservationOutcome:
    now = _now()
    sql = tx.sql
    # A rejection is remembered too, so a retried request gets the same answer.
    winner = await _claim(
        sql,
        HeldReservation(
            id=uuid.uuid4(),
            reference=reference,
            status=ReservationStatus.REJECTED,
            expires_at=now,
        ),
        now,
    )
    if winner is not None:
        return await _outcome_of(sql, winner)
    event = StockRejected(reference=reference, reason=reason, lines=problems)
    tx.publish(event)
    await tx.commit()
    return ReservationOutcome(reservation=None, lines=[], currency=None, rejected=event)


_HELD_COLUMNS = (
    _reservations.c.id,
    _reservations.c.reference,
    _reservations.c.status,
    _reservations.c.expires_at,
)


_HELD = select(*_HELD_COLUMNS).where(
    _reservations.c.reference == _bind("ref", _reservations.c.reference)
)
_OUTCOME_LINES = (
    select(
        _items.c.variant_id,
        _items.c.quantity,
        _items.c.unit_price_amount,
        _variants.c.product_id,
        _variants.c.sku,
        _variants.c.title,
        _products.c.currency,
        _products.c.name,
        _products.c.category_id,
    )
    .join_from(_items, _variants, _variants.c.id == _items.c.variant_id)
    .join(_products, _products.c.id == _variants.c.product_id)
    .where(_items.c.reservation_id == _bind("reservation", _items.c.reservation_id))
    .order_by(_items.c.variant_id)
)


def _claim_values(reservation: HeldReservation, now: datetime) -> dict[str, Any]:
    return {
        "id": reservation.id,
        "reference": reservation.reference,
        "status": reservation.status,
        "expires_at": reservation.expires_at,
        "created_at": now,
        "updated_at": now,
    }


async def _claim(sql: Sql, reservation: HeldReservation, now: datetime) -> HeldReservation | None:
    """Insert the row that answers for a reference; None when this request got it.

    A retry can overlap the first attempt: on PostgreSQL the second insert waits for
    the first transaction and then meets the unique reference. That request then
    gives the first one's answer instead of failing.
    """
    inserted = await sql.fetch_one(
        _CLAIM["postgresql" if sql.postgres else "sqlite"], _claim_values(reservation, now)
    )
    if inserted is not None:
        return None
    return await _winner(sql, reservation.reference)


async def _winner(sql: Sql, reference: str) -> HeldReservation:
    """The reservation an earlier request for ``reference`` made (its claim met it)."""
    row = await sql.fetch_one(_HELD, {"ref": reference})
    assert row is not None  # the insert met it
    return HeldReservation(
        id=row.id, reference=row.reference, status=row.status, expires_at=row.expires_at
    )


async def _outcome_of(sql: Sql, reservation: HeldReservation) -> ReservationOutcome:
    if reservation.status == ReservationStatus.REJECTED:
        return ReservationOutcome(
            reservation=None,
            lines=[],
            currency=None,
            rejected=StockRejected(
                reference=reservation.reference, reason="insufficient_stock", lines=[]
            ),
        )
    rows = await sql.fetch(_OUTCOME_LINES, {"reservation": reservation.id})
    return ReservationOutcome(
        reservation=reservation,
        lines=[
            (
                StockItem(id=row.variant_id, product_id=row.product_id, sku=row.sku),
                row.quantity,
                row.unit_price_amount,
            )
            for row in rows
        ],
        currency=rows[0].currency if rows else None,
        names={row.variant_id: (line_name(row.name, row.title), row.category_id) for row in rows},
    )


async def _close(
    sql: Sql, reference: str, *, was: str, becomes: str, now: datetime
) -> uuid.UUID | None:
    """Move the reservation from status ``was`` to ``becomes``; its id, or None if it
    was not in ``was``. The UPDATE's row lock orders it against any other change of
    the same reservation, and a change that waited sees the status the other set."""
    return cast(
        uuid.UUID | None,
        await sql.fetch_value(
            _CLOSE, {"ref": reference, "was": was, "becomes": becomes, "at": now}
        ),
    )


def _closing_and_moving(close: Any) -> tuple[Any, Any]:
    """The CTEs ``closing`` (``close``, a reservation's UPDATE ... RETURNING id) and
    ``moved``: each line of the reservation closed, its variant moved by the signs
    (``_moving``), returning the variant as it now is and the line's quantity."""
    closing = close.cte("closing")
    held = (
        select(_items.c.variant_id, _items.c.quantity)
        .join_from(_items, closing, _items.c.reservation_id == closing.c.id)
        .cte("held")
    )
    moved = (
        _moving(_locked(_variants.c.id.in_(select(held.c.variant_id))), held)
        .returning(
            _variants.c.id,
            _variants.c.product_id,
            _variants.c.sku,
            _variants.c.on_hand,
            _variants.c.reserved,
            held.c.quantity,
        )
        .cte("moved")
    )
    return closing, moved


_CLOSING, _MOVED = _closing_and_moving(_CLOSE)
# PostgreSQL: the reservation closed and each of its lines' variants moved by the signs,
# in one statement. The lines were committed with the reservation, so the statement's
# snapshot holds them; a reservation not in the status it must leave moves nothing.
_CLOSE_AND_MOVE = select(
    _CLOSING.c.id.label("reservation_id"),
    _MOVED.c.id.label("variant_id"),
    _MOVED.c.product_id,
    _MOVED.c.sku,
    _MOVED.c.on_hand,
    _MOVED.c.reserved,
    _MOVED.c.quantity,
).select_from(_CLOSING.outerjoin(_MOVED, true()))


_CLOSING_KNOWN, _MOVED_KNOWN = _closing_and_moving(
    _CLOSE.where(_reservations.c.id == _bind("reservation", _reservations.c.id))
)
# PostgreSQL: a reservation whose id is known closed, its lines' variants moved by the
# signs and each move written to the ledger, in one statement whose rows are the
# ledger's (none when the reservation was not in ``was``, so nothing moved). The moves
# leave the products' totals as they are (a sale), so nothing else is written.
_SELL_KNOWN = _ledger_of(
    _MOVED_KNOWN,
    _MOVED_KNOWN.c.quantity * _bind("on_hand_sign", _movements.c.on_hand_delta),
    _MOVED_KNOWN.c.quantity * _bind("reserved_sign", _movements.c.reserved_delta),
    reservation="reservation",
)


async def _close_and_move(
    sql: Sql,
    reference: str,
    *,
    was: str,
    becomes: str,
    on_hand_sign: int,
    reserved_sign: int,
    now: datetime,
) -> tuple[uuid.UUID | None, list[_Moved]]:
    """``_close``, then each line's variant moved by its quantity times the signs (as
    ``_move_held``): the reservation's id and the moves, or None and none when it was
    not in ``was``. One round trip on PostgreSQL."""
    if not sql.postgres:
        reservation_id = await _close(sql, reference, was=was, becomes=becomes, now=now)
        if reservation_id is None:
            return None, []
        moved = await _move_held(
            sql, reservation_id, on_hand_sign=on_hand_sign, reserved_sign=reserved_sign, now=now
        )
        return reservation_id, moved
    rows = await sql.fetch(
        _CLOSE_AND_MOVE,
        {
            "ref": reference,
            "was": was,
            "becomes": becomes,
            "at": now,
            "on_hand_sign": on_hand_sign,
            "reserved_sign": reserved_sign,
        },
    )
    if not rows:
        return None, []
    moved = [
        _Moved(
            item=StockItem(id=row.variant_id, product_id=row.product_id, sku=row.sku),
            on_hand_delta=on_hand_sign * row.quantity,
            reserved_delta=reserved_sign * row.quantity,
            on_hand=row.on_hand,
            reserved=row.reserved,
        )
        for row in sorted(rows, key=lambda row: row.variant_id or uuid.UUID(int=0))
        if row.variant_id is not None
    ]
    return rows[0].reservation_id, moved


async def _status_of(sql: Sql, reference: str) -> str:
    status = await sql.fetch_value(_STATUS, {"ref": reference})
    if status is None:
        raise errors.ReservationNotFound()
    return cast(str, status)


async def release(tx: Transaction, reference: str, *, reason: str = "released") -> str:
    """Give held stock back. Releasing twice is harmless; a sale cannot be released.

    Answers the reservation's status afterwards.
    """
    sql = tx.sql
    now = _now()
    becomes = ReservationStatus.EXPIRED if reason == "expired" else ReservationStatus.RELEASED
    reservation_id, moved = await _close_and_move(
        sql,
        reference,
        was=ReservationStatus.ACTIVE,
        becomes=becomes,
        on_hand_sign=0,
        reserved_sign=-1,
        now=now,
    )
    if reservation_id is None:
        status = await _status_of(sql, reference)
        if status in (ReservationStatus.COMMITTED, ReservationStatus.RETURNED):
            raise errors.ReservationClosed()
        return status
    await _settle(
        tx,
        sql,
        moved,
        kind="release",
        reason=f"{reason} ({reference})",
        reservation_id=reservation_id,
        now=now,
    )
    tx.publish(StockReleased(reservation_id=reservation_id, reference=reference, reason=reason))
    return becomes


async def _held_items(sql: Sql, reservation_id: uuid.UUID) -> list[Any]:
    """The reservation's lines in variant id order: the order every writer locks them in."""
    return await sql.fetch(_HELD_ITEMS, {"reservation": reservation_id})


async def _move_held(
    sql: Sql,
    reservation_id: uuid.UUID,
    *,
    on_hand_sign: int,
    reserved_sign: int,
    now: datetime,
) -> list[_Moved]:
    """Move each line's variant by its quantity times the signs; the stock after each."""
    moved = []
    held = await _held_items(sql, reservation_id)
    if sql.postgres and len(held) > 1:
        # One round trip for all lines; a reservation holds each variant once.
        after_of = {
            row.id: row
            for row in await sql.fetch(
                _MOVE_LINES,
                {
                    "variants": [line.variant_id for line in held],
                    "quantities": [line.quantity for line in held],
                    "on_hand_sign": on_hand_sign,
                    "reserved_sign": reserved_sign,
                    "at": now,
                },
            )
        }
        return [
            _Moved(
                item=StockItem(id=line.variant_id, product_id=line.product_id, sku=line.sku),
                on_hand_delta=on_hand_sign * line.quantity,
                reserved_delta=reserved_sign * line.quantity,
                on_hand=after_of[line.variant_id].on_hand,
                reserved=after_of[line.variant_id].reserved,
            )
            for line in held
        ]
    for line in held:
        on_hand_delta = on_hand_sign * line.quantity
        reserved_delta = reserved_sign * line.quantity
        after = await sql.fetch_one(
            _MOVE_VARIANT,
            {
                "variant": line.variant_id,
                "on_hand_by": on_hand_delta,
                "reserved_by": reserved_delta,
                "at": now,
            },
        )
        assert after is not None  # the line's variant exists (a foreign key)
        moved.append(
            _Moved(
                item=StockItem(id=line.variant_id, product_id=line.product_id, sku=line.sku),
                on_hand_delta=on_hand_delta,
                reserved_delta=reserved_delta,
                on_hand=after.on_hand,
                reserved=after.reserved,
            )
        )
    return moved


async def _return_items(
    tx: Transaction,
    sql: Sql,
    reservation_id: uuid.UUID,
    *,
    kind: str,
    reason: str,
    sold: bool,
    now: datetime,
) -> None:
    """Give the reservation's units back: held ones to available stock, or, when they
    were ``sold``, back onto the shelf."""
    moved = await _move_held(
        sql,
        reservation_id,
        on_hand_sign=1 if sold else 0,
        reserved_sign=0 if sold else -1,
        now=now,
    )
    await _settle(tx, sql, moved, kind=kind, reason=reason, reservation_id=reservation_id, now=now)


async def commit(
    tx: Transaction, reference: str, *, held_here: HeldReferences | None = None
) -> str:
    """The sale is final: reserved units leave on-hand stock. Committing twice is harmless.

    Available stock does not change, so neither do the products' totals (nor does any
    ``stock.changed``). Commits the transaction when it made the sale.
    """
    sql = tx.sql
    now = _now()
    known = held_here.pop(reference) if held_here is not None and sql.postgres else None
    if known is not None:
        # Reserved by this process: closed, moved, written to the ledger and announced
        # in one statement, if it is still active under that id.
        tx.publish(StockCommitted(reservation_id=known, reference=reference))
        sold = await tx.commit_with(
            _SELL_KNOWN,
            {
                "ref": reference,
                "reservation": known,
                "was": ReservationStatus.ACTIVE,
                "becomes": ReservationStatus.COMMITTED,
                "at": now,
                "on_hand_sign": -1,
                "reserved_sign": -1,
                "kind": "sale",
                "reason": f"sold ({reference})",
            },
        )
        if sold:
            return ReservationStatus.COMMITTED
    reservation_id, moved = await _close_and_move(
        sql,
        reference,
        was=ReservationStatus.ACTIVE,
        becomes=ReservationStatus.COMMITTED,
        on_hand_sign=-1,
        reserved_sign=-1,
        now=now,
    )
    if reservation_id is None:
        status = await _status_of(sql, reference)
        if status != ReservationStatus.COMMITTED:
            raise errors.ReservationClosed()
        return status
    await _settle(
        tx,
        sql,
        moved,
        kind="sale",
        reason=f"sold ({reference})",
        reservation_id=reservation_id,
        now=now,
        then=StockCommitted(reservation_id=reservation_id, reference=reference),
        commit=True,
    )
    return ReservationStatus.COMMITTED


async def quote(
    sql: Sql, requests: Sequence[LineRequest]
) -> tuple[list[QuotedLine], list[RejectedLine]]:
    """Today's price of each line, without holding anything: what an order is priced at."""
    lines: list[QuotedLine] = []
    problems: list[RejectedLine] = []
    for request, row in await _resolve(sql, requests):
        if row is None:
            problems.append(_unknown(request))
            continue
        lines.append(
            QuotedLine(
                variant_id=row.id,
                product_id=row.product_id,
                sku=row.sku,
                name=line_name(row.name, row.title),
                category_id=row.category_id,
                quantity=request.quantity,
                unit_price_amount=row.price_amount,
                currency=row.currency,
                available=row.on_hand - row.reserved,
            )
        )
    return lines, problems


async def call_off(tx: Transaction, reference: str, *, reason: str) -> str:
    """Undo whatever was done for ``reference``, whatever state it is in; safe to repeat.

    Held stock is released; sold stock goes back on the shelf; and a reference
    never seen is remembered as released, so a reservation request for it that
    arrives late (a retry that was still in flight) holds nothing.
    Answers the reservation's status afterwards.
    """
    sql = tx.sql
    now = _now()
    status = await sql.fetch_value(_STATUS_LOCKED, {"ref": reference})
    if status is None:
        tombstone = HeldReservation(
            id=uuid.uuid4(),
            reference=reference,
            status=ReservationStatus.RELEASED,
            expires_at=now,
        )
        if await _claim(sql, tombstone, now) is None:
            return ReservationStatus.RELEASED
        # A reservation landed meanwhile: undo it like any other.
        return await call_off(tx, reference, reason=reason)
    if status == ReservationStatus.ACTIVE:
        return await release(tx, reference, reason=reason)
    if status == ReservationStatus.COMMITTED:
        reservation_id = await _close(
            sql,
            reference,
            was=ReservationStatus.COMMITTED,
            becomes=ReservationStatus.RETURNED,
            now=now,
        )
        assert reservation_id is not None  # the row is locked and was committed
        await _return_items(
            tx,
            sql,
            reservation_id,
            kind="return",
            reason=f"{reason} ({reference})",
            sold=True,
            now=now,
        )
        return ReservationStatus.RETURNED
    return cast(str, status)


async def due_for_expiry(session: AsyncSession, now: datetime, limit: int = 100) -> list[str]:
    """References of active reservations past their expiry."""
    return list(
        (
            await session.execute(
                select(Reservation.reference)
                .where(STILL_HELD, Reservation.expires_at <= now)
                .order_by(Reservation.expires_at)
                .limit(limit)
            )
        ).scalars()
    )
