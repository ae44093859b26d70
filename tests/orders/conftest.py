"""Helpers for the orders tests: products to buy, shoppers, and waiting for a saga to end."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx

from tests.conftest import Account, Platform

FINAL = {"CONFIRMED", "CANCELLED"}


async def product(
    platform: Platform, admin: Account, *, price: str = "19.99", stock: int = 10, **extra: Any
) -> str:
    response = await platform.client.post(
        "/api/v1/products",
        json={
            "name": f"Thing {uuid.uuid4().hex[:6]}",
            "description": "Something to buy",
            "price": price,
            "stock": stock,
            **extra,
        },
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    product_id: str = response.json()["productId"]
    return product_id


async def stock_of(platform: Platform, product_id: str) -> int:
    # From the catalog itself: the gateway's cached page may show a count that
    # orders have since moved (docs/decisions/0014-cached-pages-and-stock-counts.md).
    catalog = platform.app.state.platform.directory.caller("catalog")
    answer = await catalog.request("GET", f"/products/{product_id}")
    assert answer.status == 200, answer.body
    stock: int = json.loads(answer.body)["stock"]
    return stock


async def deliver_last_webhook(platform: Platform, provider: Any) -> None:
    """The test provider's last webhook, delivered through the gateway, as a late one is."""
    webhook = provider.webhooks[-1]
    delivered = await platform.client.post(
        "/api/v1/payments/webhooks/test", content=webhook, headers=provider.signed_headers(webhook)
    )
    assert delivered.status_code == 200, delivered.text


async def place(
    client: httpx.AsyncClient,
    buyer: Account,
    items: list[tuple[str, int]],
    *,
    token: str = "tok_visa",
    key: str | None = None,
) -> httpx.Response:
    headers = dict(buyer.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(
        "/api/v1/orders",
        json={
            "items": [{"productId": pid, "quantity": quantity} for pid, quantity in items],
            "shippingAddress": "1 Main Street, Springfield",
            "paymentMethod": token,
        },
        headers=headers,
    )


async def settled(
    client: httpx.AsyncClient,
    account: Account,
    order_id: str,
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
) -> dict[str, Any]:
    """The order once its saga is over: CONFIRMED or CANCELLED (failing after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/v1/orders/{order_id}", headers=account.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in FINAL:
            return body
        assert time.monotonic() < deadline, f"order still {body['status']}: {body}"
        await asyncio.sleep(interval)


async def saga_finished(
    platform: Platform, order_id: str, *, timeout: float = 15.0, interval: float = 0.05
) -> None:
    """Wait until the order's saga has nothing left to do (compensation included)."""
    from panthera.orders.models import Order

    runtime = platform.app.state.platform.runtimes["orders"]
    deadline = time.monotonic() + timeout
    while True:
        async with runtime.database.read_sessions() as session:
            step = (await session.get(Order, uuid.UUID(order_id))).saga_step
        if step == "done":
            return
        assert time.monotonic() < deadline, f"the saga is still at {step}"
        await asyncio.sleep(interval)
