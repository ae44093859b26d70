"""The saga when things go wrong: a service that does not answer, a worker that dies, a
payment that arrives late or never, a reservation that runs out, events out of order.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from panthera.catalog import inventory
from panthera.kernel.events import Envelope
from panthera.orders import handlers, service
from panthera.orders.clients import Unavailable
from panthera.orders.models import Order, OrderItem
from panthera.payments.events import PaymentFailed
from tests.conftest import (
    Platform,
    make_admin,
    make_settings,
    register_and_login,
    start_platform,
    written_events,
)
from tests.orders.conftest import (
    deliver_last_webhook,
    place,
    product,
    saga_finished,
    settled,
    stock_of,
)


@asynccontextmanager
async def running_shop(tmp_path: Path, **overrides: Any) -> AsyncIterator[Platform]:
    values: dict[str, Any] = {
        "saga_step_attempts": 3,
        "saga_lease_seconds": 1.0,
        "saga_poll_seconds": 0.2,
        "saga_payment_timeout_seconds": 1.0,
    }
    settings = make_settings(tmp_path, **{**values, **overrides})
    app, client = await start_platform(settings)
    try:
        yield Platform(app=app, client=client, settings=settings)
    finally:
        await client.aclose()
        await app.state.platform.stop()


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Platform]:
    async with running_shop(tmp_path) as platform:
        yield platform


def _runtime(platform: Platform, name: str) -> Any:
    return platform.app.state.platform.runtimes[name]


def _orders(platform: Platform) -> Any:
    return _runtime(platform, "orders").components["orders_deps"]


def _provider(platform: Platform) -> Any:
    return _runtime(platform, "payments").components["payments_deps"].provider


def failing_first(call: Any, error: Exception) -> tuple[Any, list[int]]:
    """``call``, whose first call raises ``error`` and the others go through; and the
    calls made so far (one entry each)."""
    calls: list[int] = []  # cleared, the next call fails again

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return await call(*args, **kwargs)

    return wrapped, calls


async def _order_row(platform: Platform, order_id: str) -> Order:
    async with _runtime(platform, "orders").database.read_sessions() as session:
        order = await session.get(Order, uuid.UUID(order_id))
    assert order is not None
    return order


async def _payment_statuses(platform: Platform, admin: Any, order_id: str) -> list[str]:
    response = await platform.client.get(
        "/api/v1/payments", params={"orderId": order_id}, headers=admin.headers
    )
    return [p["status"] for p in response.json()]


async def test_a_catalog_that_never_answers_is_retried_then_the_order_cancelled(
    shop: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await make_admin(shop)
    buyer = await register_and_login(shop.client)
    mug = await product(shop, admin, stock=5)
    calls = 0

    async def down(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        raise Unavailable("catalog: ConnectTimeout")

    monkeypatch.setattr(_orders(shop).catalog, "reserve", down)
    order_id = (await place(shop.client, buyer, [(mug, 1)])).json()["orderId"]
    order = await settled(shop.client, buyer, order_id, timeout=20)
    assert (order["status"], order["cancelReason"]) == ("CANCELLED", "timed_out")
    # Once while the order was placed, then each of the saga's attempts.
    assert calls == 1 + 3
    await saga_finished(shop, order_id)
    assert await stock_of(shop, mug) == 5
    assert await _payment_statuses(shop, admin, order_id) == []


async def test_a_worker_that_died_mid_saga_is_taken_over(
    shop: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await make_admin(shop)
    buyer = await register_and_login(shop.client)
    mug = await product(shop, admin, stock=5)
    saga = _orders(shop).saga
    # The process that placed the order "dies" before its saga runs: nothing is kicked,
    # and its lease on the order is left to run out.
    monkeypatch.setattr(saga, "kick", lambda order_id, **kwargs: None)
    order_id = (await place(shop.client, buyer, [(mug, 2)])).json()["orderId"]
    row = await _order_row(shop, order_id)
    # Its stock was held while it was placed: the payment is the saga's first step.
    assert row.saga_step == "pay"
    assert row.reservation_expires_at is not None
    assert row.saga_lease_until is not None
    assert row.saga_lease_until > datetime.now(UTC)
    monkeypatch.undo()
    order = await settled(shop.client, buyer, order_id, timeout=20)
    assert order["status"] == "CONFIRMED"
    assert await stock_of(shop, mug) == 3
    assert await _payment_statuses(shop, admin, order_id) == ["succeeded"]


async def test_a_reservation_that_runs_out_before_payment_cancels_and_refunds(
    tmp_path: Path,
) -> None:
    async with running_shop(tmp_path, saga_payment_timeout_seconds=3600.0) as shop:
        await _reservation_runs_out(shop)


async def _reservation_runs_out(shop: Platform) -> None:
    admin = await make_admin(shop)
    buyer = await register_and_login(shop.client)
    mug = await product(shop, admin, price="8.00", stock=5)
    provider = _provider(shop)
    provider.delivery_delay_seconds = 3600  # the card's outcome is slow to come
    order_id = (await place(shop.client, buyer, [(mug, 2)])).json()["orderId"]
    for _ in range(200):
        if (await _order_row(shop, order_id)).saga_step == "await_payment":
            break
        await asyncio.sleep(0.05)
    assert (await _order_row(shop, order_id)).saga_step == "await_payment"
    assert await stock_of(shop, mug) == 3

    # The catalog's expiry loop finds the reservation past its time.
    catalog = _runtime(shop, "catalog")
    async with catalog.uow() as uow:
        await inventory.release(uow, order_id, reason="expired")
        await uow.commit()
    order = await settled(shop.client, buyer, order_id)
    assert (order["status"], order["cancelReason"]) == ("CANCELLED", "reservation_expired")
    assert await stock_of(shop, mug) == 5

    # Then the payment goes through after all: the money goes back.
    await deliver_last_webhook(shop, provider)
    for _ in range(200):
        await shop.settle()
        if await _payment_statuses(shop, admin, order_id) == ["refunded"]:
            break
        await asyncio.sleep(0.05)
    assert await _payment_statuses(shop, admin, order_id) == ["refunded"]
    await saga_finished(shop, order_id)
    final = (await shop.client.get(f"/api/v1/orders/{order_id}", headers=buyer.headers)).json()
    assert (final["status"], final["amountRefunded"]) == ("CANCELLED", "16.00")


async def test_a_payment_with_no_outcome_in_time_cancels_and_is_refunded_later(
    shop: Platform,
) -> None:
    admin = await make_admin(shop)
    buyer = await register_and_login(shop.client)
    mug = await product(shop, admin, price="5.00", stock=5)
    provider = _provider(shop)
    provider.delivery_delay_seconds = 3600
    order_id = (await place(shop.client, buyer, [(mug, 1)])).json()["orderId"]
    order = await settled(shop.client, buyer, order_id, timeout=20)
    assert (order["status"], order["cancelReason"]) == ("CANCELLED", "timed_out")
    for _ in range(100):
        if await stock_of(shop, mug) == 5:
            break
        await asyncio.sleep(0.05)
    assert await stock_of(shop, mug) == 5
    # The refund waits while the payment is still open at the provider...
    assert (await _order_row(shop, order_id)).saga_step == "refund"
    # ...and gives the money back once it went through.
    await deliver_last_webhook(shop, provider)
    await saga_finished(shop, order_id, timeout=60)
    assert await _payment_statuses(shop, admin, order_id) == ["refunded"]


async def test_a_stale_payment_event_changes_nothing(shop: Platform) -> None:
    admin = await make_admin(shop)
    buyer = await register_and_login(shop.client)
    mug = await product(shop, admin, stock=5)
    order_id = (await place(shop.client, buyer, [(mug, 1)])).json()["orderId"]
    assert (await settled(shop.client, buyer, order_id))["status"] == "CONFIRMED"
    row = await _order_row(shop, order_id)
    stale = PaymentFailed(
        payment_id=row.payment_id or uuid.uuid4(),
        order_reference=order_id,
        user_id=buyer.id,
        amount=1999,
        currency="USD",
        provider="test",
        revision=1,
        occurred_at=datetime.now(UTC),
        reason="card_declined",
        message=None,
    )
    runtime = _runtime(shop, "orders")
    async with runtime.uow() as uow:
        await handlers.payment_failed(runtime, uow, stale, Envelope.wrap(stale, source="payments"))
        await uow.commit()
    after = await _order_row(shop, order_id)
    assert (after.status, after.revision) == ("CONFIRMED", row.revision)
    async with runtime.database.read_sessions() as session:
        assert (await session.execute(select(Order.status))).scalars().all() == ["CONFIRMED"]


async def test_the_saga_reads_back_nothing_its_own_transactions_hold(
    shop: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await make_admin(shop)
    buyer = await register_and_login(shop.client)
    mug = await product(shop, admin, stock=5)
    reads: list[str] = []
    load = service.load

    async def counted(session: Any, order_id: uuid.UUID, *, for_update: bool = False) -> Order:
        if not for_update:
            reads.append(str(order_id))
        return await load(session, order_id, for_update=for_update)

    items_of = service.items_of

    async def counted_items(session: Any, order_id: uuid.UUID) -> list[OrderItem]:
        reads.append(f"items of {order_id}")
        return await items_of(session, order_id)

    monkeypatch.setattr(service, "load", counted)
    monkeypatch.setattr(service, "items_of", counted_items)
    order_id = (await place(shop.client, buyer, [(mug, 2)])).json()["orderId"]
    await saga_finished(shop, order_id)
    assert (await _order_row(shop, order_id)).status == "CONFIRMED"
    # The reserve step starts from the order and lines just placed, the commit step
    # from the order as the payment's event left it, and order.confirmed carries the
    # lines placed.
    assert reads == []
    (confirmed,) = [
        event
        for event in await written_events(_runtime(shop, "orders"), "order.confirmed")
        if event.subject == order_id
    ]
    items = confirmed.payload["items"]
    assert [(line["product_id"], line["quantity"]) for line in items] == [(mug, 2)]
    assert await stock_of(shop, mug) == 3


@pytest.mark.parametrize(
    ("token", "status", "reason"),
    [("tok_visa", "CONFIRMED", None), ("tok_chargeDeclined", "CANCELLED", "card_declined")],
)
async def test_a_payment_outcome_that_arrives_before_the_reserve_step_is_recorded_decides(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    token: str,
    status: str,
    reason: str | None,
) -> None:
    # A payment timeout this long would leave the order waiting if the early word were lost.
    async with running_shop(tmp_path, saga_payment_timeout_seconds=3600.0) as shop:
        admin = await make_admin(shop)
        buyer = await register_and_login(shop.client)
        mug = await product(shop, admin, stock=5)
        provider = _provider(shop)
        provider.delivery_delay_seconds = 3600
        payments = _orders(shop).payments
        pay = payments.pay
        steps_at_outcome: list[str] = []

        async def pay_then_deliver(**kwargs: Any) -> Any:
            answer = await pay(**kwargs)
            await deliver_last_webhook(shop, provider)
            for _ in range(200):
                await shop.settle()
                row = await _order_row(shop, str(kwargs["order_id"]))
                if row.payment_revision > answer.revision:
                    steps_at_outcome.append(row.saga_step)
                    break
                await asyncio.sleep(0.02)
            return answer

        monkeypatch.setattr(payments, "pay", pay_then_deliver)
        catalog = _orders(shop).catalog
        # The order is placed without its stock (the catalog's answer was lost), so
        # the saga's reserve step holds it and asks for the payment.
        unanswered_at_first, _ = failing_first(catalog.reserve, Unavailable("catalog: ReadTimeout"))
        monkeypatch.setattr(catalog, "reserve", unanswered_at_first)
        order_id = (await place(shop.client, buyer, [(mug, 1)], token=token)).json()["orderId"]
        order = await settled(shop.client, buyer, order_id, timeout=20)
        assert (order["status"], order.get("cancelReason")) == (status, reason)
        assert steps_at_outcome == ["reserve"]
        await saga_finished(shop, order_id)
        assert await stock_of(shop, mug) == (4 if status == "CONFIRMED" else 5)
        expected = ["succeeded"] if status == "CONFIRMED" else ["failed"]
        assert await _payment_statuses(shop, admin, order_id) == expected


async def test_a_payment_call_that_fails_after_the_stock_is_held_keeps_the_hold_and_retries(
    shop: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await make_admin(shop)
    buyer = await register_and_login(shop.client)
    mug = await product(shop, admin, stock=5)
    payments = _orders(shop).payments
    once_down, calls = failing_first(payments.pay, Unavailable("payments: ConnectError"))
    monkeypatch.setattr(payments, "pay", once_down)
    order_id = (await place(shop.client, buyer, [(mug, 2)])).json()["orderId"]
    order = await settled(shop.client, buyer, order_id, timeout=20)
    assert order["status"] == "CONFIRMED"
    assert len(calls) == 2
    await saga_finished(shop, order_id)
    assert await stock_of(shop, mug) == 3
    assert await _payment_statuses(shop, admin, order_id) == ["succeeded"]


async def test_stock_held_for_an_order_that_was_not_written(
    shop: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await make_admin(shop)
    buyer = await register_and_login(shop.client)
    mug = await product(shop, admin, stock=5)
    fails_once, calls = failing_first(service.place, RuntimeError("the orders database went away"))
    monkeypatch.setattr(service, "place", fails_once)
    # (The test client raises what the app raised; a client gets a 500.)
    # Without an Idempotency-Key nothing can come back for the stock: it is given back.
    with pytest.raises(RuntimeError, match="went away"):
        await place(shop.client, buyer, [(mug, 2)])
    assert await stock_of(shop, mug) == 5
    # With one, the retry is placed on the stock its first run held, held once.
    calls.clear()
    with pytest.raises(RuntimeError, match="went away"):
        await place(shop.client, buyer, [(mug, 2)], key="held-once")
    assert await stock_of(shop, mug) == 3
    retried = await place(shop.client, buyer, [(mug, 2)], key="held-once")
    assert retried.status_code == 201, retried.text
    order = await settled(shop.client, buyer, retried.json()["orderId"])
    assert order["status"] == "CONFIRMED"
    await saga_finished(shop, order["orderId"])
    assert await stock_of(shop, mug) == 3
    assert await _payment_statuses(shop, admin, order["orderId"]) == ["succeeded"]
