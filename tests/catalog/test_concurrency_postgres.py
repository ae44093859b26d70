"""Reservations racing on PostgreSQL: each its own transaction, none oversells, none deadlocks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from panthera.catalog import errors, inventory
from panthera.catalog.models import Product, Reservation, StockMovement, Variant
from panthera.kernel.service import ServiceRuntime
from tests.catalog.conftest import assert_books_balance, create_product
from tests.integration.conftest import RoundTrips

pytestmark = pytest.mark.integration

TTL = timedelta(minutes=15)


async def _reserve(
    runtime: ServiceRuntime,
    reference: str,
    lines: Sequence[tuple[uuid.UUID, int]],
    held_here: inventory.HeldReferences | None = None,
) -> inventory.ReservationOutcome:
    async with runtime.transaction() as uow:
        outcome = await inventory.reserve(
            uow,
            reference,
            [inventory.LineRequest(quantity=q, variant_id=v) for v, q in lines],
            TTL,
            held_here=held_here,
        )
        await uow.commit()
    return outcome


async def _race(
    runtime: ServiceRuntime,
    orders: Sequence[Sequence[tuple[uuid.UUID, int]]],
    held_here: inventory.HeldReferences | None = None,
) -> list[inventory.ReservationOutcome]:
    """Every order at once, each in its own unit of work; all must finish without error."""
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                _reserve(runtime, f"order-{n}-{uuid.uuid4().hex[:8]}", lines, held_here)
                for n, lines in enumerate(orders)
            ),
            return_exceptions=True,
        ),
        timeout=60,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    return [r for r in results if isinstance(r, inventory.ReservationOutcome)]


async def _ledger(runtime: ServiceRuntime, *where: Any) -> list[Any]:
    """The stock ledger's rows ``where`` says: kind, variant, deltas and what was after."""
    async with runtime.database.sessions() as session:
        return list(
            (
                await session.execute(
                    select(
                        StockMovement.kind,
                        StockMovement.variant_id,
                        StockMovement.on_hand_delta,
                        StockMovement.reserved_delta,
                        StockMovement.on_hand_after,
                        StockMovement.reserved_after,
                    ).where(*where)
                )
            ).all()
        )


async def _variant(runtime: ServiceRuntime, variant_id: uuid.UUID) -> Variant:
    async with runtime.database.sessions() as session:
        return (await session.execute(select(Variant).where(Variant.id == variant_id))).scalar_one()


# Reservations made the general way, and by a process that keeps the ones it made (one
# statement while every line fits with stock to spare, the general way for the last).
AT_ONCE = pytest.mark.parametrize("at_once", [False, True], ids=["general", "at-once"])


def _kept(at_once: bool) -> inventory.HeldReferences | None:
    return inventory.HeldReferences() if at_once else None


@AT_ONCE
async def test_200_buyers_for_10_units_get_exactly_10(
    pg_catalog: ServiceRuntime, at_once: bool
) -> None:
    product_id, (variant_id,) = await create_product(
        pg_catalog, name="Limited Sneaker", variants=[("120.00", 10)]
    )
    held_here = _kept(at_once)
    outcomes = await _race(pg_catalog, [[(variant_id, 1)]] * 200, held_here)
    won = [o for o in outcomes if o.reservation is not None]
    lost = [o for o in outcomes if o.rejected is not None]
    assert (len(won), len(lost)) == (10, 190)
    assert all(o.rejected.reason == "insufficient_stock" for o in lost if o.rejected)
    variant = await _variant(pg_catalog, variant_id)
    assert (variant.on_hand, variant.reserved) == (10, 10)
    async with pg_catalog.database.sessions() as session:
        statuses = dict(
            (
                await session.execute(
                    select(Reservation.status, func.count()).group_by(Reservation.status)
                )
            ).all()
        )
        reservations = await session.scalar(
            select(func.count())
            .select_from(StockMovement)
            .where(StockMovement.kind == "reservation")
        )
        product = await session.get(Product, product_id)
    assert statuses == {"active": 10, "rejected": 190}
    assert reservations == 10
    assert product is not None
    assert product.available == 0
    await assert_books_balance(pg_catalog)
    # Every loser can retry and keeps its answer; a release lets the next buyer in.
    first = won[0]
    assert first.reservation is not None
    async with pg_catalog.transaction() as uow:
        await inventory.release(uow, first.reservation.reference)
        await uow.commit()
    again = await _race(pg_catalog, [[(variant_id, 1)]] * 20, held_here)
    assert sum(o.reservation is not None for o in again) == 1
    await assert_books_balance(pg_catalog)


