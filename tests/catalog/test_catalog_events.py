"""Every catalog change publishes its event through the catalog database's outbox.

Admin changes go through the gateway of an embedded platform; the reservation use
cases through the catalog app's internal endpoints, with the internal token. Each
step reads the outbox rows it added.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from panthera.catalog import inventory
from panthera.catalog.models import Reservation
from panthera.kernel.security.permissions import INTERNAL_TOKEN_HEADER
from panthera.kernel.service import ServiceRuntime
from tests.conftest import Account, Platform, make_admin, written_events


class Outbox:
    """The catalog's events, sent or still in its outbox, read a step at a time."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.seen: set[uuid.UUID] = set()

    async def new(self) -> list[tuple[str, dict[str, Any], str]]:
        """``(type, payload, subject)`` of the events written since the last call, in order."""
        events = [e for e in await written_events(self.runtime) if e.id not in self.seen]
        self.seen.update(e.id for e in events)
        return [(e.type, e.payload, e.subject) for e in events]

    async def one(self, event_type: str) -> dict[str, Any]:
        """The new rows are exactly one event, of this type: its payload."""
        rows = await self.new()
        assert [row[0] for row in rows] == [event_type], rows
        return rows[0][1]


def _catalog(platform: Platform) -> tuple[ServiceRuntime, httpx.AsyncClient]:
    """The catalog runtime, and a client for its own app (internal paths included)."""
    inner = platform.app.state.platform
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=inner.apps["catalog"]),
        base_url="http://catalog",
        headers={INTERNAL_TOKEN_HEADER: platform.settings.internal_token.get_secret_value()},
    )
    return inner.runtimes["catalog"], client


