"""The orders service: orders, their saga through stock and payment, and fulfilment.

An order is placed PENDING, priced by the catalog. Its saga, orchestrated here,
reserves the stock (catalog), takes the payment (payments service) and makes
the sale final: CONFIRMED. Any failure is compensated (stock released, money
refunded) and the order ends CANCELLED with a reason. See ``states`` for the
rules and ``saga`` for how a step survives a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from panthera.kernel.service import ServiceDefinition, ServiceRuntime

log = logging.getLogger("panthera.orders")
PURGE_EVERY_SECONDS = 3600.0
GAUGE_EVERY_SECONDS = 15.0


def _router() -> APIRouter:
    from panthera.orders.endpoints import router

    return router


def _state(runtime: ServiceRuntime) -> dict[str, Any]:
    from panthera.kernel.http.client import ServiceDirectory
    from panthera.kernel.idempotency import IdempotencyKeys
    from panthera.orders.clients import CatalogClient, PaymentsClient
    from panthera.orders.deps import OrdersDeps
    from panthera.orders.models import IDEMPOTENCY_KEYS
    from panthera.orders.saga import Saga

    settings = runtime.settings
    directory: ServiceDirectory = runtime.components["directory"]
    catalog = CatalogClient(directory)
    payments = PaymentsClient(directory)
    deps = OrdersDeps(
        uow=runtime.uow,
        transaction=runtime.transaction,
        database=runtime.database,
        read_session=runtime.database.read_sessions,
        catalog=catalog,
        payments=payments,
        saga=Saga(
            database=runtime.database,
            transaction=runtime.transaction,
            read_session=runtime.database.read_sessions,
            catalog=catalog,
            payments=payments,
            reservation_ttl_seconds=settings.reservation_ttl_seconds,
            lease_seconds=settings.saga_lease_seconds,
            step_attempts=settings.saga_step_attempts,
            payment_timeout_seconds=settings.saga_payment_timeout_seconds,
            poll_seconds=settings.saga_poll_seconds,
        ),
        # Placing an order takes well under a second (one catalog call, one insert):
        # a claim left by a process that died is taken over after half a minute,
        # not the default two, so a buyer retrying through an outage gets through.
        idempotency=IdempotencyKeys(
            runtime.database, IDEMPOTENCY_KEYS, lease=timedelta(seconds=30)
        ),
    )
    runtime.components["orders_deps"] = deps
    return {"orders_deps": deps}


async def _measure_saga(runtime: ServiceRuntime) -> None:
    """Keep the saga gauges current: what alerting calls a stuck saga shows here."""
    from panthera.kernel.observability import SAGA_PENDING
    from panthera.orders.deps import OrdersDeps
    from panthera.orders.states import SagaStep

    deps: OrdersDeps = runtime.components["orders_deps"]
    while True:
        try:
            pending = await deps.saga.pending_by_step()
            for step in SagaStep:
                if step != SagaStep.DONE:
                    SAGA_PENDING.labels(step.value).set(pending.get(step.value, 0))
            await deps.saga.measure_overdue()
        except Exception:
            log.exception("measuring the saga failed")
        await asyncio.sleep(GAUGE_EVERY_SECONDS)


async def _start(runtime: ServiceRuntime) -> None:
    from panthera.orders.deps import OrdersDeps

    deps: OrdersDeps = runtime.components["orders_deps"]
    runtime.components["orders_tasks"] = [
        asyncio.create_task(deps.saga.poll_forever(), name="orders-saga"),
        asyncio.create_task(
            deps.idempotency.purge_forever(PURGE_EVERY_SECONDS),
            name="orders-idempotency-purge",
        ),
        asyncio.create_task(_measure_saga(runtime), name="orders-saga-gauges"),
    ]


async def _stop(runtime: ServiceRuntime) -> None:
    from panthera.orders.deps import OrdersDeps

    for task in runtime.components.pop("orders_tasks", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    deps: OrdersDeps | None = runtime.components.get("orders_deps")
    if deps is not None:
        await deps.saga.close()


def _definition() -> ServiceDefinition:
    from panthera.orders.handlers import SUBSCRIPTIONS
    from panthera.orders.models import EVENT_TABLES, Base

    return ServiceDefinition(
        name="orders",
        title="Order Processing Service API",
        description="Orders, their saga through stock and payment, fulfilment and refunds.",
        metadata=Base.metadata,
        tables=EVENT_TABLES,
        migrations_dir=Path(__file__).parent / "migrations",
        router=_router,
        state=_state,
        on_start=_start,
        on_stop=_stop,
        subscriptions=SUBSCRIPTIONS,
        # The payment's and the stock's word on an order is on its critical path.
        handlers_on_sql=True,
        calls=("catalog", "payments"),
        public_prefix="/api/v1",
    )


definition = _definition()

__all__ = ["definition"]