@AT_ONCE
async def test_multi_line_orders_in_opposite_orders_neither_deadlock_nor_oversell(
    pg_catalog: ServiceRuntime, at_once: bool
) -> None:
    # Two variants of one product (their totals race on the product row) and a
    # variant of another product.
    _, (shirt_s, shirt_m) = await create_product(
        pg_catalog, name="Shirt", variants=[("20.00", 15), ("22.00", 100)]
    )
    _, (socks,) = await create_product(pg_catalog, name="Socks", variants=[("5.00", 15)])
    orders: list[list[tuple[uuid.UUID, int]]] = []
    for n in range(120):
        orders.append(
            [
                [(shirt_s, 1), (socks, 1)],
                [(socks, 1), (shirt_s, 1)],
                [(shirt_m, 1), (shirt_s, 1)],
                [(shirt_m, 1)],
            ][n % 4]
        )
    held_here = _kept(at_once)
    outcomes = await _race(pg_catalog, orders, held_here)
    assert len(outcomes) == 120
    won = [o for o in outcomes if o.reservation is not None]
    # Every order but the shirt_m-only ones needs one shirt_s, of which there are
    # 15; shirt_m (100) and socks (15) never run out first.
    assert len(won) == 15 + 30
    s, m, k = [await _variant(pg_catalog, v) for v in (shirt_s, shirt_m, socks)]
    assert s.reserved == 15
    assert m.reserved + k.reserved == 15 + 30
    await assert_books_balance(pg_catalog)

    # Releases and commits racing with new reservations keep the books balanced too.
    references = [o.reservation.reference for o in won if o.reservation is not None]

    async def release(reference: str) -> None:
        async with pg_catalog.transaction() as uow:
            await inventory.release(uow, reference)
            await uow.commit()

    async def commit(reference: str) -> None:
        async with pg_catalog.transaction() as uow:
            await inventory.commit(uow, reference, held_here=held_here)
            await uow.commit()

    work: list[Coroutine[Any, Any, object]] = [
        (release if n % 2 else commit)(reference) for n, reference in enumerate(references)
    ]
    work += [_reserve(pg_catalog, f"late-{n}", orders[n], held_here) for n in range(30)]
    results = await asyncio.wait_for(asyncio.gather(*work, return_exceptions=True), timeout=60)
    assert not [r for r in results if isinstance(r, BaseException)]
    await assert_books_balance(pg_catalog)


async def _wait_until_blocked(runtime: ServiceRuntime, sessions: int = 1) -> None:
    """Until ``sessions`` other sessions of this database wait for a row lock."""
    from sqlalchemy import text

    for _ in range(200):
        async with runtime.database.engine.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting >= sessions:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no session ever waited for a lock")


async def test_product_totals_survive_two_variants_changing_at_once(
    pg_catalog: ServiceRuntime,
) -> None:
    """Two transactions reserve different variants of one product; the later one
    must not write a product total computed before the earlier one committed."""
    product_id, (small, large) = await create_product(
        pg_catalog, name="Hoodie", variants=[("30.00", 5), ("32.00", 5)]
    )
    async with pg_catalog.database.sessions() as holder:
        # Another writer holds the product row: both reservations wait for it, and
        # each then moves the total from the row as the one before left it.
        await holder.execute(select(Product).where(Product.id == product_id).with_for_update())
        first = asyncio.create_task(_reserve(pg_catalog, "first", [(small, 2)]))
        await _wait_until_blocked(pg_catalog)
        second = asyncio.create_task(_reserve(pg_catalog, "second", [(large, 3)]))
        await _wait_until_blocked(pg_catalog, sessions=2)
        await holder.commit()
    outcomes = await asyncio.gather(first, second)
    assert all(outcome.reservation is not None for outcome in outcomes)
    async with pg_catalog.database.sessions() as session:
        product = await session.get(Product, product_id)
    assert product is not None
    assert product.available == 10 - 2 - 3
    await assert_books_balance(pg_catalog)


