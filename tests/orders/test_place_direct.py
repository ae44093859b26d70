"""Placing an order answers on its direct path exactly as FastAPI's endpoint does.

Each request is sent twice through the gateway: once as the route is (direct path
first), once with the route's application swapped for FastAPI's endpoint alone. The
two answers must be the same status, headers and body, the new order's id aside
(paired up and checked to have the same shape); an Idempotency-Key differs by one
letter between the two, so that neither answers the other's stored first answer.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from panthera.kernel.http.direct import fastapi_only
from tests.conftest import Account, Platform, make_admin, register_and_login
from tests.direct_paths import Answer, as_first, endpoint_calls, route_of
from tests.orders.conftest import product

PLACE = "/api/v1/orders"
KEY = "@KEY@"


def _valid(ids: dict[str, str]) -> dict[str, Any]:
    return {
        "items": [{"productId": ids["plenty"], "quantity": 2}],
        "shippingAddress": "1 Main Street, Springfield",
        "paymentMethod": "tok_visa",
    }


def _items(*lines: dict[str, Any]) -> dict[str, Any]:
    return {"items": list(lines)}


def _without(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != name}


# Each a change of the valid body: (name, function of the valid body and the ids).
BODIES: list[tuple[str, Any]] = [
    ("valid", lambda body, ids: body),
    (
        "two products",
        lambda body, ids: (
            body
            | _items(
                {"productId": ids["plenty"], "quantity": 1},
                {"productId": ids["other"], "quantity": 3},
            )
        ),
    ),
    (
        "a variant named",
        lambda body, ids: (
            body
            | _items(
                {"productId": ids["plenty"], "variantId": ids["plenty.variant"], "quantity": 1}
            )
        ),
    ),
    ("out of stock", lambda body, ids: body | _items({"productId": ids["none"], "quantity": 1})),
    (
        "unknown product",
        lambda body, ids: body | _items({"productId": str(uuid.UUID(int=7)), "quantity": 1}),
    ),
    ("not a uuid", lambda body, ids: body | _items({"productId": "abc", "quantity": 1})),
    ("quantity 0", lambda body, ids: body | _items({"productId": ids["plenty"], "quantity": 0})),
    (
        "quantity as text",
        lambda body, ids: body | _items({"productId": ids["plenty"], "quantity": "2"}),
    ),
    (
        "quantity 1001",
        lambda body, ids: body | _items({"productId": ids["plenty"], "quantity": 1001}),
    ),
    ("no items", lambda body, ids: body | _items()),
    ("a price sent", lambda body, ids: body | {"totalAmount": "0.01"}),
    ("blank address", lambda body, ids: body | {"shippingAddress": "   "}),
    ("padded address", lambda body, ids: body | {"shippingAddress": "  2 Side Road  "}),
    ("no payment method", lambda body, ids: _without(body, "paymentMethod")),
    ("a card number", lambda body, ids: body | {"paymentMethod": "4242424242424242"}),
    ("declined card", lambda body, ids: body | {"paymentMethod": "tok_chargeDeclined"}),
    ("a list", lambda body, ids: [body]),
]
AUTH = ["good", "missing", "lower-case scheme", "basic", "scheme alone", "two spaces", "bad token"]
KEYS: list[str | None] = [None, f"key-{KEY}-1", "", "bad key!"]
CONTENT_TYPES: list[str | None] = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    None,
]


def _authorization(kind: str, buyer: Account) -> list[tuple[str, str]]:
    token = buyer.access_token
    value = {
        "good": f"Bearer {token}",
        "missing": None,
        "lower-case scheme": f"bearer {token}",
        "basic": f"Basic {token}",
        "scheme alone": "Bearer",
        "two spaces": f"Bearer  {token}",
        "bad token": f"Bearer {token[:-4]}AAAA",
    }[kind]
    return [] if value is None else [("authorization", value)]


class _Orders:
    def __init__(self, platform: Platform, buyer: Account, ids: dict[str, str]) -> None:
        self.platform = platform
        self.buyer = buyer
        self.ids = ids
        self.app = platform.app.state.platform.apps["orders"]
        self.route = route_of(self.app, "POST", "/orders")

    async def send(
        self, content: bytes, auth: str, key: str | None, content_type: str | None
    ) -> Answer:
        headers = _authorization(auth, self.buyer)
        if content_type is not None:
            headers.append(("content-type", content_type))
        if key is not None:
            headers.append(("idempotency-key", key))
        response = await self.platform.client.post(PLACE, content=content, headers=headers)
        return Answer.of(response)

    async def both(
        self,
        body: Any,
        *,
        auth: str = "good",
        key: str | None = None,
        content_type: str | None = "application/json",
        raw: bytes | None = None,
    ) -> tuple[Answer, Answer]:
        """The route's answer and FastAPI's alone, with the key's marker made ``a``/``b``."""
        content = raw if raw is not None else orjson.dumps(body)
        direct = await self.send(content, auth, key and key.replace(KEY, "a"), content_type)
        with fastapi_only(self.route):
            alone = await self.send(content, auth, key and key.replace(KEY, "b"), content_type)
        return direct, alone


