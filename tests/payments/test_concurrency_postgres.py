"""The payments service on PostgreSQL, where requests really race: row locks, unique
indexes and idempotency claims must still take the money once and refund it at most once.

The database is fresh, on the server of ``PANTHERA_TEST_DATABASE_URL``, dropped
afterwards; a server that does not answer FAILS the test, never skips it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from panthera.payments.models import Payment
from panthera.payments.reconciler import Reconciler
from panthera.payments.webhooks import receive_webhook
from tests.conftest import make_settings
from tests.integration.conftest import (
    DATABASE_URL,
    PostgresServer,
    RoundTrips,
    ServiceDatabases,
    unique_prefix,
)
from tests.payments.conftest import PaymentsService, start_payments
from tests.payments.test_reconciler import RefundsAnswered
from tests.payments.test_webhooks import deliver

pytestmark = pytest.mark.integration


@pytest.fixture
async def pg_payments(tmp_path: Path) -> AsyncIterator[PaymentsService]:
    databases = ServiceDatabases(PostgresServer(DATABASE_URL), unique_prefix())
    try:
        await databases.create(["payments"])
        settings = make_settings(
            tmp_path,
            database_url=databases.url_template,
            # Its one pass at start-up only: the tests that count round trips count the
            # requests' own, and the reconciler's tests run replicas of their own.
            payment_reconcile_poll_seconds=3600,
        )
        service = await start_payments(settings)
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
    assert len(await payments.events("payment.succeeded")) == 2


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
    assert len(await payments.events("payment.succeeded")) == 1


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
    assert len(await payments.events("payment.succeeded")) == 1


def payment_trips(trips: RoundTrips) -> list[str]:
    """The messages ``trips`` saw, less those of the service's loops on their own clocks:
    the relay's tasks (they delete handed-off events' rows, poll, report the lag; a
    poll's claim may begin before the count and end inside it) and any ORM session's
    (asyncpg's transaction API, whose commands end in ";")."""
    return [
        verb
        for query, verb, sender in zip(trips.sent, trips.verbs(), trips.senders, strict=True)
        if not query.rstrip().endswith(";")
        and not sender.startswith("outbox-")
        and not ("outbox" in query and not query.lstrip().startswith("WITH"))
    ]


async def deliver_here(payments: PaymentsService, body: bytes) -> str:
    """A webhook of the test provider, applied as its own deliveries are: its outcome."""
    deps = payments.deps
    return await receive_webhook(
        payments.runtime.uow,
        deps.provider,
        payments.provider.signed_headers(body),
        body,
        transaction=deps.transaction,
        written=deps.written,
    )


async def events_of(payments: PaymentsService, event_type: str, payment_id: str) -> list[Any]:
    rows = await payments.events(event_type)
    payloads = [row.payload for row in rows]
    return [payload for payload in payloads if payload["payment_id"] == payment_id]


async def _webhook_round_trips(
    payments: PaymentsService, token: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], list[str], str]:
    """A payment taken here whose webhook is then delivered as the provider does: its
    final state, the messages the webhook sent PostgreSQL, and the webhook's outcome."""
    payments.provider.delivery_delay_seconds = 60
    user = payments.caller()
    warm = await payments.pay(user, token=token, settle=False)  # statements prepared
    await deliver(payments, payments.provider.webhooks[-1])
    payment = await payments.pay(user, token=token, settle=False)
    assert payment["status"] == "processing"
    trips = RoundTrips(monkeypatch)
    outcome = await deliver_here(payments, payments.provider.webhooks[-1])
    sent = payment_trips(trips)
    monkeypatch.undo()
    assert warm["paymentId"] != payment["paymentId"]
    return await payments.get(user, payment["paymentId"]), sent, outcome


async def test_a_webhook_settles_a_payment_taken_here_in_one_statement(
    pg_payments: PaymentsService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payment as this process wrote it stands in for a read: settled, recorded and
    its event written in one round trip, with the row's own values."""
    payments = pg_payments
    state, sent, outcome = await _webhook_round_trips(payments, "tok_visa", monkeypatch)
    assert outcome == "applied"
    assert sent == ["WITH"]
    assert state["status"] == "succeeded"
    (event,) = await events_of(payments, "payment.succeeded", state["paymentId"])
    assert event["revision"] == state["revision"] == 3
    assert event["provider_payment_id"] == state["providerPaymentId"]
    assert event["amount"] == 1000
    assert datetime.fromisoformat(event["occurred_at"]) == datetime.fromisoformat(
        state["updatedAt"]
    )


async def test_a_declined_webhook_settles_in_one_statement_with_its_reason(
    pg_payments: PaymentsService, monkeypatch: pytest.MonkeyPatch
) -> None:
    payments = pg_payments
    state, sent, outcome = await _webhook_round_trips(
        payments, "tok_chargeDeclinedInsufficientFunds", monkeypatch
    )
    assert (outcome, sent) == ("applied", ["WITH"])
    assert state["status"] == "failed"
    assert state["failureCode"] == "insufficient_funds"
    (event,) = await events_of(payments, "payment.failed", state["paymentId"])
    assert (event["reason"], event["revision"]) == ("insufficient_funds", state["revision"])


async def test_a_webhook_for_a_payment_changed_elsewhere_takes_the_general_way(
    pg_payments: PaymentsService,
) -> None:
    """The row moved on since this process wrote it (a replica's reconciler settled it):
    the one-statement way writes nothing, and the webhook is applied as before."""
    payments = pg_payments
    payments.provider.delivery_delay_seconds = 60
    user = payments.caller()
    payment = await payments.pay(user, settle=False)
    payment_id = uuid.UUID(payment["paymentId"])
    async with payments.runtime.database.sessions() as session:
        await session.execute(
            update(Payment).where(Payment.id == payment_id).values(revision=Payment.revision + 1)
        )
        await session.commit()
    outcome = await deliver_here(payments, payments.provider.webhooks[-1])
    assert outcome == "applied"
    state = await payments.get(user, payment["paymentId"])
    assert (state["status"], state["revision"]) == ("succeeded", 4)
    assert len(await payments.events("payment.succeeded")) == 1
    # And the same webhook again is a duplicate, whichever way it takes.
    assert await deliver_here(payments, payments.provider.webhooks[-1]) == "duplicate"


async def test_the_sagas_payment_costs_three_round_trips_webhook_included(
    pg_payments: PaymentsService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test provider's webhook comes at once, while the provider's answer is still
    being recorded: it waits for that record, then settles in one statement."""
    payments = pg_payments
    user = uuid.uuid4()

    async def pay(order: str) -> None:
        response = await payments.client.post(
            "/internal/payments",
            json={"orderId": order, "userId": str(user), "amount": "10.00", "currency": "USD"}
            | {"paymentMethod": "tok_visa"},
            headers=payments.internal_headers,
        )
        assert response.status_code == 201, response.text
        await payments.settle()

    await pay("order-warm")
    trips = RoundTrips(monkeypatch)
    await pay("order-counted")
    # The payment recorded, moved to processing, then settled with its record and event.
    assert payment_trips(trips) == ["INSERT", "UPDATE", "WITH"]
    monkeypatch.undo()
    assert len(await payments.events("payment.succeeded")) == 2


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
    assert len(await payments.events("payment.refunded")) == 3


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
    assert len(await payments.events("payment.succeeded")) == 7
    assert len(await payments.events("payment.failed")) == 4
    assert (await payments.get(user, refunded["paymentId"]))["status"] == "refunded"
    assert len(await payments.events("payment.refunded")) == 1
