"""Idempotency keys: through the payments API, and the kernel's store on its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from panthera.kernel.idempotency import (
    Claim,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    IdempotencyKeys,
    IdempotentResponse,
    request_fingerprint,
)
from panthera.payments.models import IDEMPOTENCY_KEYS
from panthera.payments.providers import ProviderPayment, ProviderUnavailable, TestProvider
from tests.payments.conftest import Caller, PaymentsService


def body(order: str = "order-1", amount: str = "10.00", token: str = "tok_visa") -> dict[str, str]:
    return {"orderId": order, "amount": amount, "currency": "USD", "paymentMethod": token}


async def post(payments: PaymentsService, caller: Caller, key: str, json: Any) -> Any:
    return await payments.client.post("/payments", json=json, headers=caller.with_key(key))


async def test_the_same_key_and_body_replay_the_first_answer(payments: PaymentsService) -> None:
    user = payments.caller()
    first = await post(payments, user, "key-1", body())
    assert first.status_code == 201
    assert first.headers["Idempotent-Replayed"] == "false"
    await payments.settle()
    # Even after the payment changed, the stored first answer comes back, byte for byte.
    again = await post(payments, user, "key-1", {**body(), "amount": "10.00"})
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await payments.payment_count() == 1
    assert len(await payments.events("payment.succeeded")) == 1


async def test_the_same_key_with_another_body_is_422(payments: PaymentsService) -> None:
    user = payments.caller()
    assert (await post(payments, user, "key-1", body())).status_code == 201
    other = await post(payments, user, "key-1", body(amount="11.00"))
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert await payments.payment_count() == 1


async def test_a_key_is_required_and_must_be_sane(payments: PaymentsService) -> None:
    user = payments.caller()
    missing = await payments.client.post("/payments", json=body(), headers=user.headers)
    assert missing.status_code == 400
    assert missing.json()["code"] == "idempotency_key_required"
    odd = await post(payments, user, "with space", body())
    assert odd.status_code == 400
    assert odd.json()["code"] == "invalid_idempotency_key"
    assert await payments.payment_count() == 0


async def test_twenty_concurrent_duplicates_make_exactly_one_payment(
    payments: PaymentsService,
) -> None:
    user = payments.caller()
    responses = await asyncio.gather(*(post(payments, user, "same-key", body()) for _ in range(20)))
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {201, 409}, statuses
    created = [response for response in responses if response.status_code == 201]
    assert created
    assert len({response.content for response in created}) == 1
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "idempotency_in_flight"
            assert response.headers["Retry-After"] == "1"
    await payments.settle()
    assert await payments.payment_count() == 1
    assert len(await payments.events("payment.succeeded")) == 1


async def test_twenty_concurrent_keys_for_one_order_take_the_money_once(
    payments: PaymentsService,
) -> None:
    user = payments.caller()
    responses = await asyncio.gather(
        *(post(payments, user, f"key-{n}", body(order="order-x")) for n in range(20))
    )
    assert sum(response.status_code == 201 for response in responses) == 1
    assert {r.json()["code"] for r in responses if r.status_code != 201} <= {
        "payment_in_progress",
        "order_already_paid",
    }
    await payments.settle()
    assert await payments.payment_count(order_reference="order-x") == 1


class Gate:
    """A provider call that waits until the test opens it."""

    def __init__(self, inner: TestProvider) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.open = asyncio.Event()
        self.calls = 0

    async def create_payment(self, **kwargs: Any) -> ProviderPayment:
        self.calls += 1
        self.entered.set()
        await self.open.wait()
        return await self.inner.create_payment(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_the_same_key_while_the_first_is_in_flight_is_409(
    payments: PaymentsService,
) -> None:
    gate = Gate(payments.provider)
    payments.deps.provider = gate  # type: ignore[assignment]
    user = payments.caller()
    first = asyncio.create_task(post(payments, user, "key-1", body()))
    await gate.entered.wait()
    during = await post(payments, user, "key-1", body())
    assert during.status_code == 409
    assert during.json()["code"] == "idempotency_in_flight"
    other_body = await post(payments, user, "key-1", body(amount="2.00"))
    assert other_body.status_code == 422
    gate.open.set()
    done = await first
    assert done.status_code == 201
    after = await post(payments, user, "key-1", body())
    assert after.content == done.content
    assert gate.calls == 1


async def test_keys_belong_to_their_caller(payments: PaymentsService) -> None:
    alice, bob = payments.caller(), payments.caller()
    alices = await post(payments, alice, "shared-key", body(order="order-alice"))
    assert alices.status_code == 201
    # Bob's identical request is his own: never Alice's stored answer.
    bobs_copy = await post(payments, bob, "shared-key", body(order="order-alice"))
    assert bobs_copy.status_code == 409
    assert alices.json()["paymentId"] not in bobs_copy.text
    bobs = await post(payments, bob, "shared-key", body(order="order-bob"))
    assert bobs.status_code == 201
    assert bobs.json()["paymentId"] != alices.json()["paymentId"]
    assert bobs.json()["userId"] == str(bob.user_id)


class Unreachable:
    """A provider whose first answers are lost on the way back."""

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


async def test_a_lost_provider_answer_is_503_and_the_retry_resumes_the_same_payment(
    payments: PaymentsService,
) -> None:
    flaky = Unreachable(payments.provider, failures=1)
    payments.deps.provider = flaky  # type: ignore[assignment]
    user = payments.caller()
    lost = await post(payments, user, "key-1", body())
    assert lost.status_code == 503
    assert lost.json()["code"] == "payment_provider_unavailable"
    # Another key meanwhile must not start a second payment of the order.
    other = await post(payments, user, "key-2", body())
    assert other.status_code == 409
    retry = await post(payments, user, "key-1", body())
    assert retry.status_code == 201, retry.text
    await payments.settle()
    assert await payments.payment_count() == 1
    assert len(set(flaky.keys)) == 1  # asked twice, under one provider key
    assert (await payments.get(user, retry.json()["paymentId"]))["status"] == "succeeded"


# ------------------------------------------------------- the kernel's store alone


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys(payments: PaymentsService, clock: Clock) -> IdempotencyKeys:
    return IdempotencyKeys(
        payments.runtime.database,
        IDEMPOTENCY_KEYS,
        lease=timedelta(seconds=30),
        clock=clock,
    )


def answer(status: int, payload: Mapping[str, Any]) -> Any:
    async def handler(_claim: Claim) -> tuple[int, Any]:
        return status, dict(payload)

    return handler


async def test_an_expired_key_may_be_used_again(keys: IdempotencyKeys, clock: Clock) -> None:
    first = await keys.run(scope="s", key="k", request_hash="a", handler=answer(201, {"n": 1}))
    assert first == IdempotentResponse(201, b'{"n":1}', replayed=False)
    with pytest.raises(IdempotencyKeyReused):
        await keys.run(scope="s", key="k", request_hash="b", handler=answer(201, {"n": 2}))
    clock.now += timedelta(hours=24, seconds=1)
    fresh = await keys.run(scope="s", key="k", request_hash="b", handler=answer(201, {"n": 2}))
    assert fresh.json() == {"n": 2}
    assert not fresh.replayed
    assert await keys.purge_expired() == 0
    clock.now += timedelta(hours=25)
    assert await keys.purge_expired() == 1


async def test_a_claim_whose_worker_died_is_taken_over_after_its_lease(
    keys: IdempotencyKeys, clock: Clock
) -> None:
    claim = await keys.claim(scope="s", key="k", request_hash="a")
    assert not isinstance(claim, IdempotentResponse)
    # A new key: nothing can have been done under it before.
    assert claim.first
    with pytest.raises(IdempotencyKeyInFlight):
        await keys.claim(scope="s", key="k", request_hash="a")
    clock.now += timedelta(seconds=31)
    seen: list[bool] = []

    async def taking_over(taken: Claim) -> tuple[int, Any]:
        # The dead worker may have done part of the work: this run must look for it.
        seen.append(taken.first)
        return 200, {"ok": 1}

    again = await keys.run(scope="s", key="k", request_hash="a", handler=taking_over)
    assert again.json() == {"ok": 1}
    assert seen == [False]
    # The dead worker's late answer does not overwrite the one given.
    late = await keys.complete(claim, 500, b'{"late":true}')
    assert late.json() == {"ok": 1}
    assert late.replayed


async def test_a_failed_handler_releases_the_key(keys: IdempotencyKeys) -> None:
    async def broken(_claim: Claim) -> tuple[int, Any]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await keys.run(scope="s", key="k", request_hash="a", handler=broken)
    ok = await keys.run(scope="s", key="k", request_hash="a", handler=answer(201, {"ok": True}))
    assert not ok.replayed


async def test_scopes_keep_keys_apart(keys: IdempotencyKeys) -> None:
    one = await keys.run(scope="user:1", key="k", request_hash="a", handler=answer(201, {"u": 1}))
    two = await keys.run(scope="user:2", key="k", request_hash="b", handler=answer(201, {"u": 2}))
    assert (one.json(), two.json()) == ({"u": 1}, {"u": 2})


def test_keys_live_at_least_a_day(payments: PaymentsService) -> None:
    with pytest.raises(ValueError, match="24 hours"):
        IdempotencyKeys(payments.runtime.database, IDEMPOTENCY_KEYS, ttl=timedelta(hours=1))


def test_fingerprints_ignore_key_order_but_not_values() -> None:
    a = request_fingerprint("op", {"x": 1, "y": [1, 2]})
    assert a == request_fingerprint("op", {"y": [1, 2], "x": 1})
    assert a != request_fingerprint("op", {"x": 2, "y": [1, 2]})
    assert a != request_fingerprint("other", {"x": 1, "y": [1, 2]})
    assert len(a) == 64
    assert uuid.UUID(int=0)  # the hash is plain hex, fit for a String(64) column