@pytest.fixture
async def orders(platform: Platform) -> _Orders:
    admin = await make_admin(platform)
    buyer = await register_and_login(platform.client)
    ids = {
        "plenty": await product(platform, admin, price="12.50", stock=1_000_000),
        "other": await product(platform, admin, price="3.10", stock=1_000_000),
        "none": await product(platform, admin, price="9.99", stock=0),
    }
    catalog = platform.app.state.platform.directory.caller("catalog")
    detail = await catalog.request("GET", f"/products/{ids['plenty']}")
    ids["plenty.variant"] = orjson.loads(detail.body)["variants"][0]["variantId"]
    return _Orders(platform, buyer, ids)


def _same(direct: Answer, alone: Answer) -> None:
    assert as_first(direct, alone, {}) == direct, (direct, alone)


@pytest.mark.parametrize(("name", "change"), BODIES, ids=[name for name, _ in BODIES])
async def test_each_body_is_answered_alike(orders: _Orders, name: str, change: Any) -> None:
    body = change(_valid(orders.ids), orders.ids)
    _same(*await orders.both(body))


@pytest.mark.parametrize("auth", AUTH)
@pytest.mark.parametrize("key", KEYS)
async def test_each_caller_and_key_is_answered_alike(
    orders: _Orders, auth: str, key: str | None
) -> None:
    for body in (_valid(orders.ids), {"items": "not a list"}):
        _same(*await orders.both(body, auth=auth, key=key))


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
async def test_each_content_type_and_broken_json_is_answered_alike(
    orders: _Orders, content_type: str | None
) -> None:
    valid = orjson.dumps(_valid(orders.ids))
    for raw in (valid, valid[:-1], b"\xef\xbb\xbf" + valid, b""):
        _same(*await orders.both(None, raw=raw, content_type=content_type))


async def test_a_key_sent_again_answers_the_first_order_on_either_path(orders: _Orders) -> None:
    body = _valid(orders.ids)
    key = f"again-{uuid.uuid4()}"
    first = await orders.send(orjson.dumps(body), "good", key, "application/json")
    assert first.status == 201
    with fastapi_only(orders.route):
        again = await orders.send(orjson.dumps(body), "good", key, "application/json")
    assert (again.status, again.json()) == (first.status, first.json())
    other = _valid(orders.ids) | {"shippingAddress": "Elsewhere"}
    direct, alone = (
        await orders.send(orjson.dumps(other), "good", key, "application/json"),
        None,
    )
    with fastapi_only(orders.route):
        alone = await orders.send(orjson.dumps(other), "good", key, "application/json")
    assert direct.status == alone.status == 422
    _same(direct, alone)


async def test_a_well_formed_order_does_not_reach_fastapis_endpoint(orders: _Orders) -> None:
    with endpoint_calls(orders.route) as calls:
        placed = await orders.send(
            orjson.dumps(_valid(orders.ids)), "good", None, "application/json"
        )
        assert placed.status == 201, placed.body
        assert placed.json()["status"] == "PENDING"
        keyed = await orders.send(
            orjson.dumps(_valid(orders.ids)), "good", str(uuid.uuid4()), "application/json"
        )
        assert keyed.status == 201, keyed.body
        assert calls == []
        # Declined: FastAPI's endpoint words the error.
        refused = await orders.send(b"{", "good", None, "application/json")
        assert refused.status == 400
        assert len(calls) == 0  # a body FastAPI cannot read never reaches the endpoint
        unsigned = await orders.send(
            orjson.dumps(_valid(orders.ids)), "missing", None, "application/json"
        )
        assert unsigned.status == 401
