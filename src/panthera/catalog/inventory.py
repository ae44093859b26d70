"""Stock: adjustments, reservations (made, released, committed, expired) and the ledger.

Reservations never oversell: each line is one conditional UPDATE
(``reserved = reserved + q WHERE on_hand - reserved >= q``), which PostgreSQL
serialises on the row and SQLite on its write lock; variants are taken in id
order so concurrent multi-line reservations cannot deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
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
from panthera.catalog.models import Product, Reservation, ReservationItem, StockMovement, Variant
from panthera.kernel.db import UnitOfWork


class ReservationStatus:
    ACTIVE = "active"
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


@dataclass(frozen=True)
class ReservationOutcome:
    reservation: Reservation | None
    lines: list[tuple[Variant, int, int]]
    currency: str | None
    rejected: StockRejected | None = None


def _now() -> datetime:
    return datetime.now(UTC)


async def _refresh_product_totals(session: AsyncSession, product_id: uuid.UUID) -> None:
    """Keep the product's list price and available total equal to its variants'.

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


async def _reload(session: AsyncSession, variant_id: uuid.UUID) -> Variant:
    variant = (
        await session.execute(
            select(Variant)
            .where(Variant.id == variant_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return variant


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
    variant = await _reload(session, variant_id)
    _record(
        uow,
        variant,
        kind="adjustment",
        on_hand_delta=delta,
        reserved_delta=0,
        reason=reason,
        actor_id=actor_id,
    )
    await _refresh_product_totals(session, variant.product_id)
    return variant


async def _resolve_lines(
    session: AsyncSession, requests: Sequence[LineRequest]
) -> tuple[dict[uuid.UUID, int], dict[uuid.UUID, Variant], list[RejectedLine]]:
    """Variant ids and quantities of the lines; a one-variant product stands for its variant."""
    wanted: dict[uuid.UUID, int] = {}
    variants: dict[uuid.UUID, Variant] = {}
    problems: list[RejectedLine] = []
    for line in requests:
        variant: Variant | None = None
        if line.variant_id is not None:
            variant = await session.get(Variant, line.variant_id)
        elif line.product_id is not None:
            found = list(
                (
                    await session.execute(
                        select(Variant).where(Variant.product_id == line.product_id)
                    )
                ).scalars()
            )
            variant = found[0] if len(found) == 1 else None
        product = await session.get(Product, variant.product_id) if variant else None
        if variant is None or product is None or product.status != "active":
            problems.append(
                RejectedLine(
                    product_id=line.product_id,
                    variant_id=line.variant_id,
                    requested=line.quantity,
                    available=0,
                )
            )
            continue
        variants[variant.id] = variant
        wanted[variant.id] = wanted.get(variant.id, 0) + line.quantity
    return wanted, variants, problems


async def reserve(
    uow: UnitOfWork, reference: str, requests: Sequence[LineRequest], ttl: timedelta
) -> ReservationOutcome:
    """Hold stock for ``reference``, all lines or none; asking again returns the same answer."""
    session = uow.session
    existing = (
        await session.execute(select(Reservation).where(Reservation.reference == reference))
    ).scalar_one_or_none()
    if existing is not None:
        return await _outcome_of(session, existing)
    wanted, variants, problems = await _resolve_lines(session, requests)
    currencies = {
        (await session.get(Product, variant.product_id)).currency  # type: ignore[union-attr]
        for variant in variants.values()
    }
    if problems or len(currencies) > 1:
        reason = "unknown_product" if problems else "mixed_currencies"
        return await _reject(uow, reference, reason, problems)
    now = _now()
    reservation = Reservation(
        id=uuid.uuid4(),
        reference=reference,
        status=ReservationStatus.ACTIVE,
        expires_at=now + ttl,
        created_at=now,
        updated_at=now,
    )
    winner = await _claim(session, reservation)
    if winner is not None:
        return await _outcome_of(session, winner)
    short: list[RejectedLine] = []
    for variant_id in sorted(wanted):
        quantity = wanted[variant_id]
        result = await session.execute(
            update(Variant)
            .where(Variant.id == variant_id, Variant.on_hand - Variant.reserved >= quantity)
            .values(reserved=Variant.reserved + quantity, updated_at=now)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            current = await _reload(session, variant_id)
            short.append(
                RejectedLine(
                    product_id=current.product_id,
                    variant_id=variant_id,
                    requested=quantity,
                    available=current.on_hand - current.reserved,
                )
            )
    if short:
        # Undo the lines that did succeed: the caller's transaction is rolled
        # back, and the rejection is recorded in a fresh one.
        await uow.rollback()
        return await _reject(uow, reference, "insufficient_stock", short)
    lines = []
    for variant_id in sorted(wanted):
        variant = await _reload(session, variant_id)
        session.add(
            ReservationItem(
                reservation_id=reservation.id,
                variant_id=variant_id,
                quantity=wanted[variant_id],
                unit_price_amount=variant.price_amount,
            )
        )
        _record(
            uow,
            variant,
            kind="reservation",
            on_hand_delta=0,
            reserved_delta=wanted[variant_id],
            reason=f"reserved for {reference}",
            reservation_id=reservation.id,
        )
        lines.append((variant, wanted[variant_id], variant.price_amount))
    # Products in id order, after the variants: one lock order for every writer.
    for product_id in sorted({variant.product_id for variant, _, _ in lines}):
        await _refresh_product_totals(session, product_id)
    currency = currencies.pop()
    uow.publish(
        StockReserved(
            reservation_id=reservation.id,
            reference=reference,
            currency=currency,
            lines=[
                ReservedLine(
                    product_id=variant.product_id,
                    variant_id=variant.id,
                    sku=variant.sku,
                    quantity=quantity,
                    unit_price_amount=price,
                )
                for variant, quantity, price in lines
            ],
            expires_at=reservation.expires_at,
        )
    )
    return ReservationOutcome(reservation=reservation, lines=lines, currency=currency)


async def _reject(
    uow: UnitOfWork, reference: str, reason: str, problems: list[RejectedLine]
) -> ReservationOutcome:
    now = _now()
    # A rejection is remembered too, so a retried request gets the same answer.
    winner = await _claim(
        uow.session,
        Reservation(
            id=uuid.uuid4(),
            reference=reference,
            status=ReservationStatus.REJECTED,
            expires_at=now,
            created_at=now,
            updated_at=now,
        ),
    )
    if winner is not None:
        return await _outcome_of(uow.session, winner)
    event = StockRejected(reference=reference, reason=reason, lines=problems)
    uow.publish(event)
    return ReservationOutcome(reservation=None, lines=[], currency=None, rejected=event)


async def _claim(session: AsyncSession, reservation: Reservation) -> Reservation | None:
    """Insert the row that answers for a reference; None when this request got it.

    A retry can overlap the first attempt: on PostgreSQL the second insert waits for
    the first transaction and then hits the unique reference. That request then
    gives the first one's answer instead of failing.
    """
    try:
        async with session.begin_nested():
            session.add(reservation)
    except IntegrityError:
        return (
            await session.execute(
                select(Reservation)
                .where(Reservation.reference == reservation.reference)
                .execution_options(populate_existing=True)
            )
        ).scalar_one()
    return None


async def _outcome_of(session: AsyncSession, reservation: Reservation) -> ReservationOutcome:
    if reservation.status == ReservationStatus.REJECTED:
        return ReservationOutcome(
            reservation=None,
            lines=[],
            currency=None,
            rejected=StockRejected(
                reference=reservation.reference, reason="insufficient_stock", lines=[]
            ),
        )
    items = list(
        (
            await session.execute(
                select(ReservationItem, Variant)
                .join(Variant, Variant.id == ReservationItem.variant_id)
                .where(ReservationItem.reservation_id == reservation.id)
                .order_by(ReservationItem.variant_id)
            )
        ).all()
    )
    currency = None
    if items:
        product = await session.get(Product, items[0][1].product_id)
        currency = product.currency if product else None
    return ReservationOutcome(
        reservation=reservation,
        lines=[(variant, item.quantity, item.unit_price_amount) for item, variant in items],
        currency=currency,
    )


async def _locked_reservation(session: AsyncSession, reference: str) -> Reservation:
    reservation = (
        await session.execute(
            select(Reservation).where(Reservation.reference == reference).with_for_update()
        )
    ).scalar_one_or_none()
    if reservation is None:
        raise errors.ReservationNotFound()
    return reservation


async def release(uow: UnitOfWork, reference: str, *, reason: str = "released") -> Reservation:
    """Give held stock back. Releasing twice is harmless; a committed sale cannot be released."""
    session = uow.session
    reservation = await _locked_reservation(session, reference)
    if reservation.status in (
        ReservationStatus.RELEASED,
        ReservationStatus.EXPIRED,
        ReservationStatus.REJECTED,
    ):
        return reservation
    if reservation.status == ReservationStatus.COMMITTED:
        raise errors.ReservationClosed()
    await _return_items(uow, reservation, kind="release", reason=f"{reason} ({reference})")
    reservation.status = (
        ReservationStatus.EXPIRED if reason == "expired" else ReservationStatus.RELEASED
    )
    reservation.updated_at = _now()
    uow.publish(StockReleased(reservation_id=reservation.id, reference=reference, reason=reason))
    return reservation


async def _return_items(
    uow: UnitOfWork, reservation: Reservation, *, kind: str, reason: str, sold: bool = False
) -> None:
    """Give the reservation's units back: held ones to available stock, or, when they
    were ``sold``, back onto the shelf."""
    session = uow.session
    items = list(
        (
            await session.execute(
                select(ReservationItem)
                .where(ReservationItem.reservation_id == reservation.id)
                .order_by(ReservationItem.variant_id)
            )
        ).scalars()
    )
    products = set()
    for item in items:
        on_hand_delta, reserved_delta = (item.quantity, 0) if sold else (0, -item.quantity)
        await session.execute(
            update(Variant)
            .where(Variant.id == item.variant_id)
            .values(
                on_hand=Variant.on_hand + on_hand_delta,
                reserved=Variant.reserved + reserved_delta,
                updated_at=_now(),
            )
        )
        variant = await _reload(session, item.variant_id)
        _record(
            uow,
            variant,
            kind=kind,
            on_hand_delta=on_hand_delta,
            reserved_delta=reserved_delta,
            reason=reason,
            reservation_id=reservation.id,
        )
        products.add(variant.product_id)
    for product_id in sorted(products):
        await _refresh_product_totals(session, product_id)


async def commit(uow: UnitOfWork, reference: str) -> Reservation:
    """The sale is final: reserved units leave on-hand stock. Committing twice is harmless."""
    session = uow.session
    reservation = await _locked_reservation(session, reference)
    if reservation.status == ReservationStatus.COMMITTED:
        return reservation
    if reservation.status != ReservationStatus.ACTIVE:
        raise errors.ReservationClosed()
    items = list(
        (
            await session.execute(
                select(ReservationItem)
                .where(ReservationItem.reservation_id == reservation.id)
                .order_by(ReservationItem.variant_id)
            )
        ).scalars()
    )
    for item in items:
        await session.execute(
            update(Variant)
            .where(Variant.id == item.variant_id)
            .values(
                reserved=Variant.reserved - item.quantity,
                on_hand=Variant.on_hand - item.quantity,
                updated_at=_now(),
            )
        )
        variant = await _reload(session, item.variant_id)
        _record(
            uow,
            variant,
            kind="sale",
            on_hand_delta=-item.quantity,
            reserved_delta=-item.quantity,
            reason=f"sold ({reference})",
            reservation_id=reservation.id,
        )
    reservation.status = ReservationStatus.COMMITTED
    reservation.updated_at = _now()
    uow.publish(StockCommitted(reservation_id=reservation.id, reference=reference))
    return reservation


@dataclass(frozen=True)
class QuotedLine:
    variant: Variant
    product: Product
    quantity: int


async def quote(
    session: AsyncSession, requests: Sequence[LineRequest]
) -> tuple[list[QuotedLine], list[RejectedLine]]:
    """Today's price of each line, without holding anything: what an order is priced at."""
    lines: list[QuotedLine] = []
    problems: list[RejectedLine] = []
    for request in requests:
        wanted, variants, missing = await _resolve_lines(session, [request])
        problems.extend(missing)
        for variant_id, variant in variants.items():
            product = await session.get(Product, variant.product_id)
            assert product is not None
            lines.append(QuotedLine(variant=variant, product=product, quantity=wanted[variant_id]))
    return lines, problems


async def call_off(uow: UnitOfWork, reference: str, *, reason: str) -> str:
    """Undo whatever was done for ``reference``, whatever state it is in; safe to repeat.

    Held stock is released; sold stock goes back on the shelf; and a reference
    never seen is remembered as released, so a reservation request for it that
    arrives late (a retry that was still in flight) holds nothing.
    Answers the reservation's status afterwards.
    """
    session = uow.session
    reservation = (
        await session.execute(
            select(Reservation).where(Reservation.reference == reference).with_for_update()
        )
    ).scalar_one_or_none()
    now = _now()
    if reservation is None:
        tombstone = Reservation(
            id=uuid.uuid4(),
            reference=reference,
            status=ReservationStatus.RELEASED,
            expires_at=now,
            created_at=now,
            updated_at=now,
        )
        winner = await _claim(session, tombstone)
        if winner is None:
            return ReservationStatus.RELEASED
        # A reservation landed meanwhile: undo it like any other.
        return await call_off(uow, reference, reason=reason)
    if reservation.status == ReservationStatus.ACTIVE:
        await release(uow, reference, reason=reason)
    elif reservation.status == ReservationStatus.COMMITTED:
        await _restock(uow, reservation, reason=f"{reason} ({reference})")
    return reservation.status


async def _restock(uow: UnitOfWork, reservation: Reservation, *, reason: str) -> None:
    await _return_items(uow, reservation, kind="return", reason=reason, sold=True)
    reservation.status = ReservationStatus.RETURNED
    reservation.updated_at = _now()


async def due_for_expiry(session: AsyncSession, now: datetime, limit: int = 100) -> list[str]:
    """References of active reservations past their expiry."""
    return list(
        (
            await session.execute(
                select(Reservation.reference)
                .where(
                    Reservation.status == ReservationStatus.ACTIVE, Reservation.expires_at <= now
                )
                .order_by(Reservation.expires_at)
                .limit(limit)
            )
        ).scalars()
    )
