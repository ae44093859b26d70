"""A shared limiter's budget drawn in leases: never more than the budget, fewer round trips."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from panthera.kernel.ratelimit import Decision, LeasedRateLimiter, MemoryRateLimiter
from tests.kernel.test_ratelimit import FakeClock


class CountingLimiter:
    """The shared limiter, counting its round trips; it suspends like a network call."""

    def __init__(self, clock: FakeClock, *, suspend: bool = False) -> None:
        self.inner = MemoryRateLimiter(clock=clock)
        self.calls = 0
        self.suspend = suspend

    async def hit(self, key: str, *, rate_per_minute: int, burst: int, cost: int = 1) -> Decision:
        self.calls += 1
        if self.suspend:
            await asyncio.sleep(0)
        return await self.inner.hit(key, rate_per_minute=rate_per_minute, burst=burst, cost=cost)


async def _hits(limiter: LeasedRateLimiter, n: int, *, rate: int, burst: int) -> list[Decision]:
    return [await limiter.hit("k", rate_per_minute=rate, burst=burst) for _ in range(n)]


async def test_a_key_far_from_its_limit_asks_the_shared_limiter_once_a_lease() -> None:
    clock = FakeClock()
    shared = CountingLimiter(clock)
    limiter = LeasedRateLimiter(shared, lease=16, clock=clock)
    decisions = await _hits(limiter, 1000, rate=10**6, burst=10**4)
    assert all(d.allowed for d in decisions)
    # The first hit learns the headroom; then one round trip per 16 hits.
    assert shared.calls == 1 + (999 + 15) // 16
    # Every unit handed out was spent on the shared limiter first.
    peek = await shared.inner.hit("k", rate_per_minute=10**6, burst=10**4, cost=0)
    assert 10**4 - peek.remaining >= 1000


async def test_a_whole_burst_at_once_admits_exactly_the_burst() -> None:
    clock = FakeClock()
    shared = CountingLimiter(clock)
    limiter = LeasedRateLimiter(shared, lease=16, clock=clock)
    decisions = await _hits(limiter, 100, rate=1, burst=64)
    assert sum(d.allowed for d in decisions) == 64
    assert [d.allowed for d in decisions] == [True] * 64 + [False] * 36
    # Leases of 8 (an eighth of the burst) while room for two remains, then hit by hit.
    assert shared.calls < 64
    refused = decisions[-1]
    assert refused.remaining == 0
    assert refused.retry_after_seconds > 0
    # The count a client is told goes down by one a hit, leased or not.
    assert [d.remaining for d in decisions[:64]] == list(range(63, -1, -1))


async def test_small_bursts_and_other_costs_are_asked_about_every_time() -> None:
    clock = FakeClock()
    shared = CountingLimiter(clock)
    limiter = LeasedRateLimiter(shared, lease=16, clock=clock)
    await _hits(limiter, 10, rate=60, burst=15)  # a lease would be under two units
    assert shared.calls == 10
    await limiter.hit("other", rate_per_minute=60, burst=1000, cost=3)
    await limiter.hit("other", rate_per_minute=60, burst=1000, cost=0)
    assert shared.calls == 12


async def test_unused_units_lapse_and_the_key_is_asked_again() -> None:
    clock = FakeClock()
    shared = CountingLimiter(clock)
    limiter = LeasedRateLimiter(shared, lease=16, lease_seconds=1.0, clock=clock)
    await _hits(limiter, 2, rate=10**6, burst=10**4)  # learns, then takes a lease
    calls = shared.calls
    clock.advance(1.5)
    await limiter.hit("k", rate_per_minute=10**6, burst=10**4)
    assert shared.calls == calls + 1


async def test_memory_is_bounded_by_max_keys() -> None:
    clock = FakeClock()
    limiter = LeasedRateLimiter(CountingLimiter(clock), max_keys=50, clock=clock)
    for n in range(500):
        await limiter.hit(f"k{n}", rate_per_minute=600, burst=1000)
    assert len(limiter) == 50


async def test_concurrent_hits_never_exceed_the_budget() -> None:
    clock = FakeClock()
    shared = CountingLimiter(clock, suspend=True)
    limiter = LeasedRateLimiter(shared, lease=16, clock=clock)
    decisions = await asyncio.gather(
        *(limiter.hit("k", rate_per_minute=1, burst=200) for _ in range(500))
    )
    assert sum(d.allowed for d in decisions) <= 200


@pytest.mark.parametrize(
    ("lease", "lease_seconds", "max_keys"), [(0, 1.0, 1), (1, 0.0, 1), (1, 1, 0)]
)
def test_invalid_settings_are_refused(lease: int, lease_seconds: float, max_keys: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LeasedRateLimiter(
            CountingLimiter(FakeClock()),
            lease=lease,
            lease_seconds=lease_seconds,
            max_keys=max_keys,
        )


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(min_value=60, max_value=60_000),
    burst=st.integers(min_value=1, max_value=400),
    lease=st.integers(min_value=1, max_value=32),
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=2), st.floats(min_value=0, max_value=0.2)),
        max_size=300,
    ),
)
def test_replicas_together_admit_no_more_than_the_shared_budget(
    rate: int, burst: int, lease: int, steps: list[tuple[int, float]]
) -> None:
    """Three replicas with leases on one budget: in any span of time they admit at most
    what the budget allows in that span plus the lease period before it (units handed
    out then may have been spent on the shared limiter up to a lease period earlier)."""
    clock = FakeClock()
    shared = CountingLimiter(clock)
    lease_seconds = 0.5
    replicas = [
        LeasedRateLimiter(shared, lease=lease, lease_seconds=lease_seconds, clock=clock)
        for _ in range(3)
    ]

    async def play() -> list[float]:
        admitted = []
        for replica, gap in steps:
            clock.advance(gap)
            decision = await replicas[replica].hit("k", rate_per_minute=rate, burst=burst)
            assert 0 <= decision.remaining <= burst
            if decision.allowed:
                admitted.append(clock.now)
        return admitted

    admitted = asyncio.run(play())
    for i, first in enumerate(admitted):
        for count, last in enumerate(admitted[i:], start=1):
            assert count <= burst + (last - first + lease_seconds + 1e-6) * rate / 60 + 1e-6
