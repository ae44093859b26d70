"""Refunds: full, partial, never more than was taken; the admin API and the saga's call."""

from __future__ import annotations

import uuid
from typing import Any

from tests.payments.conftest import Caller, PaymentsService


async def refund(
    payments: PaymentsService,
    admin: Caller,
    payment_id: str,
    amount: str | None = None,
    *,
    key: str | None = None,
    reason: str | None = None,
) -> Any:
    body: dict[str, str] = {}
    if amount is not None:
        body["amount"] = amount
    if reason is not None:
        body["reason"] = reason
    return await payments.client.post(
        f"/payments/{payment_id}/refunds",
        json=body,
        headers=admin.with_key(key or str(uuid.uuid4())),
    )


async def test_a_full_refund(payments: PaymentsService) -> None:
    user, admin = payments.caller(), payments.admin()
    payment = await payments.pay(user, amount="25.00")
    response = await refund(payments, admin, payment["paymentId"], reason="damaged")
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == "25.00"
    assert response.json()["status"] == "succeeded"
    assert response.json()["reason"] == "damaged"
    await payments.settle()  # the provider's refund.updated webhook changes nothing
    after = await payments.get(user, payment["paymentId"])
    assert after["status"] == "refunded"
    assert after["amountRefunded"] == "25.00"
    assert [r["status"] for r in after["refunds"]] == ["succeeded"]
    (event,) = await payments.events("payment.refunded")
    assert event.subject == payment["orderId"]
    assert event.payload["refund_amount"] == 2500
    assert event.payload["amount_refunded"] == 2500
    assert event.payload["fully_refunded"] is True
    assert event.payload["reason"] == "damaged"


async def test_partial_refunds_up_to_the_amount_and_no_further(
    payments: PaymentsService,
) -> None:
    user, admin = payments.caller(), payments.admin()
    payment = await payments.pay(user, amount="10.00")
    first = await refund(payments, admin, payment["paymentId"], "3.00")
    assert first.status_code == 201
    state = await payments.get(user, payment["paymentId"])
    assert (state["status"], state["amountRefunded"]) == ("partially_refunded", "3.00")
    too_much = await refund(payments, admin, payment["paymentId"], "7.01")
    assert too_much.status_code == 409
    assert too_much.json()["code"] == "refund_exceeds_capture"
    assert too_much.json()["remaining"] == "7.00"
    rest = await refund(payments, admin, payment["paymentId"])
    assert rest.json()["amount"] == "7.00"
    state = await payments.get(user, payment["paymentId"])
    assert (state["status"], state["amountRefunded"]) == ("refunded", "10.00")
    nothing_left = await refund(payments, admin, payment["paymentId"], "0.01")
    assert nothing_left.status_code == 409
    events = await payments.events("payment.refunded")
    assert [(e.payload["refund_amount"], e.payload["amount_refunded"]) for e in events] == [
        (300, 300),
        (700, 1000),
    ]
    assert [e.payload["fully_refunded"] for e in events] == [False, True]


async def test_more_than_the_payment_at_once_is_refused(payments: PaymentsService) -> None:
    payment = await payments.pay(payments.caller(), amount="10.00")
    response = await refund(payments, payments.admin(), payment["paymentId"], "10.01")
    assert response.status_code == 409
    assert response.json()["code"] == "refund_exceeds_capture"
    zero = await refund(payments, payments.admin(), payment["paymentId"], "0.00")
    assert zero.status_code == 400


async def test_refunds_replay_by_idempotency_key(payments: PaymentsService) -> None:
    user, admin = payments.caller(), payments.admin()
    payment = await payments.pay(user, amount="10.00")
    first = await refund(payments, admin, payment["paymentId"], "4.00", key="refund-1")
    again = await refund(payments, admin, payment["paymentId"], "4.00", key="refund-1")
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await refund(payments, admin, payment["paymentId"], "5.00", key="refund-1")
    assert other.status_code == 422
    state = await payments.get(user, payment["paymentId"])
    assert state["amountRefunded"] == "4.00"
    assert len(state["refunds"]) == 1


