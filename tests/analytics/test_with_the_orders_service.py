"""The real orders saga end to end: its events reach the shopper's inbox and the reports."""

from __future__ import annotations

import email
import email.policy
from decimal import Decimal

from tests.analytics.conftest import report
from tests.conftest import Platform, make_admin, register_and_login
from tests.orders.conftest import place, product, settled


def _subjects(platform: Platform, address: str) -> list[str]:
    found = []
    for path in sorted(platform.outbox_dir.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if message["To"] == address:
            found.append(str(message["Subject"]))
    return found


async def test_a_confirmed_and_a_declined_order_are_told_and_reported(platform: Platform) -> None:
    admin = await make_admin(platform)
    shopper = await register_and_login(platform.client)
    shoes = await product(platform, admin, price="89.50", stock=5)
    socks = await product(platform, admin, price="12.99", stock=5)
    good = await place(platform.client, shopper, [(shoes, 1), (socks, 2)])
    bad = await place(platform.client, shopper, [(socks, 1)], token="tok_chargeDeclined")
    assert good.status_code == 201, good.text
    assert bad.status_code == 201, bad.text
    confirmed = await settled(platform.client, shopper, good.json()["orderId"])
    cancelled = await settled(platform.client, shopper, bad.json()["orderId"])
    assert confirmed["status"] == "CONFIRMED"
    assert cancelled["status"] == "CANCELLED"
    await platform.settle()
    await platform.settle()

    subjects = _subjects(platform, shopper.email)
    assert sum("is confirmed" in subject for subject in subjects) == 1
    assert sum("was cancelled" in subject for subject in subjects) == 1

    sales = await report(platform, admin, "sales")
    [row] = sales["rows"]
    assert Decimal(row["grossRevenue"]) == Decimal(confirmed["totalAmount"]) == Decimal("115.48")
    assert row["orders"] == 1
    assert row["units"] == 3
    by_status = await report(platform, admin, "orders-by-status")
    assert {r["status"]: r["orders"] for r in by_status["rows"]} == {
        "CONFIRMED": 1,
        "CANCELLED": 1,
    }
    funnel = {r["stage"]: r["count"] for r in (await report(platform, admin, "funnel"))["rows"]}
    assert funnel["ordersPlaced"] == 2
    assert funnel["paymentsConfirmed"] == 1
