"""The gateway's response cache: anonymous catalog reads, kept fresh by the catalog's events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.types import Message, Scope, Send

from panthera.gateway.cache import (
    CONSUMER,
    INVALIDATED_BY,
    MISS,
    CachedResponse,
    Headers,
    MemoryResponseCache,
    ResponseCaching,
    cache_key,
    etag_matches,
    invalidator,
    normalise_query,
    strong_etag,
)
from panthera.kernel.events.envelope import Envelope
from panthera.kernel.settings import EventTransportKind, Settings
from panthera.runtime.apps import _response_cache
from panthera.runtime.platform import Platform as Runtime
from tests.conftest import Account, Platform, make_admin, start_platform


async def _product(platform: Platform, admin: Account, **body: Any) -> str:
    response = await platform.client.post("/api/v1/products", json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    product_id: str = response.json()["productId"]
    return product_id


async def _category(platform: Platform, admin: Account, name: str) -> str:
    response = await platform.client.post(
        "/api/v1/categories", json={"name": name}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    slug: str = response.json()["slug"]
    return slug


async def _cached(platform: Platform, url: str, **params: Any) -> httpx.Response:
    """GET ``url`` twice: a miss that fills the cache, then the hit it serves."""
    first = await platform.client.get(url, params=params)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "MISS"
    second = await platform.client.get(url, params=params)
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    return second


# ---------------------------------------------------------------- through the gateway


async def test_anonymous_reads_miss_then_hit_with_the_same_body_and_etag(
    platform: Platform,
) -> None:
    admin = await make_admin(platform)
    kitchen = await _category(platform, admin, "Kitchen")
    product = await _product(
        platform, admin, name="Kettle", price="30.00", stock=4, category=kitchen
    )
    await _product(platform, admin, name="Toaster", price="25.00", stock=1, category=kitchen)
    await platform.settle()

    url = "/api/v1/products"
    params = {"category": kitchen, "limit": "1", "sort": "name"}
    miss = await platform.client.get(url, params=params)
    assert miss.status_code == 200
    assert miss.headers["x-cache"] == "MISS"
    hit = await platform.client.get(url, params=params)
    assert hit.status_code == 200
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == miss.content
    assert [p["name"] for p in hit.json()] == ["Kettle"]
    etag = miss.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert len(etag) == 34
    assert hit.headers["etag"] == etag
    assert hit.headers["cache-control"] == "public, max-age=0, must-revalidate"
    assert miss.headers["cache-control"] == "public, max-age=0, must-revalidate"
    # The paging headers are replayed; the gateway's own are per request.
    assert hit.headers["x-total-count"] == miss.headers["x-total-count"] == "2"
    assert hit.headers["link"] == miss.headers["link"]
    assert hit.headers["content-type"] == "application/json"
    assert int(hit.headers["content-length"]) == len(hit.content)
    assert hit.headers["x-content-type-options"] == "nosniff"
    assert hit.headers["x-request-id"] != miss.headers["x-request-id"]

    # A validator that matches answers 304 without a body, in any of its spellings.
    for if_none_match in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        not_modified = await platform.client.get(
            url, params=params, headers={"If-None-Match": if_none_match}
        )
        assert not_modified.status_code == 304
        assert not_modified.content == b""
        assert not_modified.headers["etag"] == etag
        assert not_modified.headers["x-cache"] == "HIT"
    stale = await platform.client.get(url, params=params, headers={"If-None-Match": '"old"'})
    assert stale.status_code == 200
    assert stale.content == miss.content

    # HEAD is answered from the GET's entry.
    head = await platform.client.head(url, params=params)
    assert head.status_code == 200
    assert head.headers["x-cache"] == "HIT"
    assert head.headers["etag"] == etag
    assert head.content == b""

    # The detail route too, and a 304 also on a miss: the ETag of the fresh answer.
    detail = await _cached(platform, f"/api/v1/products/{product}")
    assert detail.json()["name"] == "Kettle"
    categories = await _cached(platform, "/api/v1/categories")
    assert [c["slug"] for c in categories.json()] == [kitchen]
    await platform.client.post("/api/v1/categories", json={"name": "Garden"}, headers=admin.headers)
    await platform.settle()
    fresh = await platform.client.get("/api/v1/categories")
    assert fresh.headers["x-cache"] == "MISS"
    conditional_hit = await platform.client.get(
        "/api/v1/categories", headers={"If-None-Match": fresh.headers["etag"]}
    )
    assert conditional_hit.headers["x-cache"] == "HIT"
    assert conditional_hit.status_code == 304
    await platform.client.patch(
        "/api/v1/categories/garden", json={"name": "Yard"}, headers=admin.headers
    )
    await platform.settle()
    # Invalidated: this is a miss, and the client's copy is still current.
    unchanged_tree = await platform.client.get(
        f"/api/v1/products/{product}", headers={"If-None-Match": detail.headers["etag"]}
    )
    assert unchanged_tree.headers["x-cache"] == "MISS"
    assert unchanged_tree.status_code == 304
    assert unchanged_tree.content == b""
    assert unchanged_tree.headers["etag"] == detail.headers["etag"]


async def test_requests_with_credentials_are_never_cached(platform: Platform) -> None:
    admin = await make_admin(platform)
    product = await _product(platform, admin, name="Lamp", price="10.00", stock=2)
    url = f"/api/v1/products/{product}"
    for _ in range(2):
        signed_in = await platform.client.get(url, headers=admin.headers)
        assert signed_in.status_code == 200
        assert signed_in.headers["x-cache"] == "BYPASS"
        assert "etag" not in signed_in.headers
    with_cookie = await platform.client.get(url, headers={"Cookie": "session=abc"})
    assert with_cookie.headers["x-cache"] == "BYPASS"
    # Nothing they fetched was stored: the first anonymous read is a miss.
    assert (await platform.client.get(url)).headers["x-cache"] == "MISS"
    assert (await platform.client.get(url)).headers["x-cache"] == "HIT"
    # And a hit is never handed to a signed-in caller.
    assert (await platform.client.get(url, headers=admin.headers)).headers["x-cache"] == "BYPASS"
    # Writes on cacheable routes are only forwarded.
    created = await platform.client.post(
        "/api/v1/products", json={"name": "Rug", "price": "5.00"}, headers=admin.headers
    )
    assert created.status_code == 201
    assert "x-cache" not in created.headers
    # Routes not declared cacheable are left alone.
    users = await platform.client.get("/api/v1/users/me")
    assert "x-cache" not in users.headers


async def test_catalog_changes_make_the_next_read_a_miss_with_new_data(
    platform: Platform,
) -> None:
    admin = await make_admin(platform)
    product = await _product(platform, admin, name="Mug", price="8.00", stock=10)
    await platform.settle()
    detail_url = f"/api/v1/products/{product}"
    detail = await _cached(platform, detail_url)
    variant = detail.json()["variants"][0]["variantId"]
    listing = await _cached(platform, "/api/v1/products")
    assert listing.headers["x-total-count"] == "1"

    async def after(change: Callable[[], Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        response = await change()
        assert response.status_code in (200, 201, 204), response.text
        await platform.settle()
        fresh_detail = await platform.client.get(detail_url)
        fresh_listing = await platform.client.get("/api/v1/products")
        assert fresh_detail.headers["x-cache"] == "MISS"
        assert fresh_listing.headers["x-cache"] == "MISS"
        assert (await platform.client.get(detail_url)).headers["x-cache"] == "HIT"
        return fresh_detail.json(), fresh_listing.json()

    # product.updated
    detail_body, listing_body = await after(
        lambda: platform.client.patch(detail_url, json={"name": "Big Mug"}, headers=admin.headers)
    )
    assert detail_body["name"] == "Big Mug"
    assert listing_body[0]["name"] == "Big Mug"
    # price.changed
    detail_body, listing_body = await after(
        lambda: platform.client.patch(
            f"{detail_url}/variants/{variant}", json={"price": "9.50"}, headers=admin.headers
        )
    )
    assert detail_body["price"] == "9.50"
    assert listing_body[0]["price"] == "9.50"
    # stock.changed
    detail_body, listing_body = await after(
        lambda: platform.client.post(
            f"/api/v1/inventory/variants/{variant}/adjustments",
            json={"delta": -3, "reason": "broken in the warehouse"},
            headers=admin.headers,
        )
    )
    assert detail_body["stock"] == 7
    assert listing_body[0]["stock"] == 7
    # A reservation that leaves the variant in stock (stock.reserved, through the
    # catalog's internal API as orders call it) leaves cached pages be: their
    # counts may lag until the entry's TTL.
    catalog = platform.app.state.platform.directory.caller("catalog")

    async def internal(path: str, json: Any = None) -> httpx.Response:
        answer = await catalog.request("POST", path, json=json)
        return httpx.Response(answer.status, content=answer.body)

    held = await internal(
        "/internal/reservations",
        json={"reference": "order-1", "lines": [{"variantId": variant, "quantity": 2}]},
    )
    assert held.status_code == 200, held.text
    await platform.settle()
    lagging = await platform.client.get(detail_url)
    assert lagging.headers["x-cache"] == "HIT"
    assert lagging.json()["stock"] == 7
    # The last units held: the variant is out of stock (stock.changed).
    detail_body, listing_body = await after(
        lambda: internal(
            "/internal/reservations",
            json={"reference": "order-2", "lines": [{"variantId": variant, "quantity": 5}]},
        )
    )
    assert detail_body["stock"] == 0
    assert listing_body[0]["stock"] == 0
    in_stock = await platform.client.get("/api/v1/products?inStock=true")
    assert in_stock.json() == []
    # Released: back in stock (stock.changed).
    detail_body, listing_body = await after(
        lambda: internal("/internal/reservations/order-2/release")
    )
    assert detail_body["stock"] == 5
    assert listing_body[0]["stock"] == 5
    # product.created: the listing (cached by the last round) grows.
    _, listing_body = await after(
        lambda: platform.client.post(
            "/api/v1/products", json={"name": "Cup", "price": "4.00"}, headers=admin.headers
        )
    )
    assert {p["name"] for p in listing_body} == {"Big Mug", "Cup"}
    # product.deleted: the detail is gone, and the 404 is not cached.
    deleted = await platform.client.delete(detail_url, headers=admin.headers)
    assert deleted.status_code == 204
    await platform.settle()
    for _ in range(2):
        gone = await platform.client.get(detail_url)
        assert gone.status_code == 404
        assert gone.headers["x-cache"] == "MISS"


async def test_query_parameter_order_and_spelling_share_one_entry(platform: Platform) -> None:
    admin = await make_admin(platform)
    await _product(platform, admin, name="Blue Chair", price="40.00", stock=1)
    await platform.settle()
    first = await platform.client.get("/api/v1/products?limit=5&sort=name&q=blue+chair")
    assert first.headers["x-cache"] == "MISS"
    assert [p["name"] for p in first.json()] == ["Blue Chair"]
    for spelling in (
        "/api/v1/products?sort=name&q=blue%20chair&limit=5",
        "/api/v1/products?q=blue+chair&limit=5&sort=name",
    ):
        again = await platform.client.get(spelling)
        assert again.headers["x-cache"] == "HIT", spelling
        assert again.content == first.content
        assert again.headers["etag"] == first.headers["etag"]
    other = await platform.client.get("/api/v1/products?limit=6&sort=name&q=blue+chair")
    assert other.headers["x-cache"] == "MISS"


async def test_errors_are_not_cached(platform: Platform) -> None:
    missing = f"/api/v1/products/{uuid.uuid4()}"
    for _ in range(2):
        response = await platform.client.get(missing)
        assert response.status_code == 404
        assert response.headers["x-cache"] == "MISS"
        assert "etag" not in response.headers
        assert response.headers["content-type"] == "application/problem+json"
    for _ in range(2):
        invalid = await platform.client.get("/api/v1/products", params={"limit": 10_000})
        assert invalid.status_code == 400
        assert invalid.headers["x-cache"] == "MISS"


async def test_the_cache_can_be_turned_off(settings_factory: Callable[..., Settings]) -> None:
    app, client = await start_platform(settings_factory(response_cache_enabled=False))
    try:
        for _ in range(2):
            response = await client.get("/api/v1/categories")
            assert response.status_code == 200
            assert "x-cache" not in response.headers
            assert "etag" not in response.headers
    finally:
        await client.aclose()
        await app.state.platform.stop()


def test_no_cache_where_invalidations_could_be_missed(
    settings_factory: Callable[..., Settings],
) -> None:
    # The gateway alone on the embedded transport: the catalog's events stay in its process.
    alone = settings_factory()
    assert _response_cache(alone, Runtime(alone, ())) is None
    # RabbitMQ without Redis: replicas would share one queue but not one generation.
    rabbit = settings_factory(
        event_transport=EventTransportKind.RABBITMQ, amqp_url="amqp://guest:guest@127.0.0.1/"
    )
    assert _response_cache(rabbit, Runtime(rabbit, ())) is None
    # Embedded with the catalog in process: in memory, subscribed.
    embedded = settings_factory(response_cache_max_bytes=1234)
    runtime = Runtime(embedded, ("catalog",))
    cache = _response_cache(embedded, runtime)
    assert isinstance(cache, MemoryResponseCache)
    assert [name for name, _, _ in runtime._consumers] == [CONSUMER]


# ----------------------------------------------------------------------- units


def _entry(body: bytes = b"x" * 100) -> CachedResponse:
    headers = ((b"content-type", b"application/json"),)
    return CachedResponse(200, headers, body, strong_etag(body, headers))


async def test_memory_cache_evicts_least_recently_used_beyond_its_bytes() -> None:
    entry = _entry()
    cache = MemoryResponseCache(max_bytes=entry.size * 3)
    for key in ("a", "b", "c"):
        await cache.store("catalog", key, 0, entry, ttl_seconds=60)
    assert await cache.lookup("catalog", "a") == (0, entry)  # now the most recently used
    await cache.store("catalog", "d", 0, entry, ttl_seconds=60)
    assert len(cache) == 3
    assert cache.size_bytes <= entry.size * 3
    assert await cache.lookup("catalog", "b") == (0, None)
    for key in ("a", "c", "d"):
        assert (await cache.lookup("catalog", key))[1] == entry
    # One entry larger than the whole budget is not kept, and evicts nothing.
    await cache.store("catalog", "huge", 0, _entry(b"x" * entry.size * 3), ttl_seconds=60)
    assert await cache.lookup("catalog", "huge") == (0, None)
    assert len(cache) == 3
    # Replacing an entry does not count it twice.
    await cache.store("catalog", "a", 0, entry, ttl_seconds=60)
    assert cache.size_bytes == entry.size * 3


async def test_memory_cache_entries_expire_and_belong_to_one_generation() -> None:
    now = [1000.0]
    cache = MemoryResponseCache(clock=lambda: now[0])
    entry = _entry()
    await cache.store("catalog", "k", 0, entry, ttl_seconds=10)
    now[0] += 9.9
    assert (await cache.lookup("catalog", "k"))[1] == entry
    now[0] += 0.2
    assert await cache.lookup("catalog", "k") == (0, None)
    assert len(cache) == 0
    await cache.store("catalog", "k", 0, entry, ttl_seconds=10)
    await cache.bump("catalog")
    assert await cache.lookup("catalog", "k") == (1, None)
    assert cache.size_bytes == 0
    # An answer fetched before the bump is not stored as current after it.
    await cache.store("catalog", "k", 0, entry, ttl_seconds=10)
    assert await cache.lookup("catalog", "k") == (1, None)
    # Namespaces are independent.
    await cache.store("other", "k", 0, entry, ttl_seconds=10)
    assert await cache.lookup("other", "k") == (0, entry)


async def test_invalidator_bumps_on_every_catalog_change_a_page_shows() -> None:
    cache = MemoryResponseCache()
    event_types, handler = invalidator(cache)
    expected = {
        "product.created",
        "product.updated",
        "product.deleted",
        "price.changed",
        "stock.changed",
        "category.changed",
    }
    assert set(event_types) == expected == INVALIDATED_BY["catalog"]
    for generation, event_type in enumerate(sorted(expected), start=1):
        assert await handler([Envelope(type=event_type, source="catalog", payload={})]) == [None]
        assert (await cache.lookup("catalog", "k"))[0] == generation
    # Orders move stock all the time: only stock.changed (in or out of stock) counts.
    for event_type in ("user.updated", "stock.reserved", "stock.released", "stock.committed"):
        assert await handler([Envelope(type=event_type, source="catalog", payload={})]) == [None]
    assert (await cache.lookup("catalog", "k"))[0] == len(expected)


async def test_a_burst_of_changes_delivered_together_bumps_once() -> None:
    cache = MemoryResponseCache()
    _event_types, handler = invalidator(cache)
    burst = [
        Envelope(type=event_type, source="catalog", payload={})
        for event_type in ("product.created", "stock.reserved", "stock.changed") * 10
    ]
    assert await handler(burst) == [None] * len(burst)
    assert (await cache.lookup("catalog", "k"))[0] == 1


async def test_events_whose_bump_failed_are_handed_back_for_redelivery() -> None:
    class Unreachable(MemoryResponseCache):
        async def bump(self, namespace: str) -> None:
            raise ConnectionError("redis is down")

    _event_types, handler = invalidator(Unreachable())
    created = Envelope(type="product.created", source="catalog", payload={})
    reserved = Envelope(type="stock.reserved", source="catalog", payload={})
    outcomes = await handler([created, reserved])
    assert isinstance(outcomes[0], ConnectionError)
    # Not an invalidating event: nothing to retry.
    assert outcomes[1] is None


def test_keys_normalise_the_query_but_not_the_order_of_repeated_values() -> None:
    assert normalise_query(b"b=2&a=1&a=0") == b"a=1&a=0&b=2"
    assert normalise_query(b"q=a+b") == normalise_query(b"q=a%20b")
    assert normalise_query(b"") == b""
    scope: Scope = {"path": "/api/v1/products", "headers": [(b"host", b"shop.example")]}
    other_host: Scope = {"path": "/api/v1/products", "headers": [(b"host", b"evil.example")]}
    assert cache_key(scope, b"a=1") == cache_key(scope, b"a=1")
    assert cache_key(scope, b"a=1") != cache_key(scope, b"a=2")
    assert cache_key(scope, b"a=1") != cache_key(other_host, b"a=1")
    assert etag_matches(b'W/"x", "y"', b'"y"')
    assert not etag_matches(b'"x"', b'"y"')
    assert not etag_matches(None, b'"y"')


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


def _scope(**extra: Any) -> Scope:
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/products",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
    }
    scope.update(extra)
    return scope


def _upstream(status: int, headers: Headers, chunks: list[bytes]) -> Any:
    calls: list[Scope] = []

    async def forward(scope: Scope, _headers: Headers, send: Send) -> None:
        calls.append(scope)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for index, chunk in enumerate(chunks):
            more = index < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    forward.calls = calls  # type: ignore[attr-defined]
    return forward


@pytest.mark.parametrize(
    ("status", "headers", "chunks"),
    [
        (200, [(b"content-type", b"application/json")], [b"x" * 600_000, b"y" * 600_000]),
        (200, [(b"set-cookie", b"a=b")], [b"{}"]),
        (200, [(b"cache-control", b"private, max-age=60")], [b"{}"]),
        (200, [(b"vary", b"Accept-Language")], [b"{}"]),
        (200, [(b"content-encoding", b"gzip")], [b"\x1f\x8b"]),
        (201, [], [b"{}"]),
    ],
    ids=["over-1MiB", "set-cookie", "private", "vary", "encoded", "not-200"],
)
async def test_answers_that_must_not_be_shared_pass_through_unstored(
    status: int, headers: Headers, chunks: list[bytes]
) -> None:
    cache = MemoryResponseCache()
    caching = ResponseCaching(cache, ttl_seconds=60)
    forward = _upstream(status, headers, chunks)
    for _ in range(2):
        sent = _Recorder()
        await caching.handle(_scope(), sent, namespace="catalog", headers=[], forward=forward)
        assert sent.messages[0]["status"] == status
        assert sent.headers[b"x-cache"] == MISS
        assert b"etag" not in sent.headers
        assert sent.body == b"".join(chunks)
    assert len(forward.calls) == 2
    assert len(cache) == 0


async def test_a_failing_cache_falls_back_to_the_service() -> None:
    class Broken(MemoryResponseCache):
        async def lookup(self, namespace: str, key: str) -> tuple[int, CachedResponse | None]:
            raise ConnectionError("cache down")

    caching = ResponseCaching(Broken(), ttl_seconds=60)
    sent = _Recorder()
    forward = _upstream(200, [(b"content-type", b"application/json")], [b"[]"])
    await caching.handle(_scope(), sent, namespace="catalog", headers=[], forward=forward)
    assert sent.messages[0]["status"] == 200
    assert sent.headers[b"x-cache"] == b"BYPASS"
    assert sent.body == b"[]"


async def test_a_miss_asks_the_service_unconditionally_with_the_normalised_query() -> None:
    seen: list[tuple[Scope, Headers]] = []

    async def forward(scope: Scope, headers: Headers, send: Send) -> None:
        seen.append((scope, headers))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    caching = ResponseCaching(MemoryResponseCache(), ttl_seconds=60)
    sent = _Recorder()
    await caching.handle(
        _scope(query_string=b"sort=name&limit=5", headers=[(b"if-none-match", b'"x"')]),
        sent,
        namespace="catalog",
        headers=[(b"if-none-match", b'"x"'), (b"accept", b"*/*")],
        forward=forward,
    )
    ((scope, headers),) = seen
    assert scope["query_string"] == b"limit=5&sort=name"
    assert headers == [(b"accept", b"*/*")]
    assert sent.headers[b"x-cache"] == MISS