async def test_only_admins_refund_and_only_payments_that_succeeded(
    payments: PaymentsService,
) -> None:
    user, admin = payments.caller(), payments.admin()
    payment = await payments.pay(user)
    own = await refund(payments, user, payment["paymentId"])
    assert own.status_code == 403
    declined = await payments.pay(user, token="tok_chargeDeclined")
    response = await refund(payments, admin, declined["paymentId"])
    assert response.status_code == 409
    assert response.json()["code"] == "payment_not_refundable"
    missing = await refund(payments, admin, str(uuid.uuid4()))
    assert missing.status_code == 404
    no_key = await payments.client.post(
        f"/payments/{payment['paymentId']}/refunds", json={}, headers=admin.headers
    )
    assert no_key.status_code == 400
    assert no_key.json()["code"] == "idempotency_key_required"


# ----------------------------------------------------------- the orders saga


async def test_the_saga_pays_idempotently_by_order(payments: PaymentsService) -> None:
    user_id = str(uuid.uuid4())
    body = {
        "orderId": "order-saga-1",
        "userId": user_id,
        "amount": "42.00",
        "currency": "EUR",
        "paymentMethod": "tok_visa",
    }
    refused = await payments.client.post("/internal/payments", json=body)
    assert refused.status_code == 403
    first = await payments.client.post(
        "/internal/payments", json=body, headers=payments.internal_headers
    )
    assert first.status_code == 201, first.text
    assert first.json()["userId"] == user_id
    again = await payments.client.post(
        "/internal/payments", json=body, headers=payments.internal_headers
    )
    assert again.content == first.content
    changed = await payments.client.post(
        "/internal/payments", json={**body, "amount": "41.00"}, headers=payments.internal_headers
    )
    assert changed.status_code == 422
    await payments.settle()
    assert await payments.payment_count(order_reference="order-saga-1") == 1
    (event,) = await payments.events("payment.succeeded")
    assert event.payload["user_id"] == user_id


async def test_the_saga_refunds_what_is_left_once(payments: PaymentsService) -> None:
    user, admin = payments.caller(), payments.admin()
    payment = await payments.pay(user, order="order-saga-2", amount="30.00")
    await refund(payments, admin, payment["paymentId"], "10.00")
    url = "/internal/payments/order-saga-2/refund"
    assert (await payments.client.post(url)).status_code == 403
    first = await payments.client.post(
        url, json={"reason": "order_cancelled"}, headers=payments.internal_headers
    )
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "refunded"
    assert first.json()["amountRefunded"] == "30.00"
    again = await payments.client.post(
        url, json={"reason": "order_cancelled"}, headers=payments.internal_headers
    )
    assert again.content == first.content
    assert len(await payments.events("payment.refunded")) == 2


async def test_the_saga_refund_of_a_failed_or_unknown_payment(payments: PaymentsService) -> None:
    user = payments.caller()
    await payments.pay(user, order="order-saga-3", token="tok_chargeDeclined")
    nothing = await payments.client.post(
        "/internal/payments/order-saga-3/refund", headers=payments.internal_headers
    )
    assert nothing.status_code == 200
    assert nothing.json()["status"] == "failed"
    assert nothing.json()["refunds"] == []
    unknown = await payments.client.post(
        "/internal/payments/order-nobody/refund", headers=payments.internal_headers
    )
    assert unknown.status_code == 404
    payments.provider.delivery_delay_seconds = 60
    await payments.pay(user, order="order-saga-4", settle=False)
    waiting = await payments.client.post(
        "/internal/payments/order-saga-4/refund", headers=payments.internal_headers
    )
    assert waiting.status_code == 409
    assert waiting.json()["code"] == "payment_in_progress"
