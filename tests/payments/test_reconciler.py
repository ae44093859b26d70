"""The reconciler: payments and refunds whose webhook or answer never came are asked about."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from panthera.payments.models import Payment, Refund
from panthera.payments.providers import (
    ProviderPayment,
    ProviderRefund,
    ProviderUnavailable,
    RefundOutcome,
    StripeProvider,
    TestProvider,
)
from panthera.payments.reconciler import Reconciled, Reconciler
from tests.conftest import make_settings
from tests.payments.conftest import PaymentsService, start_payments
from tests.payments.fake_stripe import API_KEY, FakeStripe
from tests.payments.test_webhooks import deliver

AGE = 0.05


@pytest.fixture
async def payments(tmp_path: Path) -> AsyncIterator[PaymentsService]:
    # A short age, and a background loop that never comes round again during a
    # test: every pass is the test's own.
    settings = make_settings(
        tmp_path, payment_reconcile_after_seconds=AGE, payment_reconcile_poll_seconds=3600
    )
    service = await start_payments(settings)
    try:
        yield service
    finally:
        await service.client.aclose()
        await service.platform.stop()


def reconciler(payments: PaymentsService) -> Reconciler:
    found: Reconciler = payments.runtime.components["payments_reconciler"]
    return found


async def reconcile(payments: PaymentsService) -> Reconciled:
    """One pass, once everything there is has waited long enough."""
    await asyncio.sleep(AGE * 2)
    return await reconciler(payments).reconcile_once()


def restart_provider(payments: PaymentsService) -> TestProvider:
    """A test provider as after a restart: nothing of the old one's memory."""
    fresh = TestProvider(
        webhook_secret=payments.settings.test_provider_webhook_secret.get_secret_value()
    )
    payments.deps.provider = fresh
    return fresh


