"""The payments service: payments by provider token, refunds, and the provider's webhooks.

The provider is chosen by ``PANTHERA_PAYMENT_PROVIDER``: ``test`` (built in, no
network) or ``stripe``. The test provider's webhooks are signed as Stripe signs
them and handed straight to the code behind ``/webhooks/test``, which verifies
the signature and applies them as it does for a request. Payments
and refunds whose outcome never arrived are asked about by the reconciler
(reconciler.py), which runs beside the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from panthera.kernel.service import ServiceDefinition, ServiceRuntime

log = logging.getLogger("panthera.payments")
PURGE_EVERY_SECONDS = 3600.0


def _router() -> APIRouter:
    from panthera.payments.endpoints import router

    return router


def _state(runtime: ServiceRuntime) -> dict[str, Any]:
    from panthera.kernel.idempotency import IdempotencyKeys
    from panthera.payments.deps import PaymentsDeps
    from panthera.payments.models import IDEMPOTENCY_KEYS
    from panthera.payments.providers import build_provider
    from panthera.payments.reconciler import Reconciler
    from panthera.payments.service import WrittenPayments
    from panthera.payments.webhooks import receive_webhook

    async def deliver(headers: dict[str, str], body: bytes) -> None:
        # The provider's own webhooks are verified and applied as the endpoint does,
        # without the HTTP round trip through this very service: that cost a request,
        # its middleware and a second connection for every payment.
        await receive_webhook(
            runtime.uow,
            deps.provider,
            headers,
            body,
            transaction=deps.transaction,
            written=deps.written,
        )

    deps = PaymentsDeps(
        uow=runtime.uow,
        read_session=runtime.database.read_sessions,
        provider=build_provider(runtime.settings, deliver=deliver),
        idempotency=IdempotencyKeys(runtime.database, IDEMPOTENCY_KEYS),
        alone=None if runtime.database.is_sqlite else runtime.database,
        transaction=None if runtime.database.is_sqlite else runtime.transaction,
        written=None if runtime.database.is_sqlite else WrittenPayments(),
    )
    runtime.components["payments_deps"] = deps
    runtime.components["payments_reconciler"] = Reconciler(
        uows=runtime.uow,
        provider=lambda: deps.provider,
        skip_locked=not runtime.database.is_sqlite,
        after_seconds=runtime.settings.payment_reconcile_after_seconds,
    )
    return {"payments_deps": deps}


async def _reconcile(runtime: ServiceRuntime) -> None:
    """Ask the provider about what waits too long for it, every few seconds."""
    from panthera.payments.reconciler import Reconciler

    reconciler: Reconciler = runtime.components["payments_reconciler"]
    while True:
        try:
            done = await reconciler.reconcile_once()
        except Exception:
            log.exception("reconciling payments with the provider failed")
        else:
            # A full batch: more may be waiting. Claimed rows are not due again
            # for a while, so this cannot spin on the same ones.
            if done.claimed >= reconciler.batch_size:
                continue
        await asyncio.sleep(runtime.settings.payment_reconcile_poll_seconds)


async def _start(runtime: ServiceRuntime) -> None:
    runtime.components["purge_task"] = asyncio.create_task(
        runtime.components["payments_deps"].idempotency.purge_forever(PURGE_EVERY_SECONDS),
        name="payments-idempotency-purge",
    )
    runtime.components["reconcile_task"] = asyncio.create_task(
        _reconcile(runtime), name="payments-reconciler"
    )


async def _stop(runtime: ServiceRuntime) -> None:
    from panthera.payments.deps import PaymentsDeps

    for name in ("reconcile_task", "purge_task"):
        task = runtime.components.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    deps: PaymentsDeps | None = runtime.components.get("payments_deps")
    if deps is not None:
        await deps.provider.close()


def _definition() -> ServiceDefinition:
    from panthera.payments.models import EVENT_TABLES, Base

    return ServiceDefinition(
        name="payments",
        title="Payments Service API",
        description="Payments by provider token, refunds, and the provider's webhooks.",
        metadata=Base.metadata,
        tables=EVENT_TABLES,
        migrations_dir=Path(__file__).parent / "migrations",
        router=_router,
        state=_state,
        on_start=_start,
        on_stop=_stop,
        public_prefix="/api/v1",
    )


definition = _definition()

__all__ = ["definition"]
