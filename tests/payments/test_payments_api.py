"""Taking payments through the service's API, with the built-in test provider."""

from __future__ import annotations

import uuid

import pytest

from tests.payments.conftest import PaymentsService


async def test_a_payment_is_processing_then_succeeds_by_webhook(
    payments: PaymentsService,
) -> None:
    user = payments.caller()
    created = await payments.pay(user, order="order-1", amount="19.99", settle=False)
    assert created["status"] == "processing"
    assert created["orderId"] == "order-1"
    assert created["amount"] == "19.99"
    assert created["userId"] == str(user.user_id)
    assert created["providerPaymentId"].startswith("pi_test_")
    await payments.settle()
    settled = await payments.get(user, created["paymentId"])
    assert settled["status"] == "succeeded"
    assert settled["revision"] > created["revision"]
    (event,) = await payments.events("payment.succeeded")
    assert event.subject == "order-1"
    assert event.payload["payment_id"] == created["paymentId"]
    assert event.payload["amount"] == 1999
    assert event.payload["currency"] == "USD"
    assert event.payload["user_id"] == str(user.user_id)


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_chargeDeclinedProcessingError", "processing_error"),
        ("tok_processingError", "processing_error"),
    ],
)
async def test_declines_fail_with_their_reason(
    payments: PaymentsService, token: str, code: str
) -> None:
    user = payments.caller()
    payment = await payments.pay(user, token=token)
    assert payment["status"] == "failed"
    assert payment["failureCode"] == code
    (event,) = await payments.events("payment.failed")
    assert event.payload["reason"] == code
    assert not await payments.events("payment.succeeded")


async def test_an_unknown_token_fails_at_once(payments: PaymentsService) -> None:
    payment = await payments.pay(payments.caller(), token="tok_madeUp", settle=False)
    assert payment["status"] == "failed"
    assert payment["failureCode"] == "invalid_payment_method"
    assert len(await payments.events("payment.failed")) == 1


async def test_another_attempt_after_a_failure_is_allowed_but_never_two_live_ones(
    payments: PaymentsService,
) -> None:
    user = payments.caller()
    failed = await payments.pay(user, order="order-2", token="tok_chargeDeclined")
    assert failed["status"] == "failed"
    paid = await payments.pay(user, order="order-2")
    assert paid["status"] == "succeeded"
    again = await payments.client.post(
        "/payments",
        json={
            "orderId": "order-2",
            "amount": "10.00",
            "currency": "USD",
            "paymentMethod": "tok_visa",
        },
        headers=user.with_key(str(uuid.uuid4())),
    )
    assert again.status_code == 409
    assert again.json()["code"] == "order_already_paid"
    assert await payments.payment_count(order_reference="order-2") == 2


async def test_a_second_payment_while_the_first_waits_is_a_conflict(
    payments: PaymentsService,
) -> None:
    payments.provider.delivery_delay_seconds = 60  # the outcome is still to come
    user = payments.caller()
    await payments.pay(user, order="order-3", settle=False)
    second = await payments.client.post(
        "/payments",
        json={
            "orderId": "order-3",
            "amount": "10.00",
            "currency": "USD",
            "paymentMethod": "tok_visa",
        },
        headers=user.with_key(str(uuid.uuid4())),
    )
    assert second.status_code == 409
    assert second.json()["code"] == "payment_in_progress"


async def test_only_the_owner_or_an_admin_sees_a_payment(payments: PaymentsService) -> None:
    owner = payments.caller()
    payment = await payments.pay(owner)
    stranger = await payments.client.get(
        f"/payments/{payment['paymentId']}", headers=payments.caller().headers
    )
    assert stranger.status_code == 404
    assert stranger.json()["code"] == "payment_not_found"
    admin = await payments.get(payments.admin(), payment["paymentId"])
    assert admin["paymentId"] == payment["paymentId"]
    anonymous = await payments.client.get(f"/payments/{payment['paymentId']}")
    assert anonymous.status_code == 401
    missing = await payments.client.get(f"/payments/{uuid.uuid4()}", headers=owner.headers)
    assert missing.status_code == 404


async def test_lists_show_a_user_their_own_payments(payments: PaymentsService) -> None:
    alice, bob = payments.caller(), payments.caller()
    first = await payments.pay(alice, order="order-a1")
    await payments.pay(alice, order="order-a2")
    await payments.pay(bob, order="order-b1")
    mine = await payments.client.get("/payments", headers=alice.headers)
    assert mine.headers["X-Total-Count"] == "2"
    assert {p["orderId"] for p in mine.json()} == {"order-a1", "order-a2"}
    one = await payments.client.get(
        "/payments", params={"orderId": "order-a1"}, headers=alice.headers
    )
    assert [p["paymentId"] for p in one.json()] == [first["paymentId"]]
    everyone = await payments.client.get("/payments", headers=payments.admin().headers)
    assert everyone.headers["X-Total-Count"] == "3"


async def test_payments_need_a_signed_in_caller(payments: PaymentsService) -> None:
    response = await payments.client.post(
        "/payments",
        json={"orderId": "o", "amount": "1.00", "currency": "USD", "paymentMethod": "tok_visa"},
        headers={"Idempotency-Key": "k"},
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"amount": "0.00"}, "invalid_amount"),
        ({"amount": "1.234"}, "invalid_amount"),
        ({"amount": "12", "currency": "XXX"}, "invalid_amount"),
        ({"amount": "-1.00"}, "invalid_input"),
        ({"amount": 10}, "invalid_input"),
        ({"currency": "usd"}, "invalid_input"),
        ({"paymentMethod": "visa"}, "invalid_input"),
        ({"orderId": ""}, "invalid_input"),
        ({"orderId": "has spaces"}, "invalid_input"),
        ({"extra": True}, "invalid_input"),
    ],
)
async def test_bad_input_is_a_clear_400(
    payments: PaymentsService, body: dict[str, object], code: str
) -> None:
    request = {"orderId": "o-1", "amount": "1.00", "currency": "USD", "paymentMethod": "tok_visa"}
    request.update(body)
    response = await payments.client.post(
        "/payments", json=request, headers=payments.caller().with_key("k")
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert await payments.payment_count() == 0


async def test_zero_decimal_currencies(payments: PaymentsService) -> None:
    payment = await payments.pay(payments.caller(), amount="1500", currency="JPY")
    assert payment["amount"] == "1500"
    (event,) = await payments.events("payment.succeeded")
    assert event.payload["amount"] == 1500


async def test_the_answers_and_the_event_show_the_payment_as_stored(
    payments: PaymentsService,
) -> None:
    user = payments.caller()
    created = await payments.pay(user, order="order-as-stored", settle=False)
    # The answer is built from the settle's RETURNING, not read back: it must be the row.
    assert await payments.get(user, created["paymentId"]) == created
    await payments.settle()
    settled = await payments.get(user, created["paymentId"])
    (event,) = await payments.events("payment.succeeded")
    assert event.payload["revision"] == settled["revision"] == created["revision"] + 1
    assert event.payload["provider_payment_id"] == settled["providerPaymentId"]