async def row(payments: PaymentsService, payment_id: str) -> Payment:
    async with payments.runtime.database.read_sessions() as session:
        found = await session.get(Payment, uuid.UUID(payment_id))
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("token", "status", "event_type", "code"),
    [
        ("tok_visa", "succeeded", "payment.succeeded", None),
        ("tok_chargeDeclinedInsufficientFunds", "failed", "payment.failed", "insufficient_funds"),
    ],
)
async def test_a_payment_whose_webhook_died_with_the_process_is_settled(
    payments: PaymentsService, token: str, status: str, event_type: str, code: str | None
) -> None:
    user = payments.caller()
    payments.provider.delivery_delay_seconds = 60
    payment = await payments.pay(user, token=token, settle=False)
    assert payment["status"] == "processing"
    # Killed before the webhook went out: its delivery is gone with the memory.
    await payments.provider.close()
    restart_provider(payments)
    refused = await payments.client.post(
        f"/internal/payments/{payment['orderId']}/refund", headers=payments.internal_headers
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "payment_in_progress"

    assert await reconcile(payments) == Reconciled(claimed=1, moved=1)

    settled = await payments.get(user, payment["paymentId"])
    assert settled["status"] == status
    assert settled["failureCode"] == code
    (event,) = await payments.events(event_type)
    assert event.payload["payment_id"] == payment["paymentId"]
    assert len(await payments.events()) == 1
    assert await reconcile(payments) == Reconciled(claimed=0, moved=0)
    # The saga's compensation now gets an answer instead of 409 for ever.
    refund = await payments.client.post(
        f"/internal/payments/{payment['orderId']}/refund", headers=payments.internal_headers
    )
    assert refund.status_code == 200, refund.text


async def test_a_late_webhook_after_reconciling_changes_nothing(
    payments: PaymentsService,
) -> None:
    user = payments.caller()
    payments.provider.deliver = None
    payment = await payments.pay(user, settle=False)
    webhook = payments.provider.webhooks[-1]
    assert (await reconcile(payments)).moved == 1
    reconciled = await payments.get(user, payment["paymentId"])
    assert reconciled["status"] == "succeeded"

    late = await deliver(payments, webhook)
    assert late["outcome"] == "ignored"
    assert await payments.get(user, payment["paymentId"]) == reconciled
    assert len(await payments.events("payment.succeeded")) == 1
    assert len(await payments.events()) == 1


async def test_a_payment_settled_by_its_webhook_is_left_alone(
    payments: PaymentsService,
) -> None:
    user = payments.caller()
    payments.provider.deliver = None
    young = await payments.pay(user, settle=False)
    patient = Reconciler(
        uows=payments.runtime.uow,
        provider=lambda: payments.deps.provider,
        skip_locked=False,
        after_seconds=60,
    )
    # Not waited long enough yet: the webhook may still be on its way.
    assert await patient.reconcile_once() == Reconciled(claimed=0, moved=0)
    await deliver(payments, payments.provider.webhooks[-1])
    assert await reconcile(payments) == Reconciled(claimed=0, moved=0)
    assert (await payments.get(user, young["paymentId"]))["status"] == "succeeded"
    assert len(await payments.events()) == 1


class LostAnswers:
    """A provider whose answers are lost on the way back, after it acted on them."""

    def __init__(self, inner: TestProvider, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.keys: list[str] = []

    async def create_payment(self, **kwargs: Any) -> ProviderPayment:
        self.keys.append(kwargs["idempotency_key"])
        answer = await self.inner.create_payment(**kwargs)
        if self.failures:
            self.failures -= 1
            raise ProviderUnavailable("timeout")
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_payment_whose_answer_was_lost_is_asked_again_under_the_same_key(
    payments: PaymentsService,
) -> None:
    payments.provider.deliver = None
    lossy = LostAnswers(payments.provider, failures=1)
    payments.deps.provider = lossy
    user = payments.caller()
    lost = await payments.client.post(
        "/payments",
        json=body("order-1", "tok_visa"),
        headers=user.with_key("k1"),
    )
    assert lost.status_code == 503
    payment_id = str((await only_payment(payments)).id)
    waiting = await row(payments, payment_id)
    assert (waiting.status, waiting.payment_method) == ("requires_confirmation", "tok_visa")

    # Asked again: the provider's remembered answer (processing), then its outcome.
    assert await reconcile(payments) == Reconciled(claimed=1, moved=1)
    assert (await row(payments, payment_id)).status == "processing"
    assert await reconcile(payments) == Reconciled(claimed=1, moved=1)
    settled = await row(payments, payment_id)
    assert settled.status == "succeeded"
    assert settled.payment_method is None
    assert lossy.keys == [f"panthera-payment-{payment_id}"] * 2
    assert len(payments.provider.webhooks) == 1  # one charge at the provider
    assert len(await payments.events("payment.succeeded")) == 1


async def test_a_payment_the_provider_never_heard_of_is_confirmed_after_a_restart(
    payments: PaymentsService,
) -> None:
    class Unreachable(LostAnswers):
        async def create_payment(self, **kwargs: Any) -> ProviderPayment:
            raise ProviderUnavailable("connection refused")

    payments.deps.provider = Unreachable(payments.provider, failures=0)
    user = payments.caller()
    lost = await payments.client.post(
        "/payments",
        json=body("order-2", "tok_chargeDeclined"),
        headers=user.with_key("k1"),
    )
    assert lost.status_code == 503
    fresh = restart_provider(payments)
    assert (await reconcile(payments)).moved == 1
    assert (await reconcile(payments)).moved == 1
    failed = await only_payment(payments)
    assert (failed.status, failed.failure_code) == ("failed", "card_declined")
    assert failed.provider_payment_id is not None
    assert failed.provider_payment_id.startswith("pi_test_declined_")
    assert len(fresh.webhooks) == 1
    (event,) = await payments.events("payment.failed")
    assert event.payload["reason"] == "card_declined"


async def test_an_unanswered_provider_leaves_the_payment_for_the_next_pass(
    payments: PaymentsService,
) -> None:
    payments.provider.deliver = None
    user = payments.caller()
    payment = await payments.pay(user, settle=False)

    class Down(LostAnswers):
        async def retrieve_payment(self, provider_payment_id: str) -> ProviderPayment:
            raise ProviderUnavailable("down")

    payments.deps.provider = Down(payments.provider, failures=0)
    assert await reconcile(payments) == Reconciled(claimed=1, moved=0)
    payments.deps.provider = payments.provider
    assert await reconcile(payments) == Reconciled(claimed=1, moved=1)
    assert (await payments.get(user, payment["paymentId"]))["status"] == "succeeded"


async def test_a_payment_that_breaks_does_not_hold_up_the_others(
    payments: PaymentsService,
) -> None:
    payments.provider.deliver = None
    user = payments.caller()
    broken = await payments.pay(user, settle=False)
    fine = await payments.pay(user, settle=False)

    class Broken(LostAnswers):
        async def retrieve_payment(self, provider_payment_id: str) -> ProviderPayment:
            if provider_payment_id == broken["providerPaymentId"]:
                raise RuntimeError("unforeseen")
            return await self.inner.retrieve_payment(provider_payment_id)

    payments.deps.provider = Broken(payments.provider, failures=0)
    assert await reconcile(payments) == Reconciled(claimed=2, moved=1)
    assert (await payments.get(user, broken["paymentId"]))["status"] == "processing"
    assert (await payments.get(user, fine["paymentId"]))["status"] == "succeeded"


async def test_two_reconcilers_at_once_settle_a_payment_once(payments: PaymentsService) -> None:
    payments.provider.deliver = None
    user = payments.caller()
    await payments.pay(user, settle=False)
    await asyncio.sleep(AGE * 2)
    passes = await asyncio.gather(*(reconciler(payments).reconcile_once() for _ in range(4)))
    assert sum(p.claimed for p in passes) == 1
    assert sum(p.moved for p in passes) == 1
    assert len(await payments.events("payment.succeeded")) == 1


def body(order: str, token: str) -> dict[str, str]:
    return {"orderId": order, "amount": "10.00", "currency": "USD", "paymentMethod": token}


async def only_payment(payments: PaymentsService) -> Payment:
    async with payments.runtime.database.read_sessions() as session:
        (found,) = (await session.execute(select(Payment))).scalars()
    return found


# ------------------------------------------------------------------- refunds


class RefundsAnswered:
    """A provider whose refunds are not answered, or answered as pending."""

    def __init__(self, inner: TestProvider, answer: str) -> None:
        self.inner = inner
        self.answer = answer

    async def refund(self, **kwargs: Any) -> ProviderRefund:
        if self.answer == "lost":
            raise ProviderUnavailable("timeout")
        done = await self.inner.refund(**kwargs)
        return ProviderRefund(done.provider_refund_id, RefundOutcome.PENDING)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("answer", ["lost", "pending"])
async def test_a_pending_refund_is_settled(payments: PaymentsService, answer: str) -> None:
    user, admin = payments.caller(), payments.admin()
    payment = await payments.pay(user, amount="10.00")
    payments.provider.deliver = None
    payments.deps.provider = RefundsAnswered(payments.provider, answer)
    response = await payments.client.post(
        f"/payments/{payment['paymentId']}/refunds", json={}, headers=admin.with_key("r1")
    )
    assert response.status_code == (503 if answer == "lost" else 201), response.text
    async with payments.runtime.database.read_sessions() as session:
        (pending,) = (await session.execute(select(Refund))).scalars()
    assert pending.status == "pending"
    assert (pending.provider_refund_id is None) == (answer == "lost")

    payments.deps.provider = payments.provider
    assert await reconcile(payments) == Reconciled(claimed=1, moved=1)
    after = await payments.get(user, payment["paymentId"])
    assert after["status"] == "refunded"
    assert [r["status"] for r in after["refunds"]] == ["succeeded"]
    assert len(await payments.events("payment.refunded")) == 1
    assert await reconcile(payments) == Reconciled(claimed=0, moved=0)


async def test_a_restarted_service_settles_what_the_old_one_left_processing(
    tmp_path: Path,
) -> None:
    """The running service's own loop, after a restart on the same database."""
    settings = make_settings(
        tmp_path, payment_reconcile_after_seconds=AGE, payment_reconcile_poll_seconds=AGE
    )
    before = await start_payments(settings)
    try:
        before.provider.delivery_delay_seconds = 60
        user = before.caller()
        payment = await before.pay(user, settle=False)
        assert payment["status"] == "processing"
    finally:
        # Its webhook is still waiting to go out: stopping loses it, as a kill would.
        await before.client.aclose()
        await before.platform.stop()
    after = await start_payments(settings)
    try:
        for _ in range(100):
            state = await row(after, payment["paymentId"])
            if state.status != "processing":
                break
            await asyncio.sleep(AGE)
        assert state.status == "succeeded"
        assert len(await after.events("payment.succeeded")) == 1
        assert not after.provider.webhooks
    finally:
        await after.client.aclose()
        await after.platform.stop()


async def test_a_stripe_payment_whose_webhook_never_came_is_retrieved(
    payments: PaymentsService,
) -> None:
    fake = FakeStripe(hold=True)
    await payments.deps.provider.close()
    payments.deps.provider = StripeProvider(
        api_key=API_KEY,
        webhook_secret="whsec_stripe_test",
        transport=fake.transport(),
        retry_base_seconds=0.001,
    )
    user = payments.caller()
    created = await payments.client.post(
        "/payments", json=body("order-1", "tok_visa"), headers=user.with_key("k1")
    )
    assert created.json()["status"] == "processing"
    intent_id = created.json()["providerPaymentId"]
    assert await reconcile(payments) == Reconciled(claimed=1, moved=0)
    fake.intents[intent_id]["status"] = "succeeded"
    assert await reconcile(payments) == Reconciled(claimed=1, moved=1)
    assert (await payments.get(user, created.json()["paymentId"]))["status"] == "succeeded"
    assert [r.url.path for r in fake.requests if r.method == "GET"] == [
        f"/v1/payment_intents/{intent_id}"
    ] * 2
    assert len(await payments.events("payment.succeeded")) == 1
