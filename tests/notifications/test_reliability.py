"""No message is lost when a provider refuses, drops or is down: retries, then staff resend."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from panthera.notifications.sender import RetryPolicy
from panthera.orders.events import OrderConfirmed
from tests.conftest import Account, Platform, make_admin, register_and_login
from tests.notifications.conftest import (
    NOW,
    MailServer,
    ProviderEndpoint,
    free_port,
    line,
    publish,
    send_due,
)


async def _log(platform: Platform, admin: Account, **query: Any) -> list[dict[str, Any]]:
    response = await platform.client.get(
        "/api/v1/notifications/deliveries", params={"limit": 200, **query}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


async def _confirm_order(platform: Platform, user_id: uuid.UUID) -> None:
    await publish(
        platform,
        OrderConfirmed(
            order_id=uuid.uuid4(),
            user_id=user_id,
            status="CONFIRMED",
            total_amount=17900,
            currency="USD",
            revision=2,
            occurred_at=NOW,
            items=(line(),),
            payment_id=None,
        ),
        "orders",
    )


@pytest.mark.parametrize("failure", ["refuse", "drop"])
async def test_a_server_that_refuses_or_hangs_up_loses_no_message(
    smtp_platform: Platform, smtp_server: MailServer, failure: str
) -> None:
    admin = await make_admin(smtp_platform)
    await send_due(smtp_platform)
    shopper = await register_and_login(smtp_platform.client)
    await smtp_platform.settle()
    smtp_server.failures.extend([failure, failure])
    await _confirm_order(smtp_platform, shopper.id)
    await send_due(smtp_platform)
    confirmed = [m for m in smtp_server.to(shopper.email) if "confirmed" in m["Subject"]]
    assert len(confirmed) == 1
    [row] = [
        r
        for r in await _log(smtp_platform, admin, userId=str(shopper.id))
        if r["template"] == "order_confirmed"
    ]
    assert row["status"] == "sent"
    # The message that went out is the one that failed before: its attempts show it.
    assert row["attempts"] >= 2


async def test_a_server_that_is_down_loses_no_message(
    smtp_platform: Platform, smtp_server: MailServer
) -> None:
    admin = await make_admin(smtp_platform)
    await send_due(smtp_platform)
    components = smtp_platform.app.state.platform.runtimes["notifications"].components
    # An outage longer than a few attempts: the messages wait, however many tries it takes.
    components["notifications_sender"]._policy = RetryPolicy(
        max_attempts=1000, base_seconds=0.01, max_seconds=0.02
    )
    # Nothing listens there: every connection is refused.
    components["notifications_deps"].email.port = free_port()
    shopper = await register_and_login(smtp_platform.client)
    await send_due(smtp_platform, rounds=3)
    rows = await _log(smtp_platform, admin, userId=str(shopper.id))
    assert len(rows) == 2
    assert {row["status"] for row in rows} == {"queued"}
    assert all(row["attempts"] >= 1 and "SMTPConnect" in row["lastError"] for row in rows)
    # The relay comes back: every queued message goes out, once.
    components["notifications_deps"].email.port = smtp_server.port
    await send_due(smtp_platform)
    assert sorted(m["Subject"] for m in smtp_server.to(shopper.email)) == [
        "Confirm your email address",
        "Welcome to Panthera, Test",
    ]
    assert {row["status"] for row in await _log(smtp_platform, admin)} == {"sent"}


async def test_after_the_last_attempt_staff_see_the_failure_and_resend_it(
    smtp_platform: Platform, smtp_server: MailServer
) -> None:
    admin = await make_admin(smtp_platform)
    await send_due(smtp_platform)
    shopper = await register_and_login(smtp_platform.client)
    await smtp_platform.settle()
    # More failures than the four attempts the platform is configured with.
    smtp_server.failures.extend(["refuse"] * 6)
    await _confirm_order(smtp_platform, shopper.id)
    await send_due(smtp_platform, rounds=20)
    failed = await _log(smtp_platform, admin, status="failed")
    assert len(failed) == 1
    [row] = failed
    assert row["attempts"] == 4
    assert "451" in row["lastError"]
    assert row["nextAttemptAt"] is None
    assert not [m for m in smtp_server.to(shopper.email) if "confirmed" in m["Subject"]]

    smtp_server.failures.clear()
    resent = await smtp_platform.client.post(
        f"/api/v1/notifications/deliveries/{row['id']}/resend", headers=admin.headers
    )
    assert resent.status_code == 202, resent.text
    assert resent.json()["status"] == "queued"
    again = await smtp_platform.client.post(
        f"/api/v1/notifications/deliveries/{row['id']}/resend", headers=admin.headers
    )
    assert again.status_code in {202, 409}
    await send_due(smtp_platform)
    assert len([m for m in smtp_server.to(shopper.email) if "confirmed" in m["Subject"]]) == 1
    [after] = [r for r in await _log(smtp_platform, admin) if r["id"] == row["id"]]
    assert after["status"] == "sent"
    missing = await smtp_platform.client.post(
        f"/api/v1/notifications/deliveries/{uuid.uuid4()}/resend", headers=admin.headers
    )
    assert missing.status_code == 404


async def test_a_provider_that_refuses_for_good_is_not_retried(
    smtp_platform: Platform, provider: ProviderEndpoint
) -> None:
    admin = await make_admin(smtp_platform)
    shopper = await register_and_login(smtp_platform.client)
    await smtp_platform.settle()
    await smtp_platform.client.put(
        f"/api/v1/notifications/preferences/{shopper.id}",
        json={"push": True, "pushTokens": ["stale-device-token"]},
        headers=shopper.headers,
    )
    # 503 then 400: the first is retried, the second (a bad token) is final.
    provider.statuses.extend([503, 400])
    await _confirm_order(smtp_platform, shopper.id)
    await send_due(smtp_platform)
    [push] = [r for r in await _log(smtp_platform, admin) if r["channel"] == "push"]
    assert push["status"] == "failed"
    assert push["attempts"] == 2
    assert "400" in push["lastError"]


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling() -> None:
    policy = RetryPolicy(base_seconds=10, max_seconds=300)
    for attempts, ceiling in ((1, 10), (2, 20), (3, 40), (6, 300), (20, 300)):
        delays = {policy.delay(attempts).total_seconds() for _ in range(50)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1  # jittered: replicas that failed together retry apart
