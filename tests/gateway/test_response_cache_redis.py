"""The Redis response cache against a real Redis server, as gateway replicas share it.

Redis is required: if it cannot be reached these tests fail rather than skip, so a
missing server never passes for a green run.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from panthera.gateway.cache import CachedResponse, RedisResponseCache, strong_etag
from panthera.kernel.ratelimit import Decision, RedisRateLimiter
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


async def test_a_limited_lookup_spends_the_budget_in_the_same_round_trip(
    client: Redis, prefix: str
) -> None:
    cache = RedisResponseCache(client, prefix=prefix)
    limiter = RedisRateLimiter(client, prefix=prefix + "rl:")
    assert cache.shares_server_with(limiter)
    bucket, args = limiter.hit_arguments("ip:192.0.2.1", rate_per_minute=60, burst=2)
    decision, generation, nothing = await cache.lookup_limited("catalog", "k", bucket, args)
    assert decision.allowed
    assert nothing is None
    entry = _entry()
    await cache.store("catalog", "k", generation, entry, ttl_seconds=60)
    decision, again, found = await cache.lookup_limited("catalog", "k", bucket, args)
    assert (decision.allowed, again, found) == (True, generation, entry)
    # The same bucket the limiter itself draws on: the third hit in the burst is refused,
    # and nothing is looked up for it.
    refused, none_generation, none_entry = await cache.lookup_limited("catalog", "k", bucket, args)
    assert not refused.allowed
    assert refused.retry_after_seconds > 0
    assert (none_generation, none_entry) == (-1, None)
    assert not (await limiter.hit("ip:192.0.2.1", rate_per_minute=60, burst=2)).allowed


async def test_lookups_survive_a_server_that_lost_their_scripts(client: Redis, prefix: str) -> None:
    cache = RedisResponseCache(client, prefix=prefix)
    limiter = RedisRateLimiter(client, prefix=prefix + "rl:")
    generation, _ = await cache.lookup("catalog", "k")
    entry = _entry()
    await cache.store("catalog", "k", generation, entry, ttl_seconds=60)
    bucket, args = limiter.hit_arguments("ip:192.0.2.9", rate_per_minute=60, burst=5)
    # As after SCRIPT FLUSH or a fail-over to a server that never saw them.
    cache._lookup.sha = "0" * 40
    cache._limited_lookup.sha = "0" * 40
    assert await cache.lookup("catalog", "k") == (generation, entry)
    decision, again, found = await cache.lookup_limited("catalog", "k", bucket, args)
    assert (decision.allowed, again, found) == (True, generation, entry)
    # The connections went back to the pool in a usable state.
    for _ in range(3):
        assert await cache.lookup("catalog", "k") == (generation, entry)
    assert await client.ping()


async def test_concurrent_lookups_share_a_bounded_set_of_connections(prefix: str) -> None:
    cache = RedisResponseCache(connect(), prefix=prefix, lookup_connections=2)
    generation, _ = await cache.lookup("catalog", "k")
    entry = _entry()
    await cache.store("catalog", "k", generation, entry, ttl_seconds=60)
    answers = await asyncio.gather(*(cache.lookup("catalog", "k") for _ in range(20)))
    assert answers == [(generation, entry)] * 20
    assert len(cache._idle) <= 2
    await cache.close()
    assert cache._idle == []


async def test_a_server_that_never_answers_times_the_lookup_out() -> None:
    done = asyncio.Event()

    async def accept_and_stay_silent(
        _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await done.wait()
        writer.close()

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisResponseCache(Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2))
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await cache.lookup("catalog", "k")
        assert time.monotonic() - started < 5
    finally:
        await cache.close()
        done.set()
        server.close()
        await server.wait_closed()


async def test_an_unreachable_cache_raises_for_the_caller_to_fall_back() -> None:
    # Port 9 (discard): nothing listens, the connection is refused.
    cache = RedisResponseCache(Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=2))
    for _ in range(2):
        with pytest.raises((RedisError, OSError)):
            await cache.lookup("catalog", "k")
    await cache.close()


async def test_anonymous_cached_reads_keep_their_rate_limit(
    client: Redis, settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    separate_hits: list[str] = []
    original_hit = RedisRateLimiter.hit

    async def hit(self: RedisRateLimiter, key: str, **kwargs: int) -> Decision:
        separate_hits.append(key)
        return await original_hit(self, key, **kwargs)

    monkeypatch.setattr(RedisRateLimiter, "hit", hit)
    settings = settings_factory(
        redis_url=REDIS_URL, rate_limit_per_ip_per_minute=60, rate_limit_per_ip_burst=3
    )
    app, http = await start_platform(settings)
    caching = app.state.response_cache
    # An address no other run shares, since Redis is shared between runs.
    anonymous = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(f"test-{uuid.uuid4().hex}", 1)),
        base_url="http://testserver",
    )
    try:
        assert isinstance(caching, RedisResponseCache)
        statuses = [(await anonymous.get("/api/v1/products")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await anonymous.get("/api/v1/products")
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        # Each budget was spent by the cache lookup's script, not by a round trip of its own.
        assert separate_hits == []
    finally:
        await anonymous.aclose()
        await http.aclose()
        await app.state.platform.stop()
        await caching.close()
