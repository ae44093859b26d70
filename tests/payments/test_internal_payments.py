"""The orders saga's payment calls: idempotent by order through the payment row itself."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from typing import Any

import httpx
from sqlalchemy import event, func, select

from panthera.payments.models import IDEMPOTENCY_KEYS
from tests.payments.conftest import PaymentsService
from tests.payments.test_idempotency import Unreachable


def order_body(
    order: str, user: uuid.UUID, *, amount: str = "10.00", currency: str = "USD", **extra: str
) -> dict[str, Any]:
    return {
        "orderId": order,
        "userId": str(user),
        "amount": amount,
        "currency": currency,
        "paymentMethod": extra.get("token", "tok_visa"),
    }


async def pay_for_order(
    payments: PaymentsService, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    headers = dict(payments.internal_headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await payments.client.post("/internal/payments", json=body, headers=headers)


async def payment_of_order(payments: PaymentsService, order: str) -> httpx.Response:
    return await payments.client.get(
        f"/internal/payments/{order}", headers=payments.internal_headers
    )


async def idempotency_rows(payments: PaymentsService) -> int:
    async with payments.runtime.database.read_sessions() as session:
        count = await session.scalar(select(func.count()).select_from(IDEMPOTENCY_KEYS))
    return int(count or 0)


async def test_a_replay_answers_the_orders_payment_as_it_is_now(payments: PaymentsService) -> None:
    user = uuid.uuid4()
    body = order_body("order-1", user)
    first = await pay_for_order(payments, body, "order-payment:order-1")
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "processing"
    await payments.settle()
    again = await pay_for_order(payments, body, "order-payment:order-1")
    assert again.status_code == 201, again.text
    assert again.json()["paymentId"] == first.json()["paymentId"]
    assert again.json()["status"] == "succeeded"
    assert await payments.payment_count(order_reference="order-1") == 1
    assert len(await payments.events("payment.succeeded")) == 1
    assert await idempotency_rows(payments) == 0


async def test_the_key_defaults_to_the_order(payments: PaymentsService) -> None:
    body = order_body("order-2", uuid.uuid4())
    first = await pay_for_order(payments, body)
    again = await pay_for_order(payments, body)
    assert first.status_code == again.status_code == 201
    assert again.json()["paymentId"] == first.json()["paymentId"]
    assert await payments.payment_count(order_reference="order-2") == 1


async def test_the_same_order_asking_for_something_else_is_refused(
    payments: PaymentsService,
) -> None:
    user = uuid.uuid4()
    key = "order-payment:order-3"
    assert (await pay_for_order(payments, order_body("order-3", user), key)).status_code == 201
    await payments.settle()
    others = [
        order_body("order-3", user, amount="10.01"),
        order_body("order-3", user, currency="EUR"),
        order_body("order-3", uuid.uuid4()),
    ]
    for other in others:
        refused = await pay_for_order(payments, other, key)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "idempotency_key_reused"
    # Another key for an order that is paid: the order is paid, whatever it asks.
    paid = await pay_for_order(payments, order_body("order-3", user), "another-key")
    assert paid.status_code == 409
    assert paid.json()["code"] == "order_already_paid"
    assert await payments.payment_count(order_reference="order-3") == 1


async def test_a_waiting_payment_is_not_resumed_with_another_token(
    payments: PaymentsService,
) -> None:
    flaky = Unreachable(payments.provider, failures=1)
    payments.deps.provider = flaky  # type: ignore[assignment]
    user = uuid.uuid4()
    lost = await pay_for_order(payments, order_body("order-4", user))
    assert lost.status_code == 503
    other_token = await pay_for_order(payments, order_body("order-4", user, token="tok_amex"))
    assert other_token.status_code == 422
    assert other_token.json()["code"] == "idempotency_key_reused"
    retry = await pay_for_order(payments, order_body("order-4", user))
    assert retry.status_code == 201, retry.text
    await payments.settle()
    assert len(set(flaky.keys)) == 1  # asked twice, under one provider key
    state = await payment_of_order(payments, "order-4")
    assert state.json()["paymentId"] == retry.json()["paymentId"]
    assert state.json()["status"] == "succeeded"
    assert len(await payments.events("payment.succeeded")) == 1


async def test_a_failed_attempt_replays_and_a_new_key_may_try_again(
    payments: PaymentsService,
) -> None:
    user = uuid.uuid4()
    declined = order_body("order-5", user, token="tok_chargeDeclined")
    first = await pay_for_order(payments, declined, "attempt-1")
    await payments.settle()
    replay = await pay_for_order(payments, declined, "attempt-1")
    assert replay.json()["paymentId"] == first.json()["paymentId"]
    assert replay.json()["status"] == "failed"
    assert replay.json()["failureCode"] == "card_declined"
    failed = await payment_of_order(payments, "order-5")
    assert failed.json()["paymentId"] == first.json()["paymentId"]
    retry = await pay_for_order(payments, order_body("order-5", user), "attempt-2")
    assert retry.status_code == 201
    assert retry.json()["paymentId"] != first.json()["paymentId"]
    await payments.settle()
    # The live payment, not the latest attempt, answers for the order.
    late = await pay_for_order(payments, declined, "attempt-3")
    assert late.status_code == 409
    live = await payment_of_order(payments, "order-5")
    assert live.json()["paymentId"] == retry.json()["paymentId"]
    assert live.json()["status"] == "succeeded"
    assert live.json()["refunds"] == []


async def test_an_order_without_payment_is_404(payments: PaymentsService) -> None:
    missing = await payment_of_order(payments, "order-none")
    assert missing.status_code == 404
    assert missing.json()["code"] == "payment_not_found"


async def test_the_orders_payment_shows_its_refunds(payments: PaymentsService) -> None:
    user = uuid.uuid4()
    paid = await pay_for_order(payments, order_body("order-6", user))
    await payments.settle()
    refunded = await payments.client.post(
        "/internal/payments/order-6/refund",
        json={"amount": "4.00"},
        headers={**payments.internal_headers, "Idempotency-Key": "refund:order-6"},
    )
    assert refunded.status_code == 200, refunded.text
    await payments.settle()
    state = (await payment_of_order(payments, "order-6")).json()
    assert state["paymentId"] == paid.json()["paymentId"]
    assert state["status"] == "partially_refunded"
    assert [refund["amount"] for refund in state["refunds"]] == ["4.00"]
    replay = await pay_for_order(payments, order_body("order-6", user))
    assert replay.json()["refunds"] == state["refunds"]


async def test_an_orders_payment_takes_few_statements(payments: PaymentsService) -> None:
    """Recorded, answered, settled by its webhook: each write one statement, no reads first."""
    statements: list[str] = []
    # Only what this payment runs (its webhook's delivery inherits the context), not
    # what the service's background tasks do meanwhile.
    ours: ContextVar[bool] = ContextVar("ours", default=False)

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if ours.get():
            statements.append(" ".join(statement.split()[:3]).upper())

    engine = payments.runtime.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", note)
    token = ours.set(True)
    try:
        paid = await pay_for_order(payments, order_body("order-7", uuid.uuid4()))
        await payments.settle()
    finally:
        ours.reset(token)
        event.remove(engine, "before_cursor_execute", note)
    assert paid.status_code == 201
    assert [s for s in statements if not s.startswith("BEGIN")] == [
        "INSERT INTO PAYMENTS",
        "UPDATE PAYMENTS SET",
        "UPDATE PAYMENTS SET",
        "INSERT INTO PROVIDER_EVENTS",
        "INSERT INTO OUTBOX",
    ]
    state = (await payment_of_order(payments, "order-7")).json()
    assert state["status"] == "succeeded"
    assert state["revision"] == 3
