"""The list route's direct path answers exactly what FastAPI's endpoint answers, or declines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, request_response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from tests.conftest import Platform, make_admin, make_settings, start_platform

_NUMBERS = [
    "",
    "0",
    "1",
    "7",
    "20",
    "100",
    "101",
    "020",
    "-1",
    "1.0",
    "1e2",
    "x",
    "99999",
    "100000",
    "100001",
    "٣",
]
_BOOLEANS = [
    "",
    "true",
    "false",
    "True",
    "FALSE",
    "1",
    "0",
    "yes",
    "No",
    "on",
    "off",
    "t",
    "f",
    "maybe",
    "2",
]
_TEXTS = [
    "",
    " ",
    "lamp",
    "desk lamp",
    "kitchen",
    "home",
    "nope",
    "a" * 120,
    "a" * 121,
    "a" * 201,
    "café",
    "%",
    "+",
]
_PRICES = ["", "1", "10.00", "10.5", "-1", "1.234", "abc", "9" * 21, "0"]
_SORTS = [
    "",
    "newest",
    "oldest",
    "price",
    "-price",
    "name",
    "-name",
    "relevance",
    "NAME",
    "cheapest",
]

_VALUES: dict[str, list[str]] = {
    "limit": _NUMBERS,
    "offset": _NUMBERS,
    "category": _TEXTS,
    "q": _TEXTS,
    "sort": _SORTS,
    "minPrice": _PRICES,
    "maxPrice": _PRICES,
    "inStock": _BOOLEANS,
    "featured": _BOOLEANS,
    "other": ["1", ""],
}


def _pairs() -> st.SearchStrategy[list[tuple[str, str]]]:
    pair = st.sampled_from(sorted(_VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(_VALUES[name]))
    )
    return st.lists(pair, max_size=6)


def _query(pairs: list[tuple[str, str]], *, plus: bool) -> bytes:
    # Both spellings of a space, as browsers and clients send them.
    encode = (lambda text: quote(text, safe="").replace("%20", "+")) if plus else quote
    return "&".join(f"{name}={encode(value)}" for name, value in pairs).encode()


class _Catalog:
    """An embedded platform with a few products, on a loop of the test's own."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        # Every answer from the catalog itself, not the gateway's cache.
        settings = make_settings(data_dir, response_cache_enabled=False)
        self.app, self.client = self.loop.run_until_complete(start_platform(settings))
        self.platform = Platform(app=self.app, client=self.client, settings=settings)
        self.loop.run_until_complete(self._fill())
        catalog: FastAPI = self.app.state.platform.apps["catalog"]
        self.catalog = catalog
        (self.route,) = [
            route
            for route in catalog.routes
            if isinstance(route, APIRoute) and route.path == "/products" and "GET" in route.methods
        ]
        # The same route without its direct path: FastAPI's endpoint alone.
        self.full_app = request_response(APIRoute.get_route_handler(self.route))

    async def _fill(self) -> None:
        admin = await make_admin(self.platform)
        headers = admin.headers
        home = await self.client.post("/api/v1/categories", json={"name": "Home"}, headers=headers)
        kitchen = await self.client.post(
            "/api/v1/categories",
            json={"name": "Kitchen", "parent": home.json()["slug"]},
            headers=headers,
        )
        for index, (name, price, stock, category) in enumerate(
            [
                ("Desk Lamp", "25.00", 3, home.json()["slug"]),
                ("Lamp Shade", "9.50", 0, home.json()["slug"]),
                ("Chef Knife", "80.00", 5, kitchen.json()["slug"]),
                ("Café Cup", "4.25", 12, None),
            ]
        ):
            body: dict[str, Any] = {
                "name": name,
                "description": f"{name}, item {index}",
                "price": price,
                "stock": stock,
                "featured": index % 2 == 0,
            }
            if category:
                body["category"] = category
            created = await self.client.post("/api/v1/products", json=body, headers=headers)
            assert created.status_code == 201, created.text

    async def _get(self, query: bytes) -> tuple[int, bytes, dict[str, str]]:
        response = await self.client.get(httpx.URL("/api/v1/products", query=query))
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("date", "x-request-id", "traceparent")
        }
        body = response.content
        if response.status_code >= 400:
            # Each request has an id of its own; the rest of a problem must match.
            body = json.dumps({**response.json(), "requestId": None}).encode()
        return response.status_code, body, headers

    async def both(self, query: bytes) -> tuple[Any, Any]:
        """What the route answers (direct path first) and what FastAPI's endpoint alone does."""
        routed = await self._get(query)
        direct_app = self.route.app
        self.route.app = self.full_app
        try:
            endpoint = await self._get(query)
        finally:
            self.route.app = direct_app
        return routed, endpoint

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.app.state.platform.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Catalog]:
    fixture = _Catalog(tmp_path_factory.mktemp("direct"))
    try:
        yield fixture
    finally:
        fixture.close()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pairs=_pairs(), plus=st.booleans())
def test_the_direct_path_answers_as_the_endpoint_does(
    catalog: _Catalog, pairs: list[tuple[str, str]], plus: bool
) -> None:
    query = _query(pairs, plus=plus)
    routed, endpoint = catalog.loop.run_until_complete(catalog.both(query))
    assert routed == endpoint, query


@pytest.mark.parametrize(
    "query",
    [
        b"",
        b"limit=20",
        b"q=lamp&limit=20",
        b"q=desk+lamp",
        b"category=home&sort=price&inStock=true",
        b"minPrice=5.00&maxPrice=50&offset=1&limit=2&featured=false",
    ],
)
def test_the_usual_queries_take_the_direct_path(catalog: _Catalog, query: bytes) -> None:
    from panthera.catalog.endpoints import _list_products_direct

    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/products",
            "query_string": query,
            "headers": [],
            "app": catalog.catalog,
        }
    )
    answer = catalog.loop.run_until_complete(_list_products_direct(request))
    assert answer is not None, f"{query!r} was left to FastAPI"
    assert answer.status_code == 200
