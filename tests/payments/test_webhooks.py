"""Provider webhooks: verified, applied once per event id, the rest answered 200 harmlessly."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from sqlalchemy import select

from panthera.payments.models import ProviderEventRecord
from panthera.payments.providers import InvalidWebhook
from panthera.payments.providers.stripe_webhooks import SIGNATURE_HEADER, signature_header
from tests.payments.conftest import PaymentsService


async def deliver(payments: PaymentsService, body: bytes) -> dict[str, object]:
    response = await payments.client.post(
        "/webhooks/test", content=body, headers=payments.provider.signed_headers(body)
    )
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


async def test_a_redelivered_webhook_changes_nothing(payments: PaymentsService) -> None:
    user = payments.caller()
    payment = await payments.pay(user)
    assert payment["status"] == "succeeded"
    webhook = payments.provider.webhooks[-1]
    again = await deliver(payments, webhook)
    assert again == {"received": True, "duplicate": True, "outcome": "duplicate"}
    assert (await payments.get(user, payment["paymentId"])) == payment
    assert len(await payments.events("payment.succeeded")) == 1
    async with payments.runtime.database.read_sessions() as session:
        records = list((await session.execute(select(ProviderEventRecord))).scalars())
    assert [(r.outcome, str(r.payment_id)) for r in records] == [("applied", payment["paymentId"])]


async def test_concurrent_copies_of_one_webhook_apply_once(payments: PaymentsService) -> None:
    payments.provider.delivery_delay_seconds = 60  # hold the provider's own delivery back
    user = payments.caller()
    payment = await payments.pay(user, settle=False)
    webhook = payments.provider.webhooks[-1]
    answers = await asyncio.gather(*(deliver(payments, webhook) for _ in range(10)))
    assert sorted(str(a["outcome"]) for a in answers) == ["applied"] + ["duplicate"] * 9
    assert (await payments.get(user, payment["paymentId"]))["status"] == "succeeded"
    assert len(await payments.events("payment.succeeded")) == 1


async def test_a_new_event_about_a_settled_payment_is_ignored(payments: PaymentsService) -> None:
    user = payments.caller()
    payment = await payments.pay(user, token="tok_chargeDeclined")
    failed = orjson.loads(payments.provider.webhooks[-1])
    # The same news under another event id, then a contradicting one: a settled
    # payment stays settled.
    for event_type, status in (
        ("payment_intent.payment_failed", "requires_payment_method"),
        ("payment_intent.succeeded", "succeeded"),
    ):
        event = {**failed, "id": f"evt_other_{event_type}", "type": event_type}
        event["data"] = {"object": {**failed["data"]["object"], "status": status}}
        answer = await deliver(payments, orjson.dumps(event))
        assert answer["outcome"] == "ignored"
    assert (await payments.get(user, payment["paymentId"]))["status"] == "failed"
    assert len(await payments.events("payment.failed")) == 1
    assert not await payments.events("payment.succeeded")


async def test_unknown_payments_and_event_types_are_acknowledged(
    payments: PaymentsService,
) -> None:
    unknown = {
        "id": "evt_unknown_payment",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_nobody", "object": "payment_intent", "metadata": {}}},
    }
    assert (await deliver(payments, orjson.dumps(unknown)))["outcome"] == "unmatched"
    other = {"id": "evt_customer", "type": "customer.created", "data": {"object": {"id": "c"}}}
    assert (await deliver(payments, orjson.dumps(other)))["outcome"] == "ignored"
    assert (await deliver(payments, orjson.dumps(other)))["outcome"] == "duplicate"


async def test_forged_stale_or_unsigned_webhooks_are_400(payments: PaymentsService) -> None:
    user = payments.caller()
    payments.provider.delivery_delay_seconds = 60
    payment = await payments.pay(user, settle=False)
    webhook = payments.provider.webhooks[-1]
    secret = payments.settings.test_provider_webhook_secret.get_secret_value()
    now = int(time.time())
    attempts = {
        "bad_signature": {SIGNATURE_HEADER: signature_header(webhook, "whsec_forged", now)},
        "timestamp_outside_tolerance": {
            SIGNATURE_HEADER: signature_header(webhook, secret, now - 600)
        },
        "missing_signature": {},
    }
    for reason, headers in attempts.items():
        response = await payments.client.post("/webhooks/test", content=webhook, headers=headers)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_webhook"
        assert response.json()["reason"] == reason
    tampered = webhook.replace(b'"succeeded"', b'"succeeded" ')
    response = await payments.client.post(
        "/webhooks/test",
        content=tampered,
        headers={SIGNATURE_HEADER: signature_header(webhook, secret, now)},
    )
    assert response.status_code == 400
    assert (await payments.get(user, payment["paymentId"]))["status"] == "processing"
    assert not await payments.events("payment.succeeded")


async def test_the_test_providers_own_deliveries_are_verified(payments: PaymentsService) -> None:
    """Its webhooks skip HTTP, not the signature check: a forged one changes nothing."""
    user = payments.caller()
    payments.provider.delivery_delay_seconds = 60
    payment = await payments.pay(user, settle=False)
    webhook = payments.provider.webhooks[-1]
    deliver_in_process = payments.provider.deliver
    assert deliver_in_process is not None
    forged = {SIGNATURE_HEADER: signature_header(webhook, "whsec_forged", int(time.time()))}
    with pytest.raises(InvalidWebhook):
        await deliver_in_process(forged, webhook)
    assert (await payments.get(user, payment["paymentId"]))["status"] == "processing"
    assert not await payments.events("payment.succeeded")
    await deliver_in_process(payments.provider.signed_headers(webhook), webhook)
    assert (await payments.get(user, payment["paymentId"]))["status"] == "succeeded"
    assert len(await payments.events("payment.succeeded")) == 1
    again = await deliver(payments, webhook)
    assert again["outcome"] == "duplicate"


async def test_only_the_configured_provider_has_a_webhook(payments: PaymentsService) -> None:
    response = await payments.client.post("/webhooks/stripe", content=b"{}")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_provider"


async def test_a_webhook_may_beat_the_providers_answer(payments: PaymentsService) -> None:
    """The outcome arrives before the provider's answer was applied: it still settles."""
    provider = payments.provider
    real = provider.create_payment
    user = payments.caller()

    async def answer_after_the_webhook(**kwargs: object) -> object:
        answer = await real(**kwargs)  # type: ignore[arg-type]
        await provider.drain()
        return answer

    provider.create_payment = answer_after_the_webhook  # type: ignore[method-assign,assignment]
    payment = await payments.pay(user, settle=False)
    assert payment["status"] == "succeeded"
    assert len(await payments.events("payment.succeeded")) == 1
