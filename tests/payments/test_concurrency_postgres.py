"""The payments service on PostgreSQL, where requests really race: row locks, unique
indexes and idempotency claims must still take the money once and refund it at most once.

The database is fresh, on the server of ``PANTHERA_TEST_DATABASE_URL``, dropped
afterwards; a server that does not answer FAILS the test, never skips it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from panthera.payments.reconciler import Reconciler
from tests.conftest import make_settings
from tests.integration.conftest import DATABASE_URL, PostgresServer, ServiceDatabases, unique_prefix
from tests.payments.conftest import PaymentsService, start_payments
from tests.payments.test_reconciler import RefundsAnswered
from tests.payments.test_webhooks import deliver

pytestmark = pytest.mark.integration


@pytest.fixture
async def pg_payments(tmp_path: Path) -> AsyncIterator[PaymentsService]:
    databases = ServiceDatabases(PostgresServer(DATABASE_URL), unique_prefix())
    try:
        await databases.create(["payments"])
        service = await start_payments(make_settings(tmp_path, database_url=databases.url_template))
        try:
            yield service
        finally:
            await service.client.aclose()
            await service.platform.stop()
    finally:
        await databases.drop()


def body(order: str) -> dict[str, str]:
    return {"orderId": order, "amount": "10.00", "currency": "USD", "paymentMethod": "tok_visa"}


async def test_duplicates_and_rivals_take_the_money_once(pg_payments: PaymentsService) -> None:
    payments = pg_payments
    assert not payments.runtime.database.is_sqlite
    user = payments.caller()
    same_key = [
        payments.client.post("/payments", json=body("order-1"), headers=user.with_key("k"))
        for _ in range(20)
    ]
    rival_keys = [
        payments.client.post("/payments", json=body("order-2"), headers=user.with_key(f"k{n}"))
        for n in range(20)
    ]
    responses = await asyncio.gather(*same_key, *rival_keys)
    first, second = responses[:20], responses[20:]
    assert {r.status_code for r in first} <= {201, 409}
    assert len({r.content for r in first if r.status_code == 201}) == 1
    assert sum(r.status_code == 201 for r in second) == 1
    assert {r.json()["code"] for r in second if r.status_code != 201} <= {
        "payment_in_progress",
        "order_already_paid",
    }
    await payments.settle()
    assert await payments.payment_count(order_reference="order-1") == 1
    assert await payments.payment_count(order_reference="order-2") == 1
    assert len(await payments.outbox("payment.succeeded")) == 2


async def test_the_sagas_duplicates_and_rivals_make_one_payment(
    pg_payments: PaymentsService,
) -> None:
    """Without idempotency key rows, the unique constraints alone keep it to one payment."""
    payments = pg_payments
    user = uuid.uuid4()
    order = {"orderId": "order-9", "userId": str(user), "amount": "10.00", "currency": "USD"}
    duplicates = [
        payments.client.post(
            "/internal/payments",
            json={**order, "paymentMethod": "tok_visa"},
            headers=payments.internal_headers,
        )
        for _ in range(20)
    ]
    rivals = [
        payments.client.post(
            "/internal/payments",
            json={**order, "paymentMethod": "tok_visa"},
            headers={**payments.internal_headers, "Idempotency-Key": f"rival-{n}"},
        )
        for n in range(10)
    ]
    responses = await asyncio.gather(*duplicates, *rivals)
    assert {r.status_code for r in responses} <= {201, 409}, [r.text for r in responses]
    # Whichever request came first, every answer of its key is its payment.
    assert len({r.json()["paymentId"] for r in responses if r.status_code == 201}) == 1
    same, other = responses[:20], responses[20:]
    assert all(r.status_code == 201 for r in same) or not any(r.status_code == 201 for r in same)
    assert sum(r.status_code == 201 for r in other) <= 1
    assert {r.json()["code"] for r in responses if r.status_code == 409} <= {
        "payment_in_progress",
        "order_already_paid",
    }
    await payments.settle()
    assert await payments.payment_count(order_reference="order-9") == 1
    assert len(await payments.outbox("payment.succeeded")) == 1


async def test_webhook_copies_apply_once(pg_payments: PaymentsService) -> None:
    payments = pg_payments
    payments.provider.delivery_delay_seconds = 60
    user = payments.caller()
    payment = await payments.pay(user, settle=False)
    webhook = payments.provider.webhooks[-1]
    responses = await asyncio.gather(
        *(
            payments.client.post(
                "/webhooks/test", content=webhook, headers=payments.provider.signed_headers(webhook)
            )
            for _ in range(10)
        )
    )
    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert outcomes == ["applied"] + ["duplicate"] * 9
    assert (await payments.get(user, payment["paymentId"]))["status"] == "succeeded"
    assert len(await payments.outbox("payment.succeeded")) == 1


async def test_racing_refunds_never_give_back_more_than_was_taken(
    pg_payments: PaymentsService,
) -> None:
    payments = pg_payments
    user, admin = payments.caller(), payments.admin()
    payment = await payments.pay(user, amount="10.00")
    responses = await asyncio.gather(
        *(
            payments.client.post(
                f"/payments/{payment['paymentId']}/refunds",
                json={"amount": "3.00"},
                headers=admin.with_key(str(uuid.uuid4())),
            )
            for _ in range(8)
        )
    )
    assert sorted(r.status_code for r in responses) == [201] * 3 + [409] * 5
    state = await payments.get(user, payment["paymentId"])
    assert state["amountRefunded"] == "9.00"
    assert state["status"] == "partially_refunded"
    assert len(await payments.outbox("payment.refunded")) == 3


async def test_replicas_reconciling_at_once_settle_each_payment_once(
    pg_payments: PaymentsService,
) -> None:
    payments = pg_payments
    payments.provider.deliver = None
    user = payments.caller()
    paid = [await payments.pay(user, settle=False) for _ in range(6)]
    declined = [
        await payments.pay(user, token="tok_chargeDeclined", settle=False) for _ in range(4)
    ]
    # And a refund whose answer was lost.
    refunded = await payments.pay(user, token="tok_mastercard", settle=False)
    await deliver(payments, payments.provider.webhooks[-1])
    payments.deps.provider = RefundsAnswered(payments.provider, "lost")
    admin = payments.admin()
    lost = await payments.client.post(
        f"/payments/{refunded['paymentId']}/refunds", json={}, headers=admin.with_key("r")
    )
    assert lost.status_code == 503
    payments.deps.provider = payments.provider
    replicas = [
        Reconciler(
            uows=payments.runtime.uow,
            provider=lambda: payments.deps.provider,
            skip_locked=True,
            after_seconds=0.05,
            batch_size=3,
        )
        for _ in range(4)
    ]
    await asyncio.sleep(0.1)
    passes = await asyncio.gather(*(replica.reconcile_once() for replica in replicas))
    while any(p.claimed for p in passes):
        passes = await asyncio.gather(*(replica.reconcile_once() for replica in replicas))
    for payment in paid:
        assert (await payments.get(user, payment["paymentId"]))["status"] == "succeeded"
    for payment in declined:
        assert (await payments.get(user, payment["paymentId"]))["status"] == "failed"
    assert len(await payments.outbox("payment.succeeded")) == 7
    assert len(await payments.outbox("payment.failed")) == 4
    assert (await payments.get(user, refunded["paymentId"]))["status"] == "refunded"
    assert len(await payments.outbox("payment.refunded")) == 1
