"""Rate limiting (GCRA) for the gateway and failure counting for login throttling.

Each port has an in-process adapter for the embedded shape and a Redis adapter for
the distributed one, where every gateway replica must draw on the same budget.
"""

from __future__ import annotations

import heapq
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import BlockingConnectionPool, Redis

Clock = Callable[[], float]

# Float arithmetic on absolute times (and, in Redis, on microsecond timestamps near
# 2**51) is off by a fraction of a microsecond. Without slack, a client that waits
# exactly ``retry_after_seconds`` could be refused again by that noise; with it, a
# request may be admitted at most a microsecond early, which no per-minute rate notices.
_TOLERANCE_SECONDS = 1e-6
_TOLERANCE_MICROSECONDS = 1

_REDIS_MAX_CONNECTIONS = 64
_REDIS_POOL_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one :meth:`RateLimiter.hit`.

    ``remaining`` is how many more cost-1 hits would be allowed right now;
    ``retry_after_seconds`` is 0 when allowed, otherwise how long until this same hit
    would be allowed (for ``Retry-After``); ``reset_after_seconds`` is how long until the
    key is back to its full burst (for ``RateLimit-Reset``).
    """

    allowed: bool
    remaining: int
    retry_after_seconds: float
    reset_after_seconds: float


class RateLimiter(Protocol):
    """Admits or refuses hits on a key, at a sustained rate with a burst allowance."""

    async def hit(self, key: str, *, rate_per_minute: int, burst: int, cost: int = 1) -> Decision:
        """Spend ``cost`` units of ``key``'s budget if it has them.

        A fresh key admits ``burst`` units at once, then one unit every
        ``60 / rate_per_minute`` seconds. A refused hit spends nothing. ``cost=0``
        only reports the key's state. Raises ``ValueError`` unless
        ``rate_per_minute >= 1``, ``burst >= 1`` and ``0 <= cost <= burst`` (a cost
        above the burst could never be admitted).
        """
        ...


class AttemptCounter(Protocol):
    """Counts events (failed logins) per key over a trailing window."""

    async def add(self, key: str, *, window_seconds: int) -> int:
        """Record one event now; return how many ``key`` has in the last ``window_seconds``."""
        ...

    async def count(self, key: str, *, window_seconds: int) -> int:
        """How many events ``key`` has in the last ``window_seconds``, recording nothing.

        Use the same window as :meth:`add`: a key is forgotten once its newest event
        is older than the window it was added with.
        """
        ...

    async def reset(self, key: str) -> None:
        """Forget every event of ``key`` (after a successful login)."""
        ...


def _check_hit(rate_per_minute: int, burst: int, cost: int) -> float:
    """Validate a hit's parameters and return the emission interval in seconds."""
    if rate_per_minute < 1:
        raise ValueError(f"rate_per_minute must be at least 1, not {rate_per_minute}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, not {burst}")
    if not 0 <= cost <= burst:
        raise ValueError(f"cost must be between 0 and burst ({burst}), not {cost}")
    return 60.0 / rate_per_minute


def _check_window(window_seconds: int) -> None:
    if window_seconds < 1:
        raise ValueError(f"window_seconds must be at least 1, not {window_seconds}")