async def _create(platform: Platform, admin: Account, **body: object) -> dict[str, Any]:
    created = await platform.client.post("/api/v1/products", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    detail = await platform.client.get(f"/api/v1/products/{created.json()['productId']}")
    assert detail.status_code == 200
    product: dict[str, Any] = detail.json()
    return product


async def test_product_changes_publish_their_events(platform: Platform) -> None:
    admin = await make_admin(platform)
    runtime, catalog = _catalog(platform)
    outbox = Outbox(runtime)
    await outbox.new()
    kitchen = await platform.client.post(
        "/api/v1/categories", json={"name": "Kitchen"}, headers=admin.headers
    )
    assert kitchen.status_code == 201
    await outbox.new()  # the category's own events are not this test's concern
    product = await _create(
        platform,
        admin,
        name="Espresso Cup",
        description="Porcelain",
        category="kitchen",
        options=[{"name": "Colour", "values": ["White", "Black"]}],
        variants=[
            {"sku": "CUP-W", "optionValues": {"Colour": "White"}, "price": "9.00", "stock": 4},
            {"sku": "CUP-B", "optionValues": {"Colour": "Black"}, "price": "11.50", "stock": 0},
        ],
    )
    product_id = product["productId"]
    white, black = (
        next(v for v in product["variants"] if v["sku"] == sku) for sku in ("CUP-W", "CUP-B")
    )

    # Created: the product, its variants, and the opening stock of the stocked one.
    rows = await outbox.new()
    assert [row[0] for row in rows] == ["stock.changed", "product.created"]
    opening = rows[0][1]
    assert opening["variant_id"] == white["variantId"]
    assert (opening["on_hand"], opening["reserved"], opening["available"]) == (4, 0, 4)
    assert opening["cause"] == "adjustment"
    created, subject = rows[1][1], rows[1][2]
    assert subject == product_id
    assert created["product_id"] == product_id
    assert created["name"] == "Espresso Cup"
    assert created["currency"] == "USD"
    assert created["revision"] == 1
    assert created["category_id"] is not None
    assert sorted((v["sku"], v["price_amount"]) for v in created["variants"]) == [
        ("CUP-B", 1150),
        ("CUP-W", 900),
    ]

    # Updated: only the fields that changed are named; an unchanged field is no change.
    patched = await platform.client.patch(
        f"/api/v1/products/{product_id}",
        json={"name": "Espresso Cup Deluxe", "description": "Porcelain", "featured": True},
        headers=admin.headers,
    )
    assert patched.status_code == 200, patched.text
    updated = await outbox.one("product.updated")
    assert updated["changed"] == ["featured", "name"]
    assert updated["name"] == "Espresso Cup Deluxe"
    assert updated["revision"] == 2
    same = await platform.client.patch(
        f"/api/v1/products/{product_id}", json={"featured": True}, headers=admin.headers
    )
    assert same.status_code == 200
    assert await outbox.new() == []

    # One variant's price: price.changed with the old and new amounts.
    repriced = await platform.client.patch(
        f"/api/v1/products/{product_id}/variants/{black['variantId']}",
        json={"price": "10.00"},
        headers=admin.headers,
    )
    assert repriced.status_code == 200, repriced.text
    change = await outbox.one("price.changed")
    assert change["variant_id"] == black["variantId"]
    assert (change["old_amount"], change["new_amount"]) == (1150, 1000)
    assert change["currency"] == "USD"
    assert change["sku"] == "CUP-B"

    # The product's price sets every variant: one price.changed each that changes.
    patched = await platform.client.patch(
        f"/api/v1/products/{product_id}", json={"price": "10.00"}, headers=admin.headers
    )
    assert patched.status_code == 200, patched.text
    rows = await outbox.new()
    assert [row[0] for row in rows] == ["price.changed", "product.updated"]
    assert (rows[0][1]["variant_id"], rows[0][1]["old_amount"], rows[0][1]["new_amount"]) == (
        white["variantId"],
        900,
        1000,
    )
    assert rows[1][1]["changed"] == ["price"]
    assert {v["price_amount"] for v in rows[1][1]["variants"]} == {1000}

    # Deleted (archived): gone from the shop, the listing and search.
    deleted = await platform.client.delete(f"/api/v1/products/{product_id}", headers=admin.headers)
    assert deleted.status_code == 204
    gone = await outbox.one("product.deleted")
    assert gone["product_id"] == product_id
    assert gone["revision"] == updated["revision"] + 3
    assert (await platform.client.get(f"/api/v1/products/{product_id}")).status_code == 404
    listing = await platform.client.get("/api/v1/products")
    assert product_id not in {p["productId"] for p in listing.json()}
    assert listing.headers["X-Total-Count"] == "0"
    found = await platform.client.get("/api/v1/products", params={"q": "espresso"})
    assert found.json() == []
    in_category = await platform.client.get("/api/v1/products", params={"category": "kitchen"})
    assert in_category.json() == []
    # Changing or deleting it again is a 404 and publishes nothing.
    again = await platform.client.delete(f"/api/v1/products/{product_id}", headers=admin.headers)
    assert again.status_code == 404
    # It can no longer be reserved either.
    refused = await catalog.post(
        "/internal/reservations",
        json={"reference": "late", "lines": [{"variantId": white["variantId"], "quantity": 1}]},
    )
    assert refused.json()["status"] == "rejected"
    rejected = await outbox.one("stock.rejected")
    assert rejected["reason"] == "unknown_product"
    await catalog.aclose()


async def test_stock_changes_and_reservations_publish_their_events(platform: Platform) -> None:
    admin = await make_admin(platform)
    runtime, catalog = _catalog(platform)
    outbox = Outbox(runtime)
    product = await _create(platform, admin, name="Tea Tin", price="6.00", stock=5)
    (variant,) = product["variants"]
    variant_id = variant["variantId"]
    await outbox.new()

    # An adjustment.
    adjusted = await platform.client.post(
        f"/api/v1/inventory/variants/{variant_id}/adjustments",
        json={"delta": -2, "reason": "two dented"},
        headers=admin.headers,
    )
    assert adjusted.status_code == 200, adjusted.text
    stock = await outbox.one("stock.changed")
    assert stock["variant_id"] == variant_id
    assert stock["product_id"] == product["productId"]
    assert stock["sku"] == variant["sku"]
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (3, 0, 3)
    assert stock["cause"] == "adjustment"
    refused = await platform.client.post(
        f"/api/v1/inventory/variants/{variant_id}/adjustments",
        json={"delta": -4, "reason": "count"},
        headers=admin.headers,
    )
    assert refused.status_code == 409
    assert await outbox.new() == []

    async def reserve(reference: str, quantity: int, **line: str) -> httpx.Response:
        response = await catalog.post(
            "/internal/reservations",
            json={"reference": reference, "lines": [{"quantity": quantity, **line}]},
        )
        assert response.status_code == 200, response.text
        return response

    # The internal endpoints want the internal token.
    anonymous = await catalog.post(
        "/internal/reservations",
        json={"reference": "x", "lines": [{"variantId": variant_id, "quantity": 1}]},
        headers={INTERNAL_TOKEN_HEADER: "wrong"},
    )
    assert anonymous.status_code == 403
    assert await outbox.new() == []

    async def shown_stock() -> int:
        # From the catalog itself, not a page the gateway may have cached.
        detail = await catalog.get(f"/products/{product['productId']}")
        assert detail.status_code == 200, detail.text
        (shown,) = detail.json()["variants"]
        # The product's total moves with its variant's available stock.
        assert detail.json()["stock"] == shown["stock"]
        return int(shown["stock"])

    # Reserved: one stock.reserved carrying the lines; the variant is still in
    # stock, so no stock.changed.
    made = await reserve("order-1", 2, variantId=variant_id)
    assert made.json()["status"] == "active"
    rows = await outbox.new()
    assert [row[0] for row in rows] == ["stock.reserved"]
    assert await shown_stock() == 1
    reserved, subject = rows[0][1], rows[0][2]
    assert subject == "order-1"
    assert reserved["reference"] == "order-1"
    assert reserved["reservation_id"] == made.json()["reservationId"]
    assert reserved["currency"] == "USD"
    assert reserved["lines"] == [
        {
            "product_id": product["productId"],
            "variant_id": variant_id,
            "sku": variant["sku"],
            "quantity": 2,
            "unit_price_amount": 600,
        }
    ]
    # Asking again answers the same and publishes nothing.
    again = await reserve("order-1", 1, variantId=variant_id)
    assert again.json()["reservationId"] == made.json()["reservationId"]
    assert again.json()["lines"][0]["quantity"] == 2
    assert await outbox.new() == []

    # Rejected: more than is available; the product id stands for its only variant.
    short = await reserve("order-2", 2, productId=product["productId"])
    assert short.json()["status"] == "rejected"
    rejected = await outbox.one("stock.rejected")
    assert rejected["reference"] == "order-2"
    assert rejected["reason"] == "insufficient_stock"
    assert rejected["lines"] == [
        {
            "product_id": product["productId"],
            "variant_id": variant_id,
            "requested": 2,
            "available": 1,
        }
    ]
    unknown = await reserve("order-3", 1, variantId=str(uuid.uuid4()))
    assert unknown.json()["reason"] == "unknown_product"
    assert (await outbox.one("stock.rejected"))["reason"] == "unknown_product"

    # Released, once: the second release is harmless and silent.
    for _ in range(2):
        released = await catalog.post("/internal/reservations/order-1/release")
        assert released.status_code == 204
    rows = await outbox.new()
    assert [row[0] for row in rows] == ["stock.released"]
    assert await shown_stock() == 3
    assert rows[0][1] == {
        "reservation_id": made.json()["reservationId"],
        "reference": "order-1",
        "reason": "released",
    }
    # A released reservation cannot be committed.
    closed = await catalog.post("/internal/reservations/order-1/commit")
    assert closed.status_code == 409
    assert await outbox.new() == []

    # A reservation that takes the last units: stock.changed says the variant is out of stock.
    sale = await reserve("order-4", 3, variantId=variant_id)
    assert sale.json()["status"] == "active"
    rows = await outbox.new()
    assert [row[0] for row in rows] == ["stock.changed", "stock.reserved"]
    assert (
        rows[0][1]["on_hand"],
        rows[0][1]["reserved"],
        rows[0][1]["available"],
        rows[0][1]["cause"],
    ) == (3, 3, 0, "reservation")
    assert await shown_stock() == 0
    # Committed, once: the units leave the shelf; what is available does not change.
    for _ in range(2):
        committed = await catalog.post("/internal/reservations/order-4/commit")
        assert committed.status_code == 204
    rows = await outbox.new()
    assert [row[0] for row in rows] == ["stock.committed"]
    assert rows[0][1] == {"reservation_id": sale.json()["reservationId"], "reference": "order-4"}
    assert await shown_stock() == 0
    assert (await catalog.post("/internal/reservations/order-4/release")).status_code == 409
    missing = await catalog.post("/internal/reservations/no-such-order/release")
    assert missing.status_code == 404
    assert await outbox.new() == []

    # Expired: a reservation past its time is released by the expiry sweep.
    restock = await platform.client.post(
        f"/api/v1/inventory/variants/{variant_id}/adjustments",
        json={"delta": 2, "reason": "delivery"},
        headers=admin.headers,
    )
    assert restock.status_code == 200
    await reserve("order-5", 1, variantId=variant_id)
    await outbox.new()
    async with runtime.database.sessions() as session:
        await session.execute(
            update(Reservation)
            .where(Reservation.reference == "order-5")
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    async with runtime.database.read_sessions() as session:
        due = await inventory.due_for_expiry(session, datetime.now(UTC))
    assert due in (["order-5"], [])  # the platform's own sweep may have been first
    for reference in due:
        async with runtime.uow() as uow:
            await inventory.release(uow, reference, reason="expired")
            await uow.commit()
    rows = await outbox.new()
    assert [row[0] for row in rows] == ["stock.released"]
    assert rows[0][1]["reason"] == "expired"
    assert rows[0][1]["reference"] == "order-5"
    assert await shown_stock() == 2

    # Released stock that brings a sold-out variant back: stock.changed says so.
    await reserve("order-6", 2, variantId=variant_id)
    assert [row[0] for row in await outbox.new()] == ["stock.changed", "stock.reserved"]
    assert (await catalog.post("/internal/reservations/order-6/release")).status_code == 204
    rows = await outbox.new()
    assert [row[0] for row in rows] == ["stock.changed", "stock.released"]
    assert (rows[0][1]["reserved"], rows[0][1]["available"], rows[0][1]["cause"]) == (
        0,
        2,
        "release",
    )
    assert await shown_stock() == 2
    await catalog.aclose()
