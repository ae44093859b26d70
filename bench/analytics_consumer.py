"""How fast the analytics consumer applies events, and how soon a confirmed order is reported.

1. Throughput: a realistic order stream (order.created, payment.succeeded,
   order.confirmed with 1-4 lines, some order.shipped and payment.refunded, and
   the batched product.viewed events) delivered to the analytics consumer the way
   the embedded transport delivers it (inbox record plus roll-ups, one transaction
   per event), on SQLite and, with ``--postgres``, on a fresh PostgreSQL database
   with several deliveries in flight at once, as RabbitMQ consumers would.
2. Lag: a stand-in for the orders service commits ``order.confirmed`` to its own
   outbox (as the orders use case will); the relay wakes, the transport carries
   it, analytics applies it; the clock stops when the sales report, read as the
   ``/sales`` route reads it, includes the order. Each sample waits for the
   previous one, so it measures latency, not queueing.

Run from the repository root: ``.venv/bin/python bench/analytics_consumer.py``
(``--help`` for the options).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData

from panthera.analytics import reports
from panthera.catalog.events import ProductViewed, ViewCount
from panthera.kernel.db import Database, service_metadata
from panthera.kernel.events.envelope import Envelope, EventContract
from panthera.kernel.events.outbox import event_tables
from panthera.kernel.service import ServiceDefinition, ServiceRuntime
from panthera.kernel.settings import Settings
from panthera.orders.events import OrderConfirmed, OrderLine, OrderPlaced, OrderShipped
from panthera.payments.events import PaymentRefunded, PaymentSucceeded
from panthera.runtime.platform import Platform

PRODUCTS = [(uuid.uuid4(), uuid.uuid4(), f"Product {n}", 500 + 37 * n) for n in range(200)]


def order_stream(orders: int, seed: int = 7) -> list[EventContract]:
    """The events ``orders`` orders cause, in the order the services would publish them."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=30)
    events: list[EventContract] = []
    for index in range(orders):
        moment = start + timedelta(minutes=index)
        chosen = rng.sample(PRODUCTS, rng.randint(1, 4))
        items = tuple(
            OrderLine(
                product_id=product_id,
                variant_id=product_id,
                sku=f"SKU-{n}",
                name=name,
                category_id=category_id,
                quantity=(quantity := rng.randint(1, 3)),
                unit_price=price,
                line_total=quantity * price,
            )
            for n, (product_id, category_id, name, price) in enumerate(chosen)
        )
        total = sum(line.line_total for line in items)
        order = {
            "order_id": uuid.uuid4(),
            "user_id": uuid.uuid4(),
            "total_amount": total,
            "currency": "USD",
        }
        events.append(
            OrderPlaced(
                status="PENDING",
                revision=1,
                occurred_at=moment,
                items=items,
                shipping_address="1 Main St",
                **order,
            )
        )
        payment = {
            "payment_id": uuid.uuid4(),
            "order_reference": str(order["order_id"]),
            "user_id": order["user_id"],
            "amount": total,
            "currency": "USD",
            "provider": "test",
        }
        events.append(
            PaymentSucceeded(revision=1, occurred_at=moment, provider_payment_id=None, **payment)
        )
        events.append(
            OrderConfirmed(
                status="CONFIRMED",
                revision=2,
                occurred_at=moment,
                items=items,
                payment_id=payment["payment_id"],
                **order,
            )
        )
        if index % 3 == 0:
            events.append(
                OrderShipped(
                    status="SHIPPED",
                    revision=3,
                    occurred_at=moment,
                    tracking_number="1Z",
                    carrier=None,
                    **order,
                )
            )
        if index % 10 == 0:
            events.append(
                PaymentRefunded(
                    revision=2,
                    occurred_at=moment,
                    refund_id=uuid.uuid4(),
                    refund_amount=total // 2,
                    amount_refunded=total // 2,
                    fully_refunded=False,
                    reason="requested_by_customer",
                    **payment,
                )
            )
        if index % 20 == 0:
            counts = [ViewCount(product_id=p[0], views=rng.randint(1, 50)) for p in PRODUCTS[:100]]
            events.append(ProductViewed(window_start=moment, window_end=moment, counts=counts))
    return events


