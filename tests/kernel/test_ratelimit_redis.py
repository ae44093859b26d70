"""The Redis rate limiter and attempt counter against a real Redis server.

Redis is required: if it cannot be reached these tests fail rather than skip, so a
missing server never passes for a green run.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from panthera.kernel.ratelimit import (
    LeasedRateLimiter,
    RedisAttemptCounter,
    RedisRateLimiter,
    build_attempt_counter,
    build_rate_limiter,
)

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("PANTHERA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def connect() -> Redis:
    # Blocking like the factories' pool, and small, so 200 concurrent hits also
    # exercise queueing for a connection.
    pool = BlockingConnectionPool.from_url(
        REDIS_URL, max_connections=20, timeout=10, socket_connect_timeout=5, socket_timeout=10
    )
    return Redis.from_pool(pool)


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


async def test_burst_is_allowed_then_denied_with_a_sensible_retry_after(
    client: Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(client, prefix=prefix)
    # 120/min: one unit every 0.5 s, far longer than five round trips.
    decisions = [await limiter.hit("k", rate_per_minute=120, burst=5) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    denied = decisions[-1]
    assert 0.3 < denied.retry_after_seconds <= 0.5
    assert 2.0 < denied.reset_after_seconds <= 2.5
    # Still denied a little before Retry-After, admitted once it has passed.
    await asyncio.sleep(denied.retry_after_seconds - 0.15)
    assert not (await limiter.hit("k", rate_per_minute=120, burst=5)).allowed
    await asyncio.sleep(0.15 + 0.01)
    assert (await limiter.hit("k", rate_per_minute=120, burst=5)).allowed


async def test_two_replicas_share_one_budget(client: Redis, prefix: str) -> None:
    other_client = connect()
    try:
        replicas = [RedisRateLimiter(client, prefix=prefix), RedisRateLimiter(other_client, prefix)]
        allowed = [0, 0]
        for n in range(12):
            decision = await replicas[n % 2].hit("k", rate_per_minute=1, burst=4)
            allowed[n % 2] += decision.allowed
        assert allowed == [2, 2]
        peek = await replicas[1].hit("k", rate_per_minute=1, burst=4, cost=0)
        assert peek.remaining == 0
    finally:
        await other_client.aclose()


async def test_replicas_drawing_leases_share_one_budget_exactly(client: Redis, prefix: str) -> None:
    other_client = connect()
    try:
        replicas = [
            LeasedRateLimiter(RedisRateLimiter(client, prefix=prefix), lease=8),
            LeasedRateLimiter(RedisRateLimiter(other_client, prefix=prefix), lease=8),
        ]
        allowed = [0, 0]
        for n in range(200):
            decision = await replicas[n % 2].hit("k", rate_per_minute=1, burst=64)
            allowed[n % 2] += decision.allowed
        # Hits kept coming to both, so every leased unit was handed out: the budget, no more.
        assert sum(allowed) == 64
        assert allowed[0] > 0
        assert allowed[1] > 0
        peek = await RedisRateLimiter(client, prefix=prefix).hit(
            "k", rate_per_minute=1, burst=64, cost=0
        )
        assert peek.remaining == 0
    finally:
        await other_client.aclose()


async def test_concurrent_hits_allow_exactly_burst(client: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(client, prefix=prefix)
    decisions = await asyncio.gather(
        *(limiter.hit("k", rate_per_minute=1, burst=17) for _ in range(200))
    )
    assert sum(d.allowed for d in decisions) == 17
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(17))


async def test_factory_built_limiter_and_counter_withstand_200_concurrent_calls(
    client: Redis,
) -> None:
    # The factories use their default prefixes, so a unique key keeps this test apart.
    key = f"test-{uuid.uuid4().hex}"
    limiter = build_rate_limiter(REDIS_URL)
    counter = build_attempt_counter(REDIS_URL)
    try:
        decisions = await asyncio.gather(
            *(limiter.hit(key, rate_per_minute=1, burst=17) for _ in range(200))
        )
        assert sum(d.allowed for d in decisions) == 17
        counts = await asyncio.gather(*(counter.add(key, window_seconds=60) for _ in range(200)))
        assert sorted(counts) == list(range(1, 201))
    finally:
        await client.delete(f"panthera:rl:{key}", f"panthera:attempts:{key}")
        await limiter.close()  # type: ignore[attr-defined]
        await counter.close()  # type: ignore[attr-defined]


async def test_keys_carry_a_ttl_and_expire_once_refilled(client: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(client, prefix=prefix)
    # 600/min: one unit every 0.1 s, so three units of debt last 0.3 s.
    for _ in range(3):
        last = await limiter.hit("k", rate_per_minute=600, burst=3)
    ttl_ms = await client.pttl(f"{prefix}k")
    assert 0 < ttl_ms <= 300
    assert ttl_ms / 1000 == pytest.approx(last.reset_after_seconds, abs=0.05)
    await asyncio.sleep(last.reset_after_seconds + 0.05)
    assert await client.exists(f"{prefix}k") == 0
    fresh = await limiter.hit("k", rate_per_minute=600, burst=3)
    assert fresh.allowed
    assert fresh.remaining == 2


async def test_peeking_at_an_unknown_key_writes_nothing(client: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(client, prefix=prefix)
    peek = await limiter.hit("k", rate_per_minute=60, burst=5, cost=0)
    assert peek.allowed
    assert peek.remaining == 5
    assert await client.exists(f"{prefix}k") == 0


async def test_attempt_counter_counts_across_replicas_and_resets(
    client: Redis, prefix: str
) -> None:
    other_client = connect()
    try:
        first = RedisAttemptCounter(client, prefix=prefix)
        second = RedisAttemptCounter(other_client, prefix=prefix)
        assert [await first.add("alice", window_seconds=60) for _ in range(2)] == [1, 2]
        assert await second.add("alice", window_seconds=60) == 3
        assert await second.count("alice", window_seconds=60) == 3
        assert await first.count("bob", window_seconds=60) == 0
        ttl_ms = await client.pttl(f"{prefix}alice")
        assert 59_000 < ttl_ms <= 60_000
        await second.reset("alice")
        assert await first.count("alice", window_seconds=60) == 0
        assert await client.exists(f"{prefix}alice") == 0
    finally:
        await other_client.aclose()


async def test_attempt_counter_window_slides_and_keys_expire(client: Redis, prefix: str) -> None:
    counter = RedisAttemptCounter(client, prefix=prefix)
    assert await counter.add("alice", window_seconds=1) == 1
    await asyncio.sleep(0.6)
    assert await counter.add("alice", window_seconds=1) == 2
    await asyncio.sleep(0.5)  # the first attempt is now ~1.1 s old
    assert await counter.count("alice", window_seconds=1) == 1
    await asyncio.sleep(0.6)  # and the second ~1.1 s old
    assert await counter.count("alice", window_seconds=1) == 0
    assert await client.exists(f"{prefix}alice") == 0


async def test_attempt_counter_is_atomic_under_concurrency(client: Redis, prefix: str) -> None:
    counter = RedisAttemptCounter(client, prefix=prefix)
    counts = await asyncio.gather(*(counter.add("k", window_seconds=60) for _ in range(50)))
    assert sorted(counts) == list(range(1, 51))


async def test_attempt_counter_saturates_at_max_entries(client: Redis, prefix: str) -> None:
    counter = RedisAttemptCounter(client, prefix=prefix, max_entries_per_key=5)
    counts = [await counter.add("k", window_seconds=60) for _ in range(8)]
    assert counts == [1, 2, 3, 4, 5, 5, 5, 5]
    assert await client.zcard(f"{prefix}k") == 5