class MemoryRateLimiter:
    """GCRA in process memory, for the embedded shape (one process, one budget).

    Per key it keeps only the theoretical arrival time (TAT): the instant at which
    the key would be back to a full burst. A key whose TAT has passed is
    indistinguishable from a new one, so it is dropped. At most ``max_keys`` keys are
    kept; beyond that the key nearest to its TAT goes first, as forgetting it gives
    away the least budget.

    :meth:`hit` never suspends, so concurrent tasks on one event loop cannot
    interleave inside it and no lock is needed. It is not thread-safe.
    """

    def __init__(self, *, clock: Clock = time.monotonic, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys}")
        self._clock = clock
        self._max_keys = max_keys
        self._tats: dict[str, float] = {}
        # Min-heap of (tat, key) by expiry. Updating a key pushes a new entry rather
        # than moving the old one; stale entries are skipped when popped and purged
        # by _compact, which keeps the heap within a constant factor of the dict.
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        """The number of keys currently held."""
        return len(self._tats)

    async def hit(self, key: str, *, rate_per_minute: int, burst: int, cost: int = 1) -> Decision:
        """See :meth:`RateLimiter.hit`."""
        interval = _check_hit(rate_per_minute, burst, cost)
        capacity = burst * interval
        now = self._clock()
        self._evict_expired(now)
        tat = self._tats.get(key)
        # Debt: how far the key's TAT lies ahead of now; a burst's worth is allowed.
        debt = tat - now if tat is not None and tat > now else 0.0
        new_debt = debt + cost * interval
        if new_debt > capacity + _TOLERANCE_SECONDS:
            return Decision(
                allowed=False,
                remaining=_remaining(capacity - debt, interval, _TOLERANCE_SECONDS, burst),
                retry_after_seconds=new_debt - capacity,
                reset_after_seconds=debt,
            )
        if cost > 0:
            self._store(key, now + new_debt)
        return Decision(
            allowed=True,
            remaining=_remaining(capacity - new_debt, interval, _TOLERANCE_SECONDS, burst),
            retry_after_seconds=0.0,
            reset_after_seconds=new_debt,
        )

    async def close(self) -> None:
        """Nothing to release; present for symmetry with :class:`RedisRateLimiter`."""

    def _store(self, key: str, tat: float) -> None:
        if key not in self._tats:
            while len(self._tats) >= self._max_keys:
                self._pop_earliest()
        self._tats[key] = tat
        heapq.heappush(self._heap, (tat, key))
        if len(self._heap) > 2 * len(self._tats) + 1024:
            self._compact()

    def _evict_expired(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            self._pop_earliest()

    def _pop_earliest(self) -> None:
        tat, key = heapq.heappop(self._heap)
        if self._tats.get(key) == tat:
            del self._tats[key]

    def _compact(self) -> None:
        self._heap = [(tat, key) for key, tat in self._tats.items()]
        heapq.heapify(self._heap)


def _remaining(headroom: float, interval: float, tolerance: float, burst: int) -> int:
    """Whole cost-1 hits that fit in ``headroom``, clamped to ``0..burst``."""
    return max(0, min(burst, math.floor((headroom + tolerance) / interval)))


# ``gcra(key, ...)`` takes the key, the emission interval (µs, may be fractional),
# burst, cost and tolerance (µs). It returns {allowed, remaining, retry_after_us,
# reset_after_us}, all integers, because Redis truncates Lua numbers in replies.
# A Lua function, so that a script doing other work can take a hit in the same
# round trip (the gateway's response cache does). Time comes from the
# server so replicas with skewed clocks agree; Redis 5+ replicates a script's
# effects rather than the script, so calling TIME before a write is allowed.
GCRA_LUA = """
local function gcra(key, interval, burst, cost, tolerance)
    local capacity = burst * interval
    local time = redis.call('TIME')
    local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
    local tat = tonumber(redis.call('GET', key))
    local debt = 0
    if tat and tat > now then
        debt = tat - now
    end
    local new_debt = debt + cost * interval
    local function remaining(headroom)
        return math.max(0, math.min(burst, math.floor((headroom + tolerance) / interval)))
    end
    if new_debt > capacity + tolerance then
        return {0, remaining(capacity - debt), math.ceil(new_debt - capacity), math.ceil(debt)}
    end
    if cost > 0 then
        -- %.17g: Lua's default number formatting keeps 14 digits, too few for a
        -- microsecond timestamp. The key lives exactly as long as it holds any debt.
        redis.call('SET', key, string.format('%.17g', now + new_debt),
            'PX', math.max(1, math.ceil(new_debt / 1000)))
    end
    return {1, remaining(capacity - new_debt), 0, math.ceil(new_debt)}
end
"""
_GCRA_SCRIPT = (
    GCRA_LUA
    + "return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), "
    + "tonumber(ARGV[4]))"
)


class RedisRateLimiter:
    """GCRA in Redis, so every gateway replica draws on the same budget.

    The read-decide-write runs as one Lua script, hence atomically. Each key holds
    one TAT and expires by itself once it is back to a full burst. Redis errors
    propagate: whether to fail open or closed is the caller's decision.
    """

    def __init__(self, redis: Redis, prefix: str = "panthera:rl:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_GCRA_SCRIPT)

    @property
    def redis(self) -> Redis:
        """The client the buckets are kept through."""
        return self._redis

    async def hit(self, key: str, *, rate_per_minute: int, burst: int, cost: int = 1) -> Decision:
        """See :meth:`RateLimiter.hit`."""
        redis_key, args = self.hit_arguments(
            key, rate_per_minute=rate_per_minute, burst=burst, cost=cost
        )
        reply: Any = await self._script(keys=[redis_key], args=args)
        return self.decision(reply)

    def hit_arguments(
        self, key: str, *, rate_per_minute: int, burst: int, cost: int = 1
    ) -> tuple[str, list[Any]]:
        """The Redis key and the arguments of ``gcra`` (:data:`GCRA_LUA`) for one hit."""
        interval_us = _check_hit(rate_per_minute, burst, cost) * 1_000_000
        return self._prefix + key, [repr(interval_us), burst, cost, _TOLERANCE_MICROSECONDS]

    @staticmethod
    def decision(reply: Any) -> Decision:
        """The decision in what ``gcra`` returned."""
        allowed, remaining, retry_after_us, reset_after_us = (int(value) for value in reply)
        return Decision(
            allowed=allowed == 1,
            remaining=remaining,
            retry_after_seconds=retry_after_us / 1_000_000,
            reset_after_seconds=reset_after_us / 1_000_000,
        )

    async def close(self) -> None:
        """Close the Redis client this limiter was given."""
        await self._redis.aclose()


@dataclass(slots=True)
class _Lease:
    """Units of one key already spent on the shared limiter, for this process to hand out."""

    units: int
    # The shared limiter's last reply for the key, for the hits the units admit.
    remaining: int
    reset_after_seconds: float
    expires_at: float


class LeasedRateLimiter:
    """A shared limiter's budget drawn a few units at a time, so most hits ask no server.

    A key whose last reply left room for at least two leases gets its next ``lease``
    units spent on the shared limiter in one hit (one Redis round trip); the hits
    after it are admitted from those units in process, until they run out or
    ``lease_seconds`` pass. Units are always spent on the shared limiter before they
    are handed out, so all replicas together never admit more than the budget: a
    lease left unused only spends its units early, and only a key far from its limit
    is ever leased. Near its limit a key is asked about hit by hit, exactly as
    without leases. A lease is at most an eighth of the key's burst; below two units,
    every hit goes to the shared limiter.

    The ``remaining`` of a hit admitted from a lease is the shared reply's count plus
    the units this process still holds; other replicas' hits since are not in it.
    """

    def __init__(
        self,
        shared: RateLimiter,
        *,
        lease: int = 16,
        lease_seconds: float = 1.0,
        max_keys: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if lease < 1 or lease_seconds <= 0 or max_keys < 1:
            raise ValueError("lease and max_keys must be at least 1, lease_seconds above 0")
        self.shared = shared
        self._lease = lease
        self._lease_seconds = lease_seconds
        self._max_keys = max_keys
        self._clock = clock
        # Oldest first: the one to drop when the table is full.
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        # Keys with a lease being fetched: their hits meanwhile are asked one by one.
        self._fetching: set[str] = set()

    def __len__(self) -> int:
        """The number of keys whose last reply is held."""
        return len(self._leases)

    async def hit(self, key: str, *, rate_per_minute: int, burst: int, cost: int = 1) -> Decision:
        """See :meth:`RateLimiter.hit`."""
        _check_hit(rate_per_minute, burst, cost)
        size = min(self._lease, burst // 8)
        if cost != 1 or size < 2:
            return await self.shared.hit(
                key, rate_per_minute=rate_per_minute, burst=burst, cost=cost
            )
        lease = self._leases.get(key)
        if lease is not None and lease.expires_at <= self._clock():
            del self._leases[key]
            lease = None
        if lease is not None and lease.units > 0:
            lease.units -= 1
            return Decision(
                allowed=True,
                remaining=min(burst, lease.remaining + lease.units),
                retry_after_seconds=0.0,
                reset_after_seconds=lease.reset_after_seconds,
            )
        if lease is not None and lease.remaining >= 2 * size and key not in self._fetching:
            self._fetching.add(key)
            try:
                leased = await self.shared.hit(
                    key, rate_per_minute=rate_per_minute, burst=burst, cost=size
                )
            finally:
                self._fetching.discard(key)
            if leased.allowed:
                kept = self._keep(key, leased, units=size - 1)
                return Decision(
                    allowed=True,
                    remaining=min(burst, leased.remaining + kept.units),
                    retry_after_seconds=0.0,
                    reset_after_seconds=leased.reset_after_seconds,
                )
            # Other replicas spent the headroom meanwhile: this hit alone may still fit.
        decision = await self.shared.hit(key, rate_per_minute=rate_per_minute, burst=burst)
        self._keep(key, decision, units=0)
        return decision

    def _keep(self, key: str, decision: Decision, *, units: int) -> _Lease:
        now = self._clock()
        held = self._leases.pop(key, None)
        if held is not None and held.expires_at > now:
            # Units another hit's lease brought in meanwhile stay spendable.
            units += held.units
        kept = _Lease(
            units=units,
            remaining=decision.remaining,
            reset_after_seconds=decision.reset_after_seconds,
            expires_at=now + self._lease_seconds,
        )
        while len(self._leases) >= self._max_keys:
            self._leases.popitem(last=False)
        self._leases[key] = kept
        return kept

    async def close(self) -> None:
        """Nothing of its own to release: the shared limiter is its owner's to close."""


@dataclass(slots=True)
class _Log:
    times: deque[float]
    expires_at: float


class MemoryAttemptCounter:
    """A sliding log of event times per key, in process memory (embedded shape).

    A sliding log rather than a two-bucket approximation: login thresholds are small,
    so the log is short, and the count is exact, without the approximation's
    tendency to keep counting an attempt for up to twice the window. A key keeps at
    most ``max_entries_per_key`` times (the count saturates there, far above any
    lockout threshold) and at most ``max_keys`` keys are held; a key is dropped once
    its newest event leaves the window, and beyond the cap the least recently
    added-to key goes first.

    Methods never suspend, so no lock is needed on one event loop.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        max_keys: int = 100_000,
        max_entries_per_key: int = 1_000,
    ) -> None:
        if max_keys < 1 or max_entries_per_key < 1:
            raise ValueError("max_keys and max_entries_per_key must be at least 1")
        self._clock = clock
        self._max_keys = max_keys
        self._max_entries = max_entries_per_key
        # Ordered by last add; with one window per deployment that is expiry order,
        # so expired keys are found at the front.
        self._logs: OrderedDict[str, _Log] = OrderedDict()

    def __len__(self) -> int:
        """The number of keys currently held."""
        return len(self._logs)

    async def add(self, key: str, *, window_seconds: int) -> int:
        """See :meth:`AttemptCounter.add`."""
        _check_window(window_seconds)
        now = self._clock()
        self._evict_expired(now)
        log = self._logs.get(key)
        if log is None:
            while len(self._logs) >= self._max_keys:
                self._logs.popitem(last=False)
            log = _Log(deque(maxlen=self._max_entries), now)
            self._logs[key] = log
        cutoff = now - window_seconds
        while log.times and log.times[0] <= cutoff:
            log.times.popleft()
        log.times.append(now)
        log.expires_at = now + window_seconds
        self._logs.move_to_end(key)
        return len(log.times)

    async def count(self, key: str, *, window_seconds: int) -> int:
        """See :meth:`AttemptCounter.count`."""
        _check_window(window_seconds)
        now = self._clock()
        self._evict_expired(now)
        log = self._logs.get(key)
        if log is None:
            return 0
        cutoff = now - window_seconds
        return sum(1 for at in log.times if at > cutoff)

    async def reset(self, key: str) -> None:
        """See :meth:`AttemptCounter.reset`."""
        self._logs.pop(key, None)

    async def close(self) -> None:
        """Nothing to release; present for symmetry with :class:`RedisAttemptCounter`."""

    def _evict_expired(self, now: float) -> None:
        while self._logs:
            key, log = next(iter(self._logs.items()))
            if log.expires_at > now:
                return
            del self._logs[key]


# KEYS[1]: the key. ARGV: window (µs), max entries, a unique member. A sorted set
# of event times (server µs); the key expires with its newest event.
_ADD_SCRIPT = """
local window = tonumber(ARGV[1])
local max_entries = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now - window))
redis.call('ZADD', KEYS[1], string.format('%.17g', now), ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(max_entries + 1))
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return redis.call('ZCARD', KEYS[1])
"""

# KEYS[1]: the key. ARGV: window (µs). Events strictly inside (now - window, now].
_COUNT_SCRIPT = """
local window = tonumber(ARGV[1])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.17g', now - window), '+inf')
"""


class RedisAttemptCounter:
    """A sliding log of event times per key in Redis, shared by every replica.

    Same semantics as :class:`MemoryAttemptCounter` (exact count, saturating at
    ``max_entries_per_key``), with times from the Redis server's clock. Each key is a
    sorted set that expires by itself once its newest event leaves the window.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str = "panthera:attempts:",
        *,
        max_entries_per_key: int = 1_000,
    ) -> None:
        if max_entries_per_key < 1:
            raise ValueError("max_entries_per_key must be at least 1")
        self._redis = redis
        self._prefix = prefix
        self._max_entries = max_entries_per_key
        self._add = redis.register_script(_ADD_SCRIPT)
        self._count = redis.register_script(_COUNT_SCRIPT)

    async def add(self, key: str, *, window_seconds: int) -> int:
        """See :meth:`AttemptCounter.add`."""
        _check_window(window_seconds)
        # Random members: two events in the same server microsecond must both count.
        reply: Any = await self._add(
            keys=[self._prefix + key],
            args=[window_seconds * 1_000_000, self._max_entries, uuid.uuid4().hex],
        )
        return int(reply)

    async def count(self, key: str, *, window_seconds: int) -> int:
        """See :meth:`AttemptCounter.count`."""
        _check_window(window_seconds)
        reply: Any = await self._count(keys=[self._prefix + key], args=[window_seconds * 1_000_000])
        return int(reply)

    async def reset(self, key: str) -> None:
        """See :meth:`AttemptCounter.reset`."""
        await self._redis.delete(self._prefix + key)

    async def close(self) -> None:
        """Close the Redis client this counter was given."""
        await self._redis.aclose()


def _connect(redis_url: str) -> Redis:
    # redis-py's default pool raises once 100 connections are busy, which a burst of
    # concurrent requests through the gateway reaches; a blocking pool makes them
    # queue briefly for a connection instead. The client owns the pool, so closing
    # the limiter or counter closes it.
    pool = BlockingConnectionPool.from_url(
        redis_url, max_connections=_REDIS_MAX_CONNECTIONS, timeout=_REDIS_POOL_TIMEOUT_SECONDS
    )
    return Redis.from_pool(pool)


def build_rate_limiter(redis_url: str) -> RateLimiter:
    """The rate limiter for a deployment: in memory if ``redis_url`` is empty, else Redis."""
    if not redis_url:
        return MemoryRateLimiter()
    return RedisRateLimiter(_connect(redis_url))


def build_attempt_counter(redis_url: str) -> AttemptCounter:
    """The attempt counter for a deployment: in memory if ``redis_url`` is empty, else Redis."""
    if not redis_url:
        return MemoryAttemptCounter()
    return RedisAttemptCounter(_connect(redis_url))
