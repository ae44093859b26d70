"""The orders API through the gateway: placing, the saga's outcomes, reading, and staff actions."""

from __future__ import annotations

import asyncio
import uuid

from tests.conftest import Platform, make_admin, register_and_login
from tests.orders.conftest import place, product, saga_finished, settled, stock_of


async def payments_of(platform: Platform, admin_headers: dict[str, str], order_id: str) -> list:
    response = await platform.client.get(
        "/api/v1/payments", params={"orderId": order_id}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    return list(response.json())


async def test_an_order_is_priced_by_the_catalog_and_confirmed(platform: Platform) -> None:
    admin = await make_admin(platform)
    shopper = await register_and_login(platform.client)
    mug = await product(platform, admin, price="12.50", stock=5)
    lamp = await product(platform, admin, price="40.00", stock=3)

    response = await place(platform.client, shopper, [(mug, 2), (lamp, 1)])
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "PENDING"
    assert created["totalAmount"] == "65.00"

    order = await settled(platform.client, shopper, created["orderId"])
    assert order["status"] == "CONFIRMED", order
    assert order["userId"] == str(shopper.id)
    assert [
        (line["productId"], line["quantity"], line["unitPrice"]) for line in order["items"]
    ] == [
        (mug, 2, "12.50"),
        (lamp, 1, "40.00"),
    ]
    assert [change["status"] for change in order["statusHistory"]] == ["PENDING", "CONFIRMED"]
    # The sale is final: the stock left the shelf.
    assert await stock_of(platform, mug) == 3
    assert await stock_of(platform, lamp) == 2
    paid = await payments_of(platform, admin.headers, created["orderId"])
    assert [(p["status"], p["amount"]) for p in paid] == [("succeeded", "65.00")]


async def test_the_client_cannot_set_prices(platform: Platform) -> None:
    admin = await make_admin(platform)
    shopper = await register_and_login(platform.client)
    mug = await product(platform, admin, price="12.50")
    response = await platform.client.post(
        "/api/v1/orders",
        json={
            "items": [{"productId": mug, "quantity": 1, "unitPrice": "0.01"}],
            "shippingAddress": "1 Main Street",
            "paymentMethod": "tok_visa",
            "totalAmount": "0.01",
        },
        headers=shopper.headers,
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_declined_cards_cancel_the_order_and_give_the_stock_back(
    platform: Platform,
) -> None:
    admin = await make_admin(platform)
    shopper = await register_and_login(platform.client)
    mug = await product(platform, admin, stock=4)
    cases = {
        "tok_chargeDeclined": "card_declined",
        "tok_chargeDeclinedInsufficientFunds": "insufficient_funds",
        "tok_chargeDeclinedProcessingError": "payment_error",
    }
    for token, reason in cases.items():
        response = await place(platform.client, shopper, [(mug, 3)], token=token)
        assert response.status_code == 201, response.text
        order = await settled(platform.client, shopper, response.json()["orderId"])
        assert (order["status"], order["cancelReason"]) == ("CANCELLED", reason), order
        await saga_finished(platform, order["orderId"])
        assert await stock_of(platform, mug) == 4
        paid = await payments_of(platform, admin.headers, order["orderId"])
        assert all(p["status"] != "succeeded" for p in paid), paid


async def test_an_order_for_more_than_is_in_stock_is_cancelled(platform: Platform) -> None:
    admin = await make_admin(platform)
    shopper = await register_and_login(platform.client)
    mug = await product(platform, admin, stock=2)
    lamp = await product(platform, admin, stock=5)
    response = await place(platform.client, shopper, [(lamp, 1), (mug, 3)])
    assert response.status_code == 201
    order = await settled(platform.client, shopper, response.json()["orderId"])
    assert (order["status"], order["cancelReason"]) == ("CANCELLED", "out_of_stock")
    await saga_finished(platform, order["orderId"])
    # All lines or none: the lamp was not held either, and nothing was charged.
    assert await stock_of(platform, lamp) == 5
    assert await stock_of(platform, mug) == 2
    assert await payments_of(platform, admin.headers, order["orderId"]) == []


async def test_bad_orders_get_a_clear_4xx(platform: Platform) -> None:
    admin = await make_admin(platform)
    shopper = await register_and_login(platform.client)
    mug = await product(platform, admin)
    unknown = str(uuid.uuid4())
    bad_bodies = [
        {},
        {"items": [], "shippingAddress": "x", "paymentMethod": "tok_visa"},
        {
            "items": [{"productId": mug, "quantity": 0}],
            "shippingAddress": "x",
            "paymentMethod": "tok_visa",
        },
        {
            "items": [{"productId": mug, "quantity": -1}],
            "shippingAddress": "x",
            "paymentMethod": "tok_visa",
        },
        {
            "items": [{"productId": "nope", "quantity": 1}],
            "shippingAddress": "x",
            "paymentMethod": "tok_visa",
        },
        {
            "items": [{"productId": mug, "quantity": 1}],
            "shippingAddress": "",
            "paymentMethod": "tok_visa",
        },
        {
            "items": [{"productId": mug, "quantity": 1}],
            "shippingAddress": "x",
            "paymentMethod": "4242424242424242",
        },
        {"items": [{"productId": mug, "quantity": 1}], "shippingAddress": "x"},
    ]
    for body in bad_bodies:
        response = await platform.client.post("/api/v1/orders", json=body, headers=shopper.headers)
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    response = await place(platform.client, shopper, [(unknown, 1)])
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_product"
    anonymous = await platform.client.post(
        "/api/v1/orders",
        json={
            "items": [{"productId": mug, "quantity": 1}],
            "shippingAddress": "x",
            "paymentMethod": "tok_visa",
        },
    )
    assert anonymous.status_code == 401


async def test_owners_and_admins_read_orders_others_find_nothing(platform: Platform) -> None:
    admin = await make_admin(platform)
    alice = await register_and_login(platform.client)
    bob = await register_and_login(platform.client)
    mug = await product(platform, admin)
    order_id = (await place(platform.client, alice, [(mug, 1)])).json()["orderId"]
    await settled(platform.client, alice, order_id)

    assert (
        await platform.client.get(f"/api/v1/orders/{order_id}", headers=admin.headers)
    ).status_code == 200
    for path in (f"/api/v1/orders/{order_id}", f"/api/v1/orders/user/{alice.id}"):
        response = await platform.client.get(path, headers=bob.headers)
        assert response.status_code == 404, path
    cancel = await platform.client.post(f"/api/v1/orders/{order_id}/cancel", headers=bob.headers)
    assert cancel.status_code == 404
    assert (await platform.client.get("/api/v1/orders", headers=bob.headers)).status_code == 403
    for staff_action in ("ship", "deliver", "refund"):
        response = await platform.client.post(
            f"/api/v1/orders/{order_id}/{staff_action}",
            json={"trackingNumber": "X"} if staff_action == "ship" else None,
            headers={**alice.headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 403, staff_action
    mine = await platform.client.get(f"/api/v1/orders/user/{alice.id}", headers=alice.headers)
    assert [o["orderId"] for o in mine.json()] == [order_id]
    assert mine.headers["X-Total-Count"] == "1"


async def test_listing_filters_by_status_and_pages(platform: Platform) -> None:
    admin = await make_admin(platform)
    shopper = await register_and_login(platform.client)
    mug = await product(platform, admin, stock=100)
    ids = []
    for token in ("tok_visa", "tok_visa", "tok_chargeDeclined"):
        order_id = (await place(platform.client, shopper, [(mug, 1)], token=token)).json()[
            "orderId"
        ]
        await settled(platform.client, shopper, order_id)
        ids.append(order_id)
    base = f"/api/v1/orders/user/{shopper.id}"
    confirmed = await platform.client.get(
        base, params={"status": "CONFIRMED"}, headers=shopper.headers
    )
    assert sorted(o["orderId"] for o in confirmed.json()) == sorted(ids[:2])
    page = await platform.client.get(base, params={"limit": 2}, headers=shopper.headers)
    assert page.headers["X-Total-Count"] == "3"
    assert len(page.json()) == 2
    assert 'rel="next"' in page.headers["Link"]
    everyone = await platform.client.get(
        "/api/v1/orders", params={"status": "CANCELLED"}, headers=admin.headers
    )
    assert [o["orderId"] for o in everyone.json()] == [ids[2]]
    bad = await platform.client.get(base, params={"status": "LOST"}, headers=shopper.headers)
    assert bad.status_code == 400
    bad = await platform.client.get(base, params={"limit": 10_000}, headers=shopper.headers)
    assert bad.status_code == 400


async def test_owner_cancels_a_confirmed_order_stock_and_money_go_back(platform: Platform) -> None:
    admin = await make_admin(platform)
    shopper = await register_and_login(platform.client)
    mug = await product(platform, admin, price="10.00", stock=5)
    order_id = (await place(platform.client, shopper, [(mug, 2)])).json()["orderId"]
    assert (await settled(platform.client, shopper, order_id))["status"] == "CONFIRMED"
    assert await stock_of(platform, mug) == 3

    response = await platform.client.post(
        f"/api/v1/orders/{order_id}/cancel", headers=shopper.headers
    )
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["cancelReason"]) == (
        "CANCELLED",
        "cancelled_by_customer",
    )
    await saga_finished(platform, order_id)
    await platform.settle()
    assert await stock_of(platform, mug) == 5
    paid = await payments_of(platform, admin.headers, order_id)
    assert [(p["status"], p["amountRefunded"]) for p in paid] == [("refunded", "20.00")]
    order = (
        await platform.client.get(f"/api/v1/orders/{order_id}", headers=shopper.headers)
    ).json()
    assert order["amountRefunded"] == "20.00"
    # Cancelling again is harmless; a shipped order cannot be cancelled.
    again = await platform.client.post(f"/api/v1/orders/{order_id}/cancel", headers=shopper.headers)
    assert again.status_code == 200


async def test_staff_ship_deliver_and_refund(platform: Platform) -> None:
    admin = await make_admin(platform)
    shopper = await register_and_login(platform.client)
    mug = await product(platform, admin, price="10.00", stock=5)
    order_id = (await place(platform.client, shopper, [(mug, 3)])).json()["orderId"]
    await settled(platform.client, shopper, order_id)

    early = await platform.client.post(f"/api/v1/orders/{order_id}/deliver", headers=admin.headers)
    assert early.status_code == 409
    shipped = await platform.client.post(
        f"/api/v1/orders/{order_id}/ship",
        json={"trackingNumber": "1Z999", "carrier": "UPS"},
        headers=admin.headers,
    )
    assert shipped.status_code == 200, shipped.text
    assert (shipped.json()["status"], shipped.json()["trackingNumber"]) == ("SHIPPED", "1Z999")
    too_late = await platform.client.post(
        f"/api/v1/orders/{order_id}/cancel", headers=shopper.headers
    )
    assert too_late.status_code == 409
    delivered = await platform.client.post(
        f"/api/v1/orders/{order_id}/deliver", headers=admin.headers
    )
    assert delivered.json()["status"] == "DELIVERED"

    key = uuid.uuid4().hex
    headers = {**admin.headers, "Idempotency-Key": key}
    partial = await platform.client.post(
        f"/api/v1/orders/{order_id}/refund",
        json={"amount": "5.00", "reason": "damaged"},
        headers=headers,
    )
    assert partial.status_code == 200, partial.text
    assert (partial.json()["status"], partial.json()["amountRefunded"]) == ("DELIVERED", "5.00")
    replay = await platform.client.post(
        f"/api/v1/orders/{order_id}/refund",
        json={"amount": "5.00", "reason": "damaged"},
        headers=headers,
    )
    assert replay.json()["amountRefunded"] == "5.00"
    assert replay.headers["Idempotent-Replayed"] == "true"
    too_much = await platform.client.post(
        f"/api/v1/orders/{order_id}/refund",
        json={"amount": "30.00"},
        headers={**admin.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert too_much.status_code == 400
    rest = await platform.client.post(
        f"/api/v1/orders/{order_id}/refund",
        headers={**admin.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert rest.status_code == 200, rest.text
    assert (rest.json()["status"], rest.json()["amountRefunded"]) == ("REFUNDED", "30.00")
    statuses = [change["status"] for change in rest.json()["statusHistory"]]
    assert statuses == ["PENDING", "CONFIRMED", "SHIPPED", "DELIVERED", "REFUNDED"]


async def test_idempotency_key_answers_the_first_order(platform: Platform) -> None:
    admin = await make_admin(platform)
    alice = await register_and_login(platform.client)
    bob = await register_and_login(platform.client)
    mug = await product(platform, admin, stock=50)
    key = uuid.uuid4().hex

    answers = await asyncio.gather(
        *(place(platform.client, alice, [(mug, 1)], key=key) for _ in range(20))
    )
    created = [a for a in answers if a.status_code == 201]
    assert created
    assert all(a.status_code in (201, 409) for a in answers), [a.status_code for a in answers]
    assert len({a.json()["orderId"] for a in created}) == 1
    order_id = created[0].json()["orderId"]
    await settled(platform.client, alice, order_id)
    listed = await platform.client.get(f"/api/v1/orders/user/{alice.id}", headers=alice.headers)
    assert [o["orderId"] for o in listed.json()] == [order_id]

    again = await place(platform.client, alice, [(mug, 1)], key=key)
    assert (again.status_code, again.json()["orderId"]) == (201, order_id)
    other_body = await place(platform.client, alice, [(mug, 2)], key=key)
    assert other_body.status_code == 422
    # Keys belong to their caller: Bob's identical key makes Bob's own order.
    bobs = await place(platform.client, bob, [(mug, 1)], key=key)
    assert bobs.status_code == 201
    assert bobs.json()["orderId"] != order_id
