"""Catalog runtimes on a migrated database: SQLite in a scratch directory, or PostgreSQL.

The PostgreSQL ones use a fresh database made by ``tests/integration/conftest.py``'s
helpers on the server named by ``PANTHERA_TEST_DATABASE_URL``, dropped afterwards;
a server that does not answer FAILS the test, never skips it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from panthera.kernel.db import Database
from panthera.kernel.events.embedded import EmbeddedTransport
from panthera.kernel.migrations import upgrade
from panthera.kernel.service import ServiceRuntime
from panthera.kernel.settings import Settings
from panthera.runtime.registry import definition
from tests.integration.conftest import (
    DATABASE_URL,
    PostgresServer,
    ServiceDatabases,
    unique_prefix,
)


async def catalog_runtime(url: str, data_dir: Path, *, migrate: bool = True) -> ServiceRuntime:
    """A catalog service runtime on ``url`` (migrated), its relay not started."""
    service = definition("catalog")
    database = Database(url)
    if migrate:
        await upgrade(database, service.migrations_dir, "catalog")
    return ServiceRuntime(
        definition=service,
        settings=Settings(data_dir=data_dir),
        database=database,
        transport=EmbeddedTransport(),
    )


@asynccontextmanager
async def fresh_pg_catalog(data_dir: Path) -> AsyncIterator[ServiceRuntime]:
    """A catalog runtime on a fresh, migrated PostgreSQL database, dropped afterwards.

    The database comes from the integration fixtures' ``ServiceDatabases``: uniquely
    named, on the server of ``PANTHERA_TEST_DATABASE_URL``, failing when it is down.
    """
    databases = ServiceDatabases(PostgresServer(DATABASE_URL), unique_prefix())
    try:
        await databases.create(["catalog"])
        runtime = await catalog_runtime(databases.url_for("catalog"), data_dir)
        try:
            yield runtime
        finally:
            await runtime.database.dispose()
    finally:
        await databases.drop()


@asynccontextmanager
async def fresh_sqlite_catalog(directory: Path) -> AsyncIterator[ServiceRuntime]:
    """A catalog runtime on a fresh, migrated SQLite file."""
    runtime = await catalog_runtime(
        f"sqlite+aiosqlite:///{directory}/catalog.sqlite3", directory / "data"
    )
    try:
        yield runtime
    finally:
        await runtime.database.dispose()


@pytest.fixture
async def pg_catalog(tmp_path: Path) -> AsyncIterator[ServiceRuntime]:
    async with fresh_pg_catalog(tmp_path) as runtime:
        yield runtime


@pytest.fixture
async def sqlite_catalog(tmp_path: Path) -> AsyncIterator[ServiceRuntime]:
    async with fresh_sqlite_catalog(tmp_path) as runtime:
        yield runtime


async def create_product(
    runtime: ServiceRuntime,
    *,
    name: str = "Widget",
    description: str = "",
    variants: list[tuple[str, int]] | None = None,
    category: str | None = None,
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A product made by the use case; its id and its variants' ids in position order."""
    from panthera.catalog import service
    from panthera.catalog.search import search_for

    search = search_for("sqlite" if runtime.database.is_sqlite else "postgresql")
    async with runtime.uow() as uow:
        product = await service.create_product(
            uow,
            search,
            name=name,
            description=description,
            currency="USD",
            category=category,
            slug=None,
            featured=False,
            options=[],
            variants=[
                service.VariantSpec(price=price, stock=stock)
                for price, stock in (variants or [("10.00", 0)])
            ],
            actor_id=None,
        )
        await uow.commit()
        rows = await service.variants_of(uow.session, product.id)
    return product.id, [row.id for row in rows]


async def assert_books_balance(runtime: ServiceRuntime) -> None:
    """No variant oversold or negative; reserved, product totals and the ledger agree."""
    from sqlalchemy import func, select

    from panthera.catalog.inventory import ReservationStatus
    from panthera.catalog.models import (
        Product,
        Reservation,
        ReservationItem,
        StockMovement,
        Variant,
    )

    async with runtime.database.sessions() as session:
        variants = list((await session.execute(select(Variant))).scalars())
        held = dict(
            (
                await session.execute(
                    select(ReservationItem.variant_id, func.sum(ReservationItem.quantity))
                    .join(Reservation, Reservation.id == ReservationItem.reservation_id)
                    .where(Reservation.status == ReservationStatus.ACTIVE)
                    .group_by(ReservationItem.variant_id)
                )
            ).all()
        )
        ledger = {
            row[0]: (row[1], row[2])
            for row in (
                await session.execute(
                    select(
                        StockMovement.variant_id,
                        func.sum(StockMovement.on_hand_delta),
                        func.sum(StockMovement.reserved_delta),
                    ).group_by(StockMovement.variant_id)
                )
            ).all()
        }
        products = list((await session.execute(select(Product))).scalars())
    for variant in variants:
        assert variant.on_hand >= 0, variant.sku
        assert variant.reserved >= 0, variant.sku
        assert variant.on_hand - variant.reserved >= 0, f"{variant.sku} oversold"
        assert variant.reserved == held.get(variant.id, 0), variant.sku
        assert ledger.get(variant.id, (0, 0)) == (variant.on_hand, variant.reserved), variant.sku
    for product in products:
        mine = [v for v in variants if v.product_id == product.id]
        assert product.available == sum(v.on_hand - v.reserved for v in mine), product.name
        assert product.price_amount == min(v.price_amount for v in mine), product.name
