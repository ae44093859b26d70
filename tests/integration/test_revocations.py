"""Token revocations: the same rules in memory and in Redis, shared by replicas."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from panthera.kernel.security.principal import MemoryRevocations, RedisRevocations, Revocations

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
async def revocations(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Revocations]:
    if request.param == "memory":
        yield MemoryRevocations()
        return
    client = aioredis.from_url(redis_url)
    yield RedisRevocations(client, prefix=f"test:{uuid.uuid4().hex}:")
    await client.aclose()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_one_token_one_session_or_every_token_of_a_user(revocations: Revocations) -> None:
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    earlier = _now_ms() - 1000
    assert not await revocations.is_revoked(
        token_id="a", user_id=user, issued_at_ms=earlier, session_id="s1"
    )
    await revocations.revoke_token("a", expires_at=int(time.time()) + 60)
    assert await revocations.is_revoked(token_id="a", user_id=user, issued_at_ms=earlier)
    assert not await revocations.is_revoked(token_id="b", user_id=user, issued_at_ms=earlier)

    await revocations.revoke_session("s1", ttl_seconds=60)
    assert await revocations.is_revoked(
        token_id="c", user_id=user, issued_at_ms=earlier, session_id="s1"
    )
    assert not await revocations.is_revoked(
        token_id="c", user_id=user, issued_at_ms=earlier, session_id="s2"
    )

    await revocations.revoke_subject(user, ttl_seconds=60)
    assert await revocations.is_revoked(token_id="d", user_id=user, issued_at_ms=earlier)
    # A token issued after the revocation (a fresh sign-in) is good, and so is another user's.
    assert not await revocations.is_revoked(token_id="e", user_id=user, issued_at_ms=_now_ms() + 5)
    assert not await revocations.is_revoked(token_id="f", user_id=other, issued_at_ms=earlier)


async def test_redis_entries_expire_and_replicas_agree(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    first, second = aioredis.from_url(redis_url), aioredis.from_url(redis_url)
    try:
        replica_a, replica_b = RedisRevocations(first, prefix), RedisRevocations(second, prefix)
        await replica_a.revoke_session("s", ttl_seconds=30)
        await replica_a.revoke_token("t", expires_at=int(time.time()) + 30)
        assert await replica_b.is_revoked(token_id="x", user_id="u", issued_at_ms=0, session_id="s")
        assert await replica_b.is_revoked(token_id="t", user_id="u", issued_at_ms=0)
        for key in (f"{prefix}sid:s", f"{prefix}jti:t"):
            assert 0 < await first.ttl(key) <= 31
    finally:
        await first.aclose()
        await second.aclose()