async def throughput(
    database_url: str, data_dir: Path, orders: int, concurrency: int
) -> dict[str, Any]:
    """Events per second the analytics consumer applies, ``concurrency`` deliveries at once."""
    settings = Settings(data_dir=data_dir, database_url=database_url, log_json=False)
    platform = Platform(settings, ["analytics"])
    await platform.start()
    try:
        envelopes = [Envelope.wrap(event, source="bench") for event in order_stream(orders)]
        queue: asyncio.Queue[Envelope] = asyncio.Queue()
        for envelope in envelopes:
            queue.put_nowait(envelope)

        async def worker() -> None:
            while not queue.empty():
                await platform.transport.publish(queue.get_nowait())

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        return {
            "events": len(envelopes),
            "seconds": round(elapsed, 2),
            "events_per_second": round(len(envelopes) / elapsed),
            "concurrency": concurrency,
        }
    finally:
        await platform.stop()


def _stand_in_orders(settings: Settings, platform: Platform) -> ServiceRuntime:
    """A service with nothing but an outbox, publishing as the orders service will."""
    metadata: MetaData = service_metadata()
    tables = event_tables(metadata)
    definition = ServiceDefinition(
        name="orders-stand-in",
        title="",
        description="",
        metadata=metadata,
        tables=tables,
        migrations_dir=Path("."),
        router=lambda: None,  # type: ignore[arg-type,return-value]
    )
    return ServiceRuntime(
        definition=definition,
        settings=settings,
        database=Database(settings.database_url_for("orders-stand-in")),
        transport=platform.transport,
    )


async def lag(data_dir: Path, samples: int) -> dict[str, Any]:
    """Milliseconds from an order.confirmed commit to the order in the sales report."""
    settings = Settings(data_dir=data_dir, log_json=False, relay_poll_seconds=1.0)
    platform = Platform(settings, ["analytics"])
    await platform.start()
    orders = _stand_in_orders(settings, platform)
    async with orders.database.engine.begin() as conn:
        await conn.run_sync(orders.definition.metadata.create_all)
    orders.relay.start()
    analytics = platform.runtimes["analytics"]
    today = datetime.now(UTC).date()
    span = reports.DateRange(today, today)

    async def reported_orders() -> int:
        async with analytics.database.read_sessions() as session:
            rows = await reports.sales(session, span, reports.Granularity.DAY)
        return sum(row["orders"] for row in rows)

    timings: list[float] = []
    report_reads: list[float] = []
    try:
        for _ in range(samples):
            before = await reported_orders()
            line = OrderLine(
                product_id=PRODUCTS[0][0],
                variant_id=PRODUCTS[0][0],
                sku="SKU-0",
                name=PRODUCTS[0][2],
                category_id=PRODUCTS[0][1],
                quantity=1,
                unit_price=1000,
                line_total=1000,
            )
            began = time.perf_counter()
            async with orders.uow() as uow:
                uow.publish(
                    OrderConfirmed(
                        order_id=uuid.uuid4(),
                        user_id=uuid.uuid4(),
                        status="CONFIRMED",
                        total_amount=1000,
                        currency="USD",
                        revision=2,
                        occurred_at=datetime.now(UTC),
                        items=(line,),
                        payment_id=None,
                    )
                )
                await uow.commit()
            while True:
                read_began = time.perf_counter()
                seen = await reported_orders()
                report_reads.append(time.perf_counter() - read_began)
                if seen > before:
                    break
                await asyncio.sleep(0.001)
            timings.append(time.perf_counter() - began)
    finally:
        await orders.relay.stop()
        await orders.database.dispose()
        await platform.stop()
    ms = sorted(t * 1000 for t in timings)
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
        "max_ms": round(ms[-1], 1),
        "sales_report_read_ms_p50": round(statistics.median(report_reads) * 1000, 2),
    }


def _postgres_url(admin_url: str) -> tuple[str, Callable[[], Any]]:
    """A fresh database next to ``admin_url``, and the coroutine function that drops it."""
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = make_url(admin_url)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    url = admin.set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False), drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders in the stream")
    parser.add_argument("--samples", type=int, default=50, help="lag samples")
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="also measure on PostgreSQL, e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="deliveries in flight on PostgreSQL"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        results["sqlite"] = asyncio.run(throughput("", Path(scratch) / "a", args.orders, 1))
        results["lag_embedded_sqlite"] = asyncio.run(lag(Path(scratch) / "b", args.samples))
    if args.postgres:
        url, drop = _postgres_url(args.postgres)
        try:
            with tempfile.TemporaryDirectory() as scratch:
                for concurrency in (1, args.concurrency):
                    results[f"postgresql_c{concurrency}"] = asyncio.run(
                        throughput(url, Path(scratch), args.orders, concurrency)
                    )
                    # The next round starts from an empty store: drop and recreate.
                    asyncio.run(drop())
                    url, drop = _postgres_url(args.postgres)
        finally:
            asyncio.run(drop())
    for name, figures in results.items():
        print(f"{name}: {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
