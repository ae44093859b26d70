"""The order saga on PostgreSQL, where buyers really race for the last units.

Every service of the embedded platform gets its own fresh database on the server
of ``PANTHERA_TEST_DATABASE_URL`` (dropped afterwards); a server that does not
answer FAILS the test, never skips it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from panthera.catalog.models import Variant
from panthera.orders.models import Order
from panthera.payments.models import Payment
from panthera.runtime.registry import SERVICE_NAMES
from tests.conftest import Platform, make_admin, make_settings, register_and_login, start_platform
from tests.integration.conftest import DATABASE_URL, PostgresServer, ServiceDatabases, unique_prefix
from tests.orders.conftest import deliver_last_webhook, place, product, saga_finished, settled

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BUYERS = 200
UNITS = 10


@asynccontextmanager
async def platform_on_postgres(tmp_path: Path, **overrides: Any) -> AsyncIterator[Platform]:
    databases = ServiceDatabases(PostgresServer(DATABASE_URL), unique_prefix())
    try:
        await databases.create(SERVICE_NAMES)
        settings = make_settings(
            tmp_path,
            database_url=databases.url_template,
            # Hundreds of sign-ups: the password hash's cost is not what is tested here.
            password_memory_kib=1024,
            password_time_cost=1,
            # Six services in one process beside other tests on the same server;
            # connections kept open (no overflow), so a burst does not reconnect.
            database_pool_size=5,
            database_max_overflow=0,
            **overrides,
        )
        app, client = await start_platform(settings)
        try:
            yield Platform(app=app, client=client, settings=settings)
        finally:
            await client.aclose()
            await app.state.platform.stop()
    finally:
        await databases.drop()


@pytest.fixture
async def pg_platform(tmp_path: Path) -> AsyncIterator[Platform]:
    async with platform_on_postgres(tmp_path) as platform:
        yield platform


async def test_a_payment_under_way_is_recorded_only_once_its_lease_runs_out(
    tmp_path: Path,
) -> None:
    """On PostgreSQL the step that asks for the payment writes nothing while it is under
    way: the order keeps the lease it was placed with, and its outcome's event moves it
    on. With no event, the lease's end lets the poller ask again, which records the
    wait and its deadline; the late webhook then confirms the order."""
    async with platform_on_postgres(
        tmp_path, saga_lease_seconds=1.0, saga_poll_seconds=0.2
    ) as shop:
        admin = await make_admin(shop)
        buyer = await register_and_login(shop.client)
        mug = await product(shop, admin, stock=5)
        runtimes = shop.app.state.platform.runtimes
        provider = runtimes["payments"].components["payments_deps"].provider
        provider.delivery_delay_seconds = 3600

        async def row(order_id: str) -> Order:
            async with runtimes["orders"].database.read_sessions() as session:
                order = await session.get(Order, uuid.UUID(order_id))
            assert order is not None
            return order

        placed_at = datetime.now(UTC)
        order_id = (await place(shop.client, buyer, [(mug, 1)])).json()["orderId"]
        for _ in range(100):
            if len(provider.webhooks) == 1:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        waiting = await row(order_id)
        assert (waiting.saga_step, waiting.payment_id) == ("pay", None)
        assert waiting.saga_lease_until is not None
        assert waiting.saga_lease_until <= placed_at + timedelta(seconds=2)
        for _ in range(100):
            recorded = await row(order_id)
            if recorded.saga_step == "await_payment":
                break
            await asyncio.sleep(0.05)
        assert recorded.saga_step == "await_payment"
        assert recorded.payment_id is not None
        assert recorded.payment_deadline is not None
        await deliver_last_webhook(shop, provider)
        order = await settled(shop.client, buyer, order_id, timeout=20)
        assert order["status"] == "CONFIRMED"
        assert [change["status"] for change in order["statusHistory"]] == [
            "PENDING",
            "CONFIRMED",
        ]


async def test_200_buyers_of_the_last_10_units(pg_platform: Platform) -> None:
    platform = pg_platform
    runtimes = platform.app.state.platform.runtimes
    assert not runtimes["orders"].database.is_sqlite
    admin = await make_admin(platform)
    last_units = await product(platform, admin, price="25.00", stock=UNITS)
    buyers = []
    for start in range(0, BUYERS, 25):
        buyers += await asyncio.gather(
            *(register_and_login(platform.client) for _ in range(start, min(BUYERS, start + 25)))
        )

    placed = await asyncio.gather(*(place(platform.client, b, [(last_units, 1)]) for b in buyers))
    assert [r.status_code for r in placed] == [201] * BUYERS
    orders = await asyncio.gather(
        *(
            settled(platform.client, buyer, response.json()["orderId"], timeout=120, interval=0.5)
            for buyer, response in zip(buyers, placed, strict=True)
        )
    )
    for order in orders:
        await saga_finished(platform, order["orderId"], timeout=60)

    confirmed = [o for o in orders if o["status"] == "CONFIRMED"]
    cancelled = [o for o in orders if o["status"] == "CANCELLED"]
    assert len(confirmed) == UNITS
    assert len(cancelled) == BUYERS - UNITS
    assert {o["cancelReason"] for o in cancelled} == {"out_of_stock"}

    async with runtimes["catalog"].database.read_sessions() as session:
        variant = (
            await session.execute(
                select(Variant).where(Variant.product_id == uuid.UUID(last_units))
            )
        ).scalar_one()
    assert (variant.on_hand, variant.reserved) == (0, 0)

    async with runtimes["payments"].database.read_sessions() as session:
        paid = list(
            (await session.execute(select(Payment).where(Payment.status == "succeeded"))).scalars()
        )
        attempts = await session.scalar(select(func.count()).select_from(Payment))
    # Money was taken for the confirmed orders only, once each; the others never paid.
    assert sorted(p.order_reference for p in paid) == sorted(o["orderId"] for o in confirmed)
    assert sum(p.amount for p in paid) == 2500 * UNITS
    assert attempts == UNITS
