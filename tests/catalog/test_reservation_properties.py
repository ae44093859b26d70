"""Stock never oversells and the books always balance, whatever callers do in whatever order.

A Hypothesis state machine drives the real inventory use cases (adjust, reserve,
retry, release, commit, expiry) and re-prices variants on a migrated SQLite catalog
database, one fresh database per example (a copy of a migrated template), and
checks against a simple model and the database's own rows after every step:
no negative or oversold stock, reserved equals the active reservations' items,
the product's denormalised price and availability match its variants, and the
ledger sums to the current quantities.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select, update

from panthera.catalog import errors, inventory, service
from panthera.catalog.models import (
    EVENT_TABLES,
    Product,
    Reservation,
    ReservationItem,
    StockMovement,
    Variant,
)
from panthera.catalog.search import search_for
from panthera.kernel.service import ServiceRuntime
from tests.catalog.conftest import catalog_runtime

T = TypeVar("T")
TTL = timedelta(minutes=15)
ALREADY_DUE = timedelta(seconds=-1)

# (variant index, quantity): the index wraps around the product's variants.
lines_strategy = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3)), min_size=1, max_size=3)


@dataclass
class Held:
    """What the model knows of one reservation."""

    status: str
    items: dict[int, int]
    due: bool
    key: tuple[Any, ...]


def outcome_key(outcome: inventory.ReservationOutcome) -> tuple[Any, ...]:
    """What must be identical when the same reference is reserved again."""
    return (
        outcome.reservation.id if outcome.reservation else None,
        [(variant.id, quantity, price) for variant, quantity, price in outcome.lines],
        outcome.currency,
        outcome.rejected.reason if outcome.rejected else None,
    )


class ReservationMachine(RuleBasedStateMachine):
    template: Path  # a migrated catalog database, copied for every example

    references = Bundle("references")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = Path(tempfile.mkdtemp(prefix="catalog-props-"))
        shutil.copy(self.template, self.directory / "catalog.sqlite3")
        self.runtime: ServiceRuntime = self.run(
            catalog_runtime(
                f"sqlite+aiosqlite:///{self.directory}/catalog.sqlite3",
                self.directory,
                migrate=False,
            )
        )
        self.product_id: uuid.UUID | None = None
        self.variant_ids: list[uuid.UUID] = []
        self.on_hand: list[int] = []
        self.reserved: list[int] = []
        self.prices: list[int] = []
        self.held: dict[str, Held] = {}

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.run(self.runtime.database.dispose())
        finally:
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------ setup

    @initialize(
        variants=st.lists(
            st.tuples(st.integers(0, 99_99), st.integers(0, 20)), min_size=1, max_size=3
        )
    )
    def create_product(self, variants: list[tuple[int, int]]) -> None:
        async def create() -> tuple[uuid.UUID, list[uuid.UUID]]:
            async with self.runtime.uow() as uow:
                product = await service.create_product(
                    uow,
                    search_for("sqlite"),
                    name="Property Mug",
                    description="Holds tea and invariants",
                    currency="USD",
                    category=None,
                    slug=None,
                    featured=False,
                    options=[],
                    variants=[
                        service.VariantSpec(price=f"{price / 100:.2f}", stock=stock)
                        for price, stock in variants
                    ],
                    actor_id=None,
                )
                await uow.commit()
                rows = await service.variants_of(uow.session, product.id)
            return product.id, [row.id for row in rows]

        self.product_id, self.variant_ids = self.run(create())
        # References nobody reserved cannot be released or committed.
        with pytest.raises(errors.ReservationNotFound):
            self.run(self._release(f"never-{uuid.uuid4().hex}", "released"))
        with pytest.raises(errors.ReservationNotFound):
            self.run(self._commit(f"never-{uuid.uuid4().hex}"))
        self.prices = [price for price, _ in variants]
        self.on_hand = [stock for _, stock in variants]
        self.reserved = [0 for _ in variants]

    # ------------------------------------------------------------- operations

    def _wanted(self, lines: list[tuple[int, int]]) -> dict[int, int]:
        wanted: dict[int, int] = {}
        for index, quantity in lines:
            index %= len(self.variant_ids)
            wanted[index] = wanted.get(index, 0) + quantity
        return wanted

    async def _reserve(
        self, reference: str, lines: list[tuple[int, int]], ttl: timedelta
    ) -> inventory.ReservationOutcome:
        requests = [
            inventory.LineRequest(
                quantity=quantity, variant_id=self.variant_ids[index % len(self.variant_ids)]
            )
            for index, quantity in lines
        ]
        async with self.runtime.uow() as uow:
            outcome = await inventory.reserve(uow, reference, requests, ttl)
            await uow.commit()
        return outcome

    @rule(target=references, index=st.integers(0, 2), quantity=st.integers(1, 2))
    def reserve_one(self, index: int, quantity: int) -> str:
        """The common case, weighted up: one line, a unit or two."""
        return self._make_reservation([(index, quantity)], born_due=False)

    @rule(target=references, lines=lines_strategy, born_due=st.booleans())
    def reserve(self, lines: list[tuple[int, int]], born_due: bool) -> str:
        return self._make_reservation(lines, born_due=born_due)

    def _make_reservation(self, lines: list[tuple[int, int]], *, born_due: bool) -> str:
        reference = f"order-{uuid.uuid4().hex[:12]}"
        wanted = self._wanted(lines)
        short = {
            index
            for index, quantity in wanted.items()
            if quantity > self.on_hand[index] - self.reserved[index]
        }
        outcome = self.run(self._reserve(reference, lines, ALREADY_DUE if born_due else TTL))
        if short:
            assert outcome.reservation is None
            assert outcome.rejected is not None
            assert outcome.rejected.reason == "insufficient_stock"
            assert {line.variant_id for line in outcome.rejected.lines} == {
                self.variant_ids[index] for index in short
            }
            status = inventory.ReservationStatus.REJECTED
        else:
            assert outcome.reservation is not None
            assert outcome.reservation.status == inventory.ReservationStatus.ACTIVE
            assert outcome.currency == "USD"
            assert sorted((v.id, q, p) for v, q, p in outcome.lines) == sorted(
                (self.variant_ids[i], q, self.prices[i]) for i, q in wanted.items()
            )
            for index, quantity in wanted.items():
                self.reserved[index] += quantity
            status = inventory.ReservationStatus.ACTIVE
        self.held[reference] = Held(
            status=status,
            items={} if short else wanted,
            due=born_due,
            key=outcome_key(outcome),
        )
        return reference

    @rule(reference=references, lines=lines_strategy)
    def reserve_again(self, reference: str, lines: list[tuple[int, int]]) -> None:
        """Asking again with the same reference returns the first answer, whatever is asked."""
        before = self.run(self._snapshot())
        outcome = self.run(self._reserve(reference, lines, TTL))
        held = self.held[reference]
        assert outcome_key(outcome) == held.key
        if outcome.reservation is not None:
            assert outcome.reservation.status == held.status
        assert self.run(self._snapshot()) == before

    async def _release(self, reference: str, reason: str) -> None:
        async with self.runtime.uow() as uow:
            await inventory.release(uow, reference, reason=reason)
            await uow.commit()

    async def _commit(self, reference: str) -> None:
        async with self.runtime.uow() as uow:
            await inventory.commit(uow, reference)
            await uow.commit()

    @rule(reference=references)
    def release(self, reference: str) -> None:
        held = self.held[reference]
        for attempt in range(2):  # releasing twice is harmless
            if held.status == inventory.ReservationStatus.ACTIVE:
                assert attempt == 0
                self.run(self._release(reference, "released"))
                for index, quantity in held.items.items():
                    self.reserved[index] -= quantity
                held.status = inventory.ReservationStatus.RELEASED
                continue
            before = self.run(self._snapshot())
            if held.status in (
                inventory.ReservationStatus.COMMITTED,
                inventory.ReservationStatus.RETURNED,
            ):
                with pytest.raises(errors.ReservationClosed):
                    self.run(self._release(reference, "released"))
            else:
                self.run(self._release(reference, "released"))
            assert self.run(self._snapshot()) == before

    @rule(reference=references)
    def commit(self, reference: str) -> None:
        held = self.held[reference]
        for attempt in range(2):  # committing twice is harmless
            if held.status == inventory.ReservationStatus.ACTIVE:
                assert attempt == 0
                self.run(self._commit(reference))
                for index, quantity in held.items.items():
                    self.reserved[index] -= quantity
                    self.on_hand[index] -= quantity
                held.status = inventory.ReservationStatus.COMMITTED
                continue
            before = self.run(self._snapshot())
            if held.status == inventory.ReservationStatus.COMMITTED:
                self.run(self._commit(reference))
            else:
                with pytest.raises(errors.ReservationClosed):
                    self.run(self._commit(reference))
            assert self.run(self._snapshot()) == before

    async def _call_off(self, reference: str) -> str:
        async with self.runtime.uow() as uow:
            status = await inventory.call_off(uow, reference, reason="order_cancelled")
            await uow.commit()
        return status

    @rule(reference=references)
    def call_off(self, reference: str) -> None:
        """Undo whatever was done: held stock is released, sold stock goes back on the shelf."""
        held = self.held[reference]
        for attempt in range(2):  # calling off twice is harmless
            before = self.run(self._snapshot())
            status = self.run(self._call_off(reference))
            if held.status == inventory.ReservationStatus.ACTIVE:
                assert attempt == 0
                for index, quantity in held.items.items():
                    self.reserved[index] -= quantity
                held.status = inventory.ReservationStatus.RELEASED
            elif held.status == inventory.ReservationStatus.COMMITTED:
                assert attempt == 0
                for index, quantity in held.items.items():
                    self.on_hand[index] += quantity
                held.status = inventory.ReservationStatus.RETURNED
            else:
                assert self.run(self._snapshot()) == before
            assert status == held.status

    @rule(reference=references)
    def backdate(self, reference: str) -> None:
        """Time passes for one reservation: its expiry is now in the past."""

        async def move() -> None:
            async with self.runtime.database.sessions() as session:
                await session.execute(
                    update(Reservation)
                    .where(Reservation.reference == reference)
                    .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
                )
                await session.commit()

        self.run(move())
        self.held[reference].due = True

    @rule()
    def expire_due(self) -> None:
        """The expiry sweep: every active reservation past its time gives its stock back."""

        async def due() -> list[str]:
            async with self.runtime.database.read_sessions() as session:
                return await inventory.due_for_expiry(session, datetime.now(UTC), limit=1000)

        found = self.run(due())
        expected = {
            reference
            for reference, held in self.held.items()
            if held.due and held.status == inventory.ReservationStatus.ACTIVE
        }
        assert set(found) == expected
        for reference in found:
            self.run(self._release(reference, "expired"))
            held = self.held[reference]
            for index, quantity in held.items.items():
                self.reserved[index] -= quantity
            held.status = inventory.ReservationStatus.EXPIRED
        # A second sweep finds nothing and an expired reservation stays expired.
        assert self.run(due()) == []

    @rule(index=st.integers(0, 2), delta=st.integers(-6, 6).filter(bool))
    def adjust(self, index: int, delta: int) -> None:
        index %= len(self.variant_ids)

        async def change() -> None:
            async with self.runtime.uow() as uow:
                variant = await inventory.adjust(
                    uow, self.variant_ids[index], delta, "stock count", None
                )
                await uow.commit()
            assert (variant.on_hand, variant.reserved) == (
                self.on_hand[index],
                self.reserved[index],
            )

        if self.on_hand[index] + delta < self.reserved[index]:
            before = self.run(self._snapshot())
            with pytest.raises(errors.StockBelowReserved):
                self.run(change())
            assert self.run(self._snapshot()) == before
            return
        self.on_hand[index] += delta
        self.run(change())

    @rule(index=st.integers(0, 2), amount=st.integers(0, 99_99))
    def reprice(self, index: int, amount: int) -> None:
        index %= len(self.variant_ids)
        assert self.product_id is not None
        product_id = self.product_id

        async def change() -> None:
            async with self.runtime.uow() as uow:
                await service.update_variant(
                    uow,
                    product_id,
                    self.variant_ids[index],
                    price=f"{amount / 100:.2f}",
                    title=None,
                )
                await uow.commit()

        self.run(change())
        self.prices[index] = amount

    # ------------------------------------------------------------ invariants

    async def _snapshot(self) -> tuple[Any, ...]:
        """Everything a harmless call must leave untouched."""
        counts = select(
            select(func.count()).select_from(StockMovement).scalar_subquery(),
            select(func.count()).select_from(EVENT_TABLES.outbox).scalar_subquery(),
            select(func.count()).select_from(Reservation).scalar_subquery(),
        )
        async with self.runtime.database.read_sessions() as session:
            variants = (
                await session.execute(
                    select(Variant.id, Variant.on_hand, Variant.reserved).order_by(Variant.id)
                )
            ).all()
            statuses = (
                await session.execute(
                    select(Reservation.status, func.count()).group_by(Reservation.status)
                )
            ).all()
            totals = (await session.execute(counts)).one()
        return (tuple(variants), sorted(statuses), tuple(totals))

    @invariant()
    def books_balance(self) -> None:
        if self.product_id is None:
            return
        self.run(self._check_books())

    async def _check_books(self) -> None:
        # Per variant, in one statement: its row, what the active reservations hold
        # of it, what its ledger sums to, and its product's denormalised totals.
        held = (
            select(func.coalesce(func.sum(ReservationItem.quantity), 0))
            .join(Reservation, Reservation.id == ReservationItem.reservation_id)
            .where(
                Reservation.status == inventory.ReservationStatus.ACTIVE,
                ReservationItem.variant_id == Variant.id,
            )
            .scalar_subquery()
        )

        def ledger(column: Any) -> Any:
            return (
                select(func.coalesce(func.sum(column), 0))
                .where(StockMovement.variant_id == Variant.id)
                .scalar_subquery()
            )

        query = (
            select(
                Variant.id,
                Variant.on_hand,
                Variant.reserved,
                Variant.price_amount,
                held,
                ledger(StockMovement.on_hand_delta),
                ledger(StockMovement.reserved_delta),
                Product.available,
                Product.price_amount,
            )
            .join(Product, Product.id == Variant.product_id)
            .where(Variant.product_id == self.product_id)
        )
        async with self.runtime.database.read_sessions() as session:
            rows = {row[0]: row[1:] for row in (await session.execute(query)).all()}
        assert set(rows) == set(self.variant_ids)
        for index, variant_id in enumerate(self.variant_ids):
            on_hand, reserved, price, held_units, ledger_on_hand, ledger_reserved, *_ = rows[
                variant_id
            ]
            assert on_hand >= 0
            assert reserved >= 0
            assert on_hand - reserved >= 0, "oversold"
            assert (on_hand, reserved) == (self.on_hand[index], self.reserved[index])
            assert reserved == held_units
            assert (ledger_on_hand, ledger_reserved) == (on_hand, reserved)
            assert price == self.prices[index]
        _, _, _, _, _, _, product_available, product_price = next(iter(rows.values()))
        assert product_available == sum(row[0] - row[1] for row in rows.values())
        assert product_price == min(row[2] for row in rows.values())


async def _migrated_template(directory: Path) -> Path:
    runtime = await catalog_runtime(f"sqlite+aiosqlite:///{directory}/template.sqlite3", directory)
    await runtime.database.dispose()
    assert not (directory / "template.sqlite3-wal").exists() or (
        (directory / "template.sqlite3-wal").stat().st_size == 0
    )
    return directory / "template.sqlite3"


def test_reservations_never_oversell_and_the_books_balance(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    template = asyncio.run(_migrated_template(tmp_path_factory.mktemp("catalog-template")))
    ReservationMachine.template = template
    run_state_machine_as_test(
        ReservationMachine,
        settings=settings(
            max_examples=50,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
