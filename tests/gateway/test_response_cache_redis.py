"""The Redis response cache against a real Redis server, as gateway replicas share it.

Redis is required: if it cannot be reached these tests fail rather than skip, so a
missing server never passes for a green run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from panthera.gateway.cache import CachedResponse, RedisResponseCache, strong_etag
from panthera.kernel.settings import EventTransportKind, Settings
from panthera.runtime.apps import _response_cache
from panthera.runtime.platform import Platform as Runtime
from tests.conftest import Platform, make_admin, start_platform

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("PANTHERA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def connect() -> Redis:
    return Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=10)


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    client = connect()
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        pytest.fail(f"Redis is required at {REDIS_URL} (PANTHERA_TEST_REDIS_URL): {exc!r}")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(client: Redis) -> AsyncIterator[str]:
    prefix = f"panthera:test:{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)


def _entry(body: bytes = b'[{"name": "Kettle"}]') -> CachedResponse:
    headers = ((b"content-type", b"application/json"), (b"x-total-count", b"1"))
    return CachedResponse(200, headers, body, strong_etag(body, headers))


async def test_two_replicas_share_entries_and_generation(client: Redis, prefix: str) -> None:
    other = connect()
    try:
        one = RedisResponseCache(client, prefix=prefix)
        two = RedisResponseCache(other, prefix=prefix)
        generation, nothing = await one.lookup("catalog", "k")
        assert nothing is None
        assert (await two.lookup("catalog", "k")) == (generation, None)
        entry = _entry()
        await one.store("catalog", "k", generation, entry, ttl_seconds=60)
        # Stored by one replica, served by the other: every byte and header intact.
        assert await two.lookup("catalog", "k") == (generation, entry)
        # An event handled by either replica retires the entry for both.
        await two.bump("catalog")
        assert await one.lookup("catalog", "k") == (generation + 1, None)
        assert await two.lookup("catalog", "k") == (generation + 1, None)
        # An answer fetched under the old generation is not stored as current.
        await one.store("catalog", "k", generation, entry, ttl_seconds=60)
        assert await two.lookup("catalog", "k") == (generation + 1, None)
        await one.store("catalog", "k", generation + 1, entry, ttl_seconds=60)
        assert await two.lookup("catalog", "k") == (generation + 1, entry)
        # Namespaces are independent.
        other_generation, _ = await two.lookup("users", "k")
        await one.bump("users")
        assert await two.lookup("catalog", "k") == (generation + 1, entry)
        assert (await two.lookup("users", "k"))[0] == other_generation + 1
    finally:
        await other.aclose()


async def test_entries_expire_with_their_ttl(client: Redis, prefix: str) -> None:
    cache = RedisResponseCache(client, prefix=prefix)
    generation, _ = await cache.lookup("catalog", "k")
    await cache.store("catalog", "k", generation, _entry(), ttl_seconds=30)
    ttl_ms = await client.pttl(cache.entry_key("catalog", "k"))
    assert 29_000 < ttl_ms <= 30_000
    # The generation itself does not expire: entries must never outlive it.
    assert await client.pttl(cache.generation_key("catalog")) == -1
    await cache.store("catalog", "short", generation, _entry(), ttl_seconds=0.05)
    assert 0 < await client.pttl(cache.entry_key("catalog", "short")) <= 50


async def test_a_lost_generation_never_revives_old_entries(client: Redis, prefix: str) -> None:
    cache = RedisResponseCache(client, prefix=prefix)
    generation, _ = await cache.lookup("catalog", "k")
    # Seeded at random, not 0, so a reset counter cannot meet an old entry's number.
    assert generation > 1_000
    await cache.store("catalog", "k", generation, _entry(), ttl_seconds=60)
    await client.delete(cache.generation_key("catalog"))  # e.g. evicted or flushed
    new_generation, entry = await cache.lookup("catalog", "k")
    assert entry is None
    assert new_generation != generation
    await client.delete(cache.generation_key("catalog"))
    await cache.bump("catalog")
    assert (await cache.lookup("catalog", "k"))[0] not in (generation, 1)


async def test_the_distributed_shape_uses_the_redis_cache(
    client: Redis, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(
        redis_url=REDIS_URL,
        event_transport=EventTransportKind.RABBITMQ,
        amqp_url="amqp://guest:guest@127.0.0.1/",
    )
    runtime = Runtime(settings, ())
    cache = _response_cache(settings, runtime)
    try:
        assert isinstance(cache, RedisResponseCache)
        assert [name for name, _, _ in runtime._consumers] == ["gateway"]
    finally:
        assert cache is not None
        await cache.close()
        if runtime.redis is not None:
            await runtime.redis.aclose()


async def test_the_embedded_platform_caches_in_redis_and_events_invalidate(
    client: Redis, settings_factory: Callable[..., Settings]
) -> None:
    app, http = await start_platform(settings_factory(redis_url=REDIS_URL))
    platform = Platform(app=app, client=http, settings=app.state.platform.settings)
    assert isinstance(app.state.response_cache, RedisResponseCache)
    try:
        admin = await make_admin(platform)
        created = await http.post(
            "/api/v1/products", json={"name": "Pan", "price": "20.00"}, headers=admin.headers
        )
        assert created.status_code == 201
        # A product id no other test run shares, since Redis is shared between runs.
        url = f"/api/v1/products/{created.json()['productId']}"
        await platform.settle()
        assert (await http.get(url)).headers["x-cache"] == "MISS"
        hit = await http.get(url)
        assert hit.headers["x-cache"] == "HIT"
        assert hit.json()["name"] == "Pan"
        renamed = await http.patch(url, json={"name": "Wok"}, headers=admin.headers)
        assert renamed.status_code == 200
        await platform.settle()
        fresh = await http.get(url)
        assert fresh.headers["x-cache"] == "MISS"
        assert fresh.json()["name"] == "Wok"
    finally:
        await http.aclose()
        await app.state.platform.stop()
        await app.state.response_cache.close()
