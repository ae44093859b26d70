"""The reports: figures that reconcile with the orders and payments records, in JSON and CSV."""

from __future__ import annotations

import csv
import io
import uuid
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

from panthera.catalog.views import publish_views
from panthera.kernel.events import Envelope
from tests.analytics.conftest import (
    CAMPING,
    FOOTWEAR,
    SHOES,
    SOCKS,
    TENT,
    Order,
    at,
    days_ago,
    lines,
    publish,
    redeliver,
    report,
    today,
)
from tests.conftest import Account, Platform, make_admin, register_and_login


async def _pay(platform: Platform, shopper: Account, order: Order, token: str) -> dict[str, Any]:
    """A real payment through the payments API, its provider webhook applied."""
    response = await platform.client.post(
        "/api/v1/payments",
        json={
            "orderId": str(order.order_id),
            "amount": str(Decimal(order.total) / 100),
            "currency": order.currency,
            "paymentMethod": token,
        },
        headers={**shopper.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    await platform.app.state.platform.apps["payments"].state.payments_deps.provider.drain()
    await platform.settle()
    fetched = await platform.client.get(
        f"/api/v1/payments/{response.json()['paymentId']}", headers=shopper.headers
    )
    body: dict[str, Any] = fetched.json()
    return body


async def _refund(platform: Platform, admin: Account, payment_id: str, amount: str) -> None:
    response = await platform.client.post(
        f"/api/v1/payments/{payment_id}/refunds",
        json={"amount": amount, "reason": "requested_by_customer"},
        headers={**admin.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    await platform.app.state.platform.apps["payments"].state.payments_deps.provider.drain()
    await platform.settle()


def _cents(text: str) -> int:
    return int(Decimal(text) * 100)


async def test_figures_reconcile_with_the_orders_and_payments_records(platform: Platform) -> None:
    admin = await make_admin(platform)
    shoppers = [await register_and_login(platform.client) for _ in range(3)]
    await platform.settle()
    history: list[tuple[Order, str]] = []
    basket = [
        ((SHOES, 1), (SOCKS, 3)),
        ((TENT, 1),),
        ((SOCKS, 2),),
        ((SHOES, 2), (TENT, 1)),
        ((SOCKS, 1),),
        ((SHOES, 1),),
    ]
    tokens = ["tok_visa", "tok_visa", "tok_chargeDeclined", "tok_visa", "tok_visa", None]
    payments: dict[uuid.UUID, dict[str, Any]] = {}
    for index, (items, token) in enumerate(zip(basket, tokens, strict=True)):
        shopper = shoppers[index % len(shoppers)]
        order = Order(user_id=shopper.id, items=lines(*items))
        day = days_ago(index % 4)
        await publish(platform, order.placed(at(day, 9)), order=order)
        if token is None:
            history.append((order, "still pending"))
            continue
        payment = await _pay(platform, shopper, order, token)
        payments[order.order_id] = payment
        if payment["status"] == "succeeded":
            await publish(
                platform, order.confirmed(at(day, 10), uuid.UUID(payment["paymentId"])), order=order
            )
        else:
            await publish(platform, order.cancelled(at(day, 10), "card_declined"), order=order)
        history.append((order, payment["status"]))
    # One order ships; two get money back, one in part, one in full.
    await publish(platform, history[0][0].shipped(at(days_ago(0), 15)), order=history[0][0])
    await _refund(platform, admin, payments[history[1][0].order_id]["paymentId"], "50.00")
    await _refund(platform, admin, payments[history[3][0].order_id]["paymentId"], "427.00")
    # Every event arrives a second time; nothing may count twice.
    for order, _ in history:
        for envelope in order.envelopes:
            await redeliver(platform, envelope)
    # A replay under new ids (an operator re-publishing dead letters) counts no order twice.
    for order, _ in history[:2]:
        for event in order.events[:2]:
            await publish(platform, event)
    await platform.settle()

    # What the orders service's records say...
    confirmed = [order for order, _ in history if order.status in {"CONFIRMED", "SHIPPED"}]
    gross = sum(order.total for order in confirmed)
    units_by_product: Counter[uuid.UUID] = Counter()
    revenue_by_product: Counter[uuid.UUID] = Counter()
    revenue_by_category: Counter[uuid.UUID] = Counter()
    for order in confirmed:
        for line in order.items:
            units_by_product[line.product_id] += line.quantity
            revenue_by_product[line.product_id] += line.line_total
            assert line.category_id is not None
            revenue_by_category[line.category_id] += line.line_total
    statuses = Counter(order.status for order, _ in history)
    # ... and what the payments service's records say, read from its own API.
    refunded = 0
    succeeded = 0
    for payment in payments.values():
        fetched = await platform.client.get(
            f"/api/v1/payments/{payment['paymentId']}", headers=admin.headers
        )
        record = fetched.json()
        refunded += _cents(record["amountRefunded"])
        succeeded += record["status"] in {"succeeded", "partially_refunded", "refunded"}
    assert refunded == 5000 + 42700
    assert succeeded == 4

    window = {"from": days_ago(6).isoformat(), "to": today().isoformat()}
    sales = await report(platform, admin, "sales", granularity="month", **window)
    totals: dict[str, int] = defaultdict(int)
    for row in sales["rows"]:
        assert row["currency"] == "USD"
        totals["gross"] += _cents(row["grossRevenue"])
        totals["refunded"] += _cents(row["refunded"])
        totals["net"] += _cents(row["netRevenue"])
        totals["orders"] += row["orders"]
    assert totals == {
        "gross": gross,
        "refunded": refunded,
        "net": gross - refunded,
        "orders": len(confirmed),
    }
    daily = await report(platform, admin, "sales", granularity="day", **window)
    for row in daily["rows"]:
        expected = round(_cents(row["grossRevenue"]) / row["orders"]) if row["orders"] else 0
        assert _cents(row["averageOrderValue"]) == expected
    assert sum(_cents(row["grossRevenue"]) for row in daily["rows"]) == gross

    by_status = await report(platform, admin, "orders-by-status", **window)
    assert {row["status"]: row["orders"] for row in by_status["rows"]} == dict(statuses)

    top = await report(platform, admin, "top-products", limit=10, **window)
    assert {uuid.UUID(row["productId"]): row["units"] for row in top["rows"]} == dict(
        units_by_product
    )
    assert {uuid.UUID(row["productId"]): _cents(row["revenue"]) for row in top["rows"]} == dict(
        revenue_by_product
    )
    revenues = [_cents(row["revenue"]) for row in top["rows"]]
    assert revenues == sorted(revenues, reverse=True)
    by_units = await report(platform, admin, "top-products", limit=1, by="units", **window)
    assert by_units["rows"][0]["productId"] == str(units_by_product.most_common(1)[0][0])

    categories = await report(platform, admin, "categories", **window)
    assert {uuid.UUID(row["categoryId"]): _cents(row["revenue"]) for row in categories["rows"]} == {
        category: revenue_by_category[category] for category in (FOOTWEAR, CAMPING)
    }

    users = await report(platform, admin, "customers/new-users", granularity="week", **window)
    assert sum(row["newUsers"] for row in users["rows"]) == len(shoppers) + 1  # and the admin

    funnel = await report(platform, admin, "funnel", **window)
    stages = {row["stage"]: row for row in funnel["rows"]}
    assert stages["ordersPlaced"]["count"] == len(history)
    assert stages["paymentsConfirmed"]["count"] == succeeded
    assert stages["paymentsConfirmed"]["conversionFromPrevious"] == round(
        succeeded / len(history), 4
    )


async def test_late_and_stale_events_do_not_move_an_order_back(platform: Platform) -> None:
    admin = await make_admin(platform)
    order = Order(user_id=admin.id, items=lines((TENT, 2)))
    placed = order.placed(at(days_ago(1), 8))
    confirmed = order.confirmed(at(days_ago(1), 9))
    shipped = order.shipped(at(today(), 9))
    # Shipped first, then confirmed, then placed: the order stays shipped, placed yesterday.
    # Placed and confirmed come twice, as fresh events: each still counts once.
    for event in (shipped, confirmed, placed, confirmed, placed):
        await publish(platform, event)
    window = {"from": days_ago(2).isoformat(), "to": today().isoformat()}
    by_status = await report(platform, admin, "orders-by-status", **window)
    assert by_status["rows"] == [{"status": "SHIPPED", "orders": 1}]
    only_yesterday = await report(
        platform,
        admin,
        "orders-by-status",
        **{"from": days_ago(1).isoformat(), "to": days_ago(1).isoformat()},
    )
    assert only_yesterday["rows"] == [{"status": "SHIPPED", "orders": 1}]
    sales = await report(platform, admin, "sales", **window)
    assert [(row["period"], row["grossRevenue"], row["orders"]) for row in sales["rows"]] == [
        (days_ago(1).isoformat(), "498.00", 1)
    ]
    funnel = await report(platform, admin, "funnel", **window)
    assert {row["stage"]: row["count"] for row in funnel["rows"]}["ordersPlaced"] == 1


async def test_csv_on_request_and_clear_errors_for_bad_ranges(platform: Platform) -> None:
    admin = await make_admin(platform)
    order = Order(user_id=admin.id, items=lines((SOCKS, 2)), currency="EUR")
    await publish(platform, order.placed(at(today(), 8)))
    await publish(platform, order.confirmed(at(today(), 9)))
    response = await platform.client.get(
        "/api/v1/analytics/sales",
        params={"granularity": "week"},
        headers={**admin.headers, "Accept": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1
    assert rows[0]["currency"] == "EUR"
    assert rows[0]["grossRevenue"] == "25.98"
    assert rows[0]["averageOrderValue"] == "25.98"
    for name in ("orders-by-status", "top-products", "categories", "customers/new-users", "funnel"):
        answer = await platform.client.get(
            f"/api/v1/analytics/{name}", headers={**admin.headers, "Accept": "text/csv"}
        )
        assert answer.status_code == 200, (name, answer.text)
        assert answer.text.splitlines()[0].count(",") >= 1, name
    # A report with no rows still says what its columns are.
    empty = await platform.client.get(
        "/api/v1/analytics/sales",
        params={"from": "2020-01-01", "to": "2020-01-31"},
        headers={**admin.headers, "Accept": "text/csv"},
    )
    assert empty.status_code == 200, empty.text
    header = empty.text.splitlines()[0].split(",")
    assert {"currency", "grossRevenue", "averageOrderValue"} <= set(header)
    assert len(empty.text.splitlines()) == 1

    for query in (
        {"from": "2026-05-02", "to": "2026-05-01"},
        {"from": "2000-01-01", "to": "2026-01-01"},
        {"from": "yesterday"},
        {"granularity": "year"},
        {"to": "2026-02-30"},
    ):
        refused = await platform.client.get(
            "/api/v1/analytics/sales", params=query, headers=admin.headers
        )
        assert refused.status_code == 400, (query, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "invalid_input"


async def test_only_administrators_read_reports(platform: Platform) -> None:
    shopper = await register_and_login(platform.client)
    for name in ("sales", "funnel"):
        assert (await platform.client.get(f"/api/v1/analytics/{name}")).status_code == 401
        forbidden = await platform.client.get(f"/api/v1/analytics/{name}", headers=shopper.headers)
        assert forbidden.status_code == 403


async def test_product_views_from_the_catalog_feed_the_funnel(platform: Platform) -> None:
    admin = await make_admin(platform)
    created = await platform.client.post(
        "/api/v1/products",
        json={"name": "Trail running shoe", "price": "89.50", "stock": 10},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    product_id = created.json()["productId"]
    # Signed-in reads are never cached by the gateway: each one reaches the catalog.
    for _ in range(7):
        seen = await platform.client.get(f"/api/v1/products/{product_id}", headers=admin.headers)
        assert seen.status_code == 200
    missing = await platform.client.get(f"/api/v1/products/{uuid.uuid4()}", headers=admin.headers)
    assert missing.status_code == 404  # not a view
    catalog = platform.app.state.platform.runtimes["catalog"]
    assert await publish_views(catalog.components["catalog_deps"].views, catalog.uow) == 1
    await platform.settle()
    funnel = await report(platform, admin, "funnel")
    assert funnel["rows"][0] == {
        "stage": "productViews",
        "count": 7,
        "conversionFromPrevious": None,
    }


class _Batches:
    """Stands in for the transport to get hold of the analytics batch consumer."""

    handler: Any = None

    async def subscribe_batch(self, consumer: str, types: Any, handler: Any, **_: Any) -> None:
        self.handler = handler


async def test_events_applied_in_one_batch_count_as_they_would_one_by_one(
    platform: Platform,
) -> None:
    admin = await make_admin(platform)
    runtime = platform.app.state.platform.runtimes["analytics"]
    batches = _Batches()
    transport, runtime.transport = runtime.transport, batches
    try:
        await runtime.subscribe()
    finally:
        runtime.transport = transport
    late = Order(user_id=admin.id, items=lines((TENT, 2)))
    placed = late.placed(at(days_ago(1), 8))
    confirmed = late.confirmed(at(days_ago(1), 9))
    shipped = late.shipped(at(today(), 9))
    plain = Order(user_id=admin.id, items=lines((SOCKS, 1)))
    other_placed = plain.placed(at(days_ago(1), 10))
    other_confirmed = plain.confirmed(at(days_ago(1), 11))
    # One order's events out of order and twice over, another's in order, all in one
    # transaction: each order is still placed and sold once, and ends in its latest status.
    events = (shipped, confirmed, other_placed, placed, confirmed, other_confirmed, placed)
    outcomes = await batches.handler([Envelope.wrap(event, source="orders") for event in events])
    assert outcomes == [None] * len(events)

    window = {"from": days_ago(2).isoformat(), "to": today().isoformat()}
    by_status = await report(platform, admin, "orders-by-status", **window)
    assert sorted((row["status"], row["orders"]) for row in by_status["rows"]) == [
        ("CONFIRMED", 1),
        ("SHIPPED", 1),
    ]
    sales = await report(platform, admin, "sales", **window)
    assert [(row["period"], row["grossRevenue"], row["orders"]) for row in sales["rows"]] == [
        (days_ago(1).isoformat(), "510.99", 2)
    ]
    funnel = await report(platform, admin, "funnel", **window)
    assert {row["stage"]: row["count"] for row in funnel["rows"]}["ordersPlaced"] == 2