async def test_price_changes_racing_with_reservations_do_not_deadlock(
    pg_catalog: ServiceRuntime,
) -> None:
    from panthera.catalog import service
    from panthera.catalog.search import search_for

    product_id, variants = await create_product(
        pg_catalog, name="Lamp", variants=[("40.00", 500), ("45.00", 500)]
    )

    async def reprice(n: int) -> None:
        async with pg_catalog.uow() as uow:
            if n % 2:
                await service.update_variant(
                    uow, product_id, variants[n % 2], price=f"{40 + n}.00", title=None
                )
            else:
                await service.update_product(
                    uow, search_for("postgresql"), product_id, {"price": f"{40 + n}.00"}
                )
            await uow.commit()

    # Every sixth caller is an admin changing prices; the rest reserve one or both.
    work: list[Coroutine[Any, Any, object]] = [
        reprice(n)
        if n % 6 == 0
        else _reserve(pg_catalog, f"lamp-{n}", [(variants[0], 1), (variants[1], 1)][: 1 + n % 2])
        for n in range(72)
    ]
    results = await asyncio.wait_for(asyncio.gather(*work, return_exceptions=True), timeout=60)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    await assert_books_balance(pg_catalog)


async def test_the_same_reference_at_once_gets_one_answer(pg_catalog: ServiceRuntime) -> None:
    """A caller's retry can overlap its first attempt: both get the same reservation."""
    _, (variant_id,) = await create_product(pg_catalog, name="Kettle", variants=[("25.00", 3)])
    results = await asyncio.wait_for(
        asyncio.gather(
            *(_reserve(pg_catalog, "order-42", [(variant_id, 2)]) for _ in range(10)),
            return_exceptions=True,
        ),
        timeout=60,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    outcomes = [r for r in results if isinstance(r, inventory.ReservationOutcome)]
    assert {o.reservation.id for o in outcomes if o.reservation} != set()
    assert len({o.reservation.id if o.reservation else None for o in outcomes}) == 1
    variant = await _variant(pg_catalog, variant_id)
    assert variant.reserved == 2
    # And when stock is short, every overlapping attempt gets the same rejection.
    results = await asyncio.wait_for(
        asyncio.gather(
            *(_reserve(pg_catalog, "order-43", [(variant_id, 2)]) for _ in range(10)),
            return_exceptions=True,
        ),
        timeout=60,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    assert all(
        isinstance(r, inventory.ReservationOutcome) and r.rejected is not None for r in results
    )
    await assert_books_balance(pg_catalog)


async def test_a_multi_line_sale_and_release_move_each_variant_by_its_own_quantity(
    pg_catalog: ServiceRuntime,
) -> None:
    _, (small, large) = await create_product(
        pg_catalog, name="Mug", variants=[("8.00", 10), ("9.00", 20)]
    )
    sold = await _reserve(pg_catalog, "sold-two-lines", [(small, 2), (large, 5)])
    kept = await _reserve(pg_catalog, "released-two-lines", [(large, 3), (small, 1)])
    assert sold.reservation is not None
    assert kept.reservation is not None
    async with pg_catalog.transaction() as uow:
        await inventory.commit(uow, "sold-two-lines")
        await inventory.release(uow, "released-two-lines")
        await uow.commit()
    s, m = [await _variant(pg_catalog, v) for v in (small, large)]
    assert (s.on_hand, s.reserved, m.on_hand, m.reserved) == (8, 0, 15, 0)
    ledger = await _ledger(pg_catalog, StockMovement.kind.in_(("sale", "release")))
    assert sorted(ledger) == sorted(
        [
            ("sale", small, -2, -2, 8, 1),
            ("sale", large, -5, -5, 15, 3),
            ("release", small, 0, -1, 8, 0),
            ("release", large, 0, -3, 15, 0),
        ]
    )
    await assert_books_balance(pg_catalog)


async def test_a_reservation_over_two_products_moves_both_totals(
    pg_catalog: ServiceRuntime,
) -> None:
    cup, _ = await create_product(pg_catalog, name="Cup", variants=[("3.00", 10)])
    pot, _ = await create_product(pg_catalog, name="Pot", variants=[("30.00", 4)])
    async with pg_catalog.database.sessions() as session:
        cup_variant, pot_variant = [
            (await session.execute(select(Variant.id).where(Variant.product_id == p))).scalar_one()
            for p in (cup, pot)
        ]

    async def totals() -> tuple[int, int]:
        async with pg_catalog.database.sessions() as session:
            found = dict(
                (
                    await session.execute(
                        select(Product.id, Product.available).where(Product.id.in_((cup, pot)))
                    )
                ).all()
            )
        return found[cup], found[pot]

    await _reserve(pg_catalog, "two-products", [(pot_variant, 3), (cup_variant, 4)])
    assert await totals() == (6, 1)
    async with pg_catalog.transaction() as uow:
        await inventory.release(uow, "two-products")
        await uow.commit()
    assert await totals() == (10, 4)
    await assert_books_balance(pg_catalog)


async def test_the_sale_of_a_reservation_made_here_is_one_statement(
    pg_catalog: ServiceRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The id this process reserved under stands in for the read: the reservation is
    closed, its variants moved, the ledger written and stock.committed outboxed in one
    round trip, with the same rows as the general way writes."""
    _, (small, large) = await create_product(
        pg_catalog, name="Jug", variants=[("8.00", 10), ("9.00", 20)]
    )
    here = inventory.HeldReferences()

    async def reserve_here(reference: str, lines: list[tuple[uuid.UUID, int]]) -> uuid.UUID:
        outcome = await _reserve(pg_catalog, reference, lines, held_here=here)
        assert outcome.reservation is not None
        return outcome.reservation.id

    async def sell(reference: str) -> str:
        async with pg_catalog.transaction() as tx:
            return await inventory.commit(tx, reference, held_here=here)

    await reserve_here("warm", [(small, 1)])
    await sell("warm")  # the statement is prepared on the pooled connection
    reservation_id = await reserve_here("sold-here", [(small, 2), (large, 5)])
    trips = RoundTrips(monkeypatch)
    assert await sell("sold-here") == "committed"
    assert trips.verbs() == ["WITH"]
    monkeypatch.undo()

    s, m = [await _variant(pg_catalog, v) for v in (small, large)]
    assert (s.on_hand, s.reserved, m.on_hand, m.reserved) == (7, 0, 15, 0)
    ledger = await _ledger(pg_catalog, StockMovement.reservation_id == reservation_id)
    async with pg_catalog.database.sessions() as session:
        status = await session.scalar(
            select(Reservation.status).where(Reservation.id == reservation_id)
        )
        outbox = pg_catalog.definition.tables.outbox
        committed = (
            (
                await session.execute(
                    select(outbox.c.payload).where(outbox.c.type == "stock.committed")
                )
            )
            .scalars()
            .all()
        )
    assert sorted(ledger) == sorted(
        [
            ("reservation", small, 0, 2, 9, 2),
            ("reservation", large, 0, 5, 20, 5),
            ("sale", small, -2, -2, 7, 0),
            ("sale", large, -5, -5, 15, 0),
        ]
    )
    assert status == "committed"
    assert {"reservation_id": str(reservation_id), "reference": "sold-here"} in [
        {key: payload[key] for key in ("reservation_id", "reference")} for payload in committed
    ]
    # Sold again: the general way finds it sold, and nothing moves twice.
    assert await sell("sold-here") == "committed"
    assert (await _variant(pg_catalog, small)).on_hand == 7
    await assert_books_balance(pg_catalog)


async def test_a_reservation_made_here_but_released_since_is_not_sold(
    pg_catalog: ServiceRuntime,
) -> None:
    _, (variant,) = await create_product(pg_catalog, name="Vase", variants=[("5.00", 3)])
    here = inventory.HeldReferences()
    await _reserve(pg_catalog, "let-go", [(variant, 2)], held_here=here)
    async with pg_catalog.transaction() as tx:
        await inventory.release(tx, "let-go")
        await tx.commit()
    with pytest.raises(errors.ReservationClosed):
        async with pg_catalog.transaction() as tx:
            await inventory.commit(tx, "let-go", held_here=here)
    v = await _variant(pg_catalog, variant)
    assert (v.on_hand, v.reserved) == (3, 0)
    async with pg_catalog.database.sessions() as session:
        outbox = pg_catalog.definition.tables.outbox
        sold = await session.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.type == "stock.committed")
        )
    assert sold == 0
    await assert_books_balance(pg_catalog)


async def test_a_reservation_that_fits_with_stock_to_spare_is_a_read_and_one_statement(
    pg_catalog: ServiceRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept here, every line fitting with stock to spare: the lines read before the
    transaction, then the claim, holds, lines, ledger, totals and stock.reserved in one
    statement. A reservation that takes the last units goes the general way, which
    also tells the shop the variant ran out."""
    product_id, (cup, pot) = await create_product(
        pg_catalog, name="Tea set", variants=[("4.00", 10), ("30.00", 3)]
    )
    here = inventory.HeldReferences()
    await _reserve(pg_catalog, "warm", [(cup, 1)], here)
    trips = RoundTrips(monkeypatch)
    fits = await _reserve(pg_catalog, "fits", [(pot, 2), (cup, 3)], here)
    assert trips.verbs() == ["SELECT", "WITH"]
    trips.clear()
    last = await _reserve(pg_catalog, "takes-the-last", [(pot, 1)], here)
    assert trips.verbs() == ["SELECT", "BEGIN", "WITH", "WITH", "COMMIT"]
    monkeypatch.undo()

    assert fits.reservation is not None
    assert last.reservation is not None
    assert [(item.id, quantity, price) for item, quantity, price in fits.lines] == sorted(
        [(cup, 3, 400), (pot, 2, 3000)]
    )
    c, p = [await _variant(pg_catalog, v) for v in (cup, pot)]
    assert (c.reserved, p.reserved) == (4, 3)
    ledger = await _ledger(pg_catalog, StockMovement.reservation_id == fits.reservation.id)
    assert sorted(ledger) == sorted(
        [("reservation", cup, 0, 3, 10, 4), ("reservation", pot, 0, 2, 3, 2)]
    )
    async with pg_catalog.database.sessions() as session:
        outbox = pg_catalog.definition.tables.outbox
        events = (
            await session.execute(select(outbox.c.type, outbox.c.payload).order_by(outbox.c.seq))
        ).all()
        product = await session.get(Product, product_id)
    reserved = [payload for kind, payload in events if kind == "stock.reserved"]
    assert [payload["reference"] for payload in reserved] == ["warm", "fits", "takes-the-last"]
    assert {
        (line["variant_id"], line["quantity"], line["unit_price_amount"])
        for line in reserved[1]["lines"]
    } == {(str(cup), 3, 400), (str(pot), 2, 3000)}
    # The pot ran out with the last reservation: announced, as the general way does.
    ran_out = [
        payload["variant_id"]
        for kind, payload in events
        if kind == "stock.changed" and payload["cause"] == "reservation"
    ]
    assert ran_out == [str(pot)]
    assert product is not None
    assert product.available == 13 - 7
    await assert_books_balance(pg_catalog)


async def test_a_reference_answered_before_is_not_held_again_at_once(
    pg_catalog: ServiceRuntime,
) -> None:
    _, (variant,) = await create_product(pg_catalog, name="Bowl", variants=[("6.00", 10)])
    here = inventory.HeldReferences()
    first = await _reserve(pg_catalog, "twice", [(variant, 2)], here)
    again = await _reserve(pg_catalog, "twice", [(variant, 2)], here)
    assert first.reservation is not None
    assert again.reservation is not None
    assert again.reservation.id == first.reservation.id
    assert (await _variant(pg_catalog, variant)).reserved == 2
    await assert_books_balance(pg_catalog)


async def test_a_price_changed_after_the_read_is_held_the_general_way_at_the_new_price(
    pg_catalog: ServiceRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    product_id, (variant,) = await create_product(
        pg_catalog, name="Kettle", variants=[("25.00", 10)]
    )
    resolve = inventory._resolve

    async def read_then_reprice(sql: Any, requests: Any) -> Any:
        resolved = await resolve(sql, requests)
        async with pg_catalog.database.sessions() as session:
            # As a price change does: the variant's price and the product's lowest.
            await session.execute(
                update(Variant).where(Variant.id == variant).values(price_amount=2700)
            )
            await session.execute(
                update(Product).where(Product.id == product_id).values(price_amount=2700)
            )
            await session.commit()
        return resolved

    monkeypatch.setattr(inventory, "_resolve", read_then_reprice)
    outcome = await _reserve(pg_catalog, "repriced", [(variant, 1)], inventory.HeldReferences())
    assert [price for _, _, price in outcome.lines] == [2700]
    assert (await _variant(pg_catalog, variant)).reserved == 1
    await assert_books_balance(pg_catalog)
