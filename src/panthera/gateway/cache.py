"""The gateway's response cache for anonymous reads of public, event-invalidated routes.

What is cached: a ``GET`` answered ``200`` on a route declared ``cacheable`` (see
:mod:`panthera.gateway.routes`), asked without ``Authorization``, ``Cookie`` or
``Range``; the answer must set no cookie, not be ``private``/``no-store``, not vary
on anything but credentials, not be content-encoded and be at most
:data:`MAX_ENTRY_BYTES`. A ``HEAD`` is answered from the ``GET``'s entry. The key is
the host, the path and the query string with its parameters sorted by name (the
normalised query is also what the service is asked, so every spelling of one
query gets the same answer). Bodies are kept uncompressed, so ``Accept-Encoding``
is not part of the key: compression belongs in front of the gateway.

Freshness comes from events, not from the TTL: each cacheable service is a
*namespace* with a *generation*; every entry records the generation it was stored
under, and an event that changes what the service shows (see
:data:`INVALIDATED_BY`) bumps the generation, so every older entry stops matching
at once. The TTL bounds how long an entry outlives a lost event, and how late the
stock counts of a cached catalog page can be (orders move them without an event
that invalidates). The
generation is read in the same round trip as the entry and checked again when
storing, so an answer fetched before an event is never stored as current after it.

Two adapters, like the rate limiter's: :class:`MemoryResponseCache` for one
process (embedded shape), :class:`RedisResponseCache` shared by gateway replicas.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

import orjson
from prometheus_client import Counter
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from starlette.types import Message, Scope, Send

from panthera.catalog.events import (
    CategoryChanged,
    PriceChanged,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    StockChanged,
)
from panthera.kernel.errors import TooManyRequests
from panthera.kernel.events.envelope import Envelope
from panthera.kernel.events.transport import BatchDeliveryHandler
from panthera.kernel.observability import EVENTS_CONSUMED
from panthera.kernel.ratelimit import GCRA_LUA, Decision, RedisRateLimiter

log = logging.getLogger("panthera.gateway.cache")

# Which events make a namespace's (a service's) cached answers stale. Any version:
# whatever its shape, the event says something changed. Reservations, sales and
# releases are left out: pages may show their stock counts up to a TTL late, and
# stock.changed still comes when a variant goes out of stock or back in (see
# docs/decisions/0014-cached-pages-and-stock-counts.md).
INVALIDATED_BY: Mapping[str, frozenset[str]] = {
    "catalog": frozenset(
        contract.event_type
        for contract in (
            ProductCreated,
            ProductUpdated,
            ProductDeleted,
            PriceChanged,
            StockChanged,
            CategoryChanged,
        )
    )
}
# The consumer (in RabbitMQ, the queue) that receives those events: one for all
# gateway replicas, which is right only when the generation they bump is shared.
CONSUMER = "gateway"

MAX_ENTRY_BYTES = 1_048_576
DEFAULT_MAX_BYTES = 64 * 1_048_576
# Clients and shared caches may keep the answer but must ask again before each use;
# the question costs them a 304 from this cache.
CLIENT_CACHE_CONTROL = b"public, max-age=0, must-revalidate"

HIT, MISS, BYPASS = b"HIT", b"MISS", b"BYPASS"

# Upstream headers kept in an entry and replayed; the rest of an answer
# (request id, security headers, date, length) is the gateway's own or per request.
REPLAYED_HEADERS = frozenset(
    {
        b"content-type",
        b"content-language",
        b"content-disposition",
        b"link",
        b"x-total-count",
        b"last-modified",
        b"deprecation",
        b"sunset",
    }
)
# Request headers that make an answer personal, partial or otherwise not shareable.
_BYPASS_REQUEST_HEADERS = frozenset({b"authorization", b"cookie", b"range"})
# Conditional request headers are answered here, never passed to the service:
# a miss needs the full body to compute the ETag from.
_CONDITIONAL_HEADERS = frozenset(
    {b"if-none-match", b"if-match", b"if-modified-since", b"if-unmodified-since", b"if-range"}
)
# What an answer may vary on and still be stored: requests carrying credentials
# bypass the cache, and bodies are stored unencoded.
_HARMLESS_VARY = frozenset({"authorization", "cookie", "accept-encoding", "origin"})

RESPONSE_CACHE_LOOKUPS = Counter(
    "panthera_gateway_response_cache_total",
    "Requests on cacheable routes, by how the response cache answered",
    ["namespace", "result"],
)


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """An answer as stored: status, the replayed headers, body and its strong ETag."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    etag: bytes

    @property
    def size(self) -> int:
        """Roughly the bytes it holds, for the memory cache's bound."""
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + 128

    def encode(self, generation: int) -> bytes:
        """The entry and the generation it belongs to, as one Redis value."""
        meta = orjson.dumps(
            {
                "g": generation,
                "s": self.status,
                "h": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers],
                "e": self.etag.decode("latin-1"),
            }
        )
        return len(meta).to_bytes(4, "big") + meta + self.body

    @classmethod
    def decode(cls, raw: bytes) -> tuple[int, CachedResponse]:
        """The generation and entry that :meth:`encode` wrote."""
        length = int.from_bytes(raw[:4], "big")
        meta: dict[str, Any] = orjson.loads(raw[4 : 4 + length])
        entry = cls(
            status=int(meta["s"]),
            headers=tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in meta["h"]),
            body=raw[4 + length :],
            etag=str(meta["e"]).encode("latin-1"),
        )
        return int(meta["g"]), entry


def strong_etag(body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A strong ETag of a representation: its body and the replayed headers.

    The headers count because they carry data too: a page whose items are the same
    but whose ``X-Total-Count`` or ``Link`` changed is a different representation.
    """
    digest = hashlib.blake2b(body, digest_size=16)
    for key, value in headers:
        digest.update(b"\0" + key + b"\0" + value)
    return b'"' + digest.hexdigest().encode() + b'"'


class ResponseCache(Protocol):
    """Entries by namespace and key, each valid for one generation of its namespace."""

    async def lookup(self, namespace: str, key: str) -> tuple[int, CachedResponse | None]:
        """The namespace's current generation and ``key``'s entry if stored under it."""
        ...

    async def store(
        self,
        namespace: str,
        key: str,
        generation: int,
        entry: CachedResponse,
        *,
        ttl_seconds: float,
    ) -> None:
        """Keep ``entry`` for ``ttl_seconds``, unless ``generation`` is no longer current."""
        ...

    async def bump(self, namespace: str) -> None:
        """Start a new generation: every entry of ``namespace`` stops matching."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(slots=True)
class _Slot:
    generation: int
    entry: CachedResponse
    expires_at: float
    size: int


class MemoryResponseCache:
    """Entries in process memory, least recently used first out beyond ``max_bytes``.

    An entry of an old generation is dropped when next looked up (or when the bound
    pushes it out), so a bump costs nothing however many entries there are.
    Methods never suspend, so no lock is needed on one event loop.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        self._max_bytes = max_bytes
        self._clock = clock
        self._generations: dict[str, int] = {}
        self._slots: OrderedDict[tuple[str, str], _Slot] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        """The number of entries held (current or not yet found stale)."""
        return len(self._slots)

    @property
    def size_bytes(self) -> int:
        """What the entries held add up to, never above ``max_bytes``."""
        return self._bytes

    async def lookup(self, namespace: str, key: str) -> tuple[int, CachedResponse | None]:
        """See :meth:`ResponseCache.lookup`."""
        generation = self._generations.get(namespace, 0)
        slot = self._slots.get((namespace, key))
        if slot is None:
            return generation, None
        if slot.generation != generation or slot.expires_at <= self._clock():
            self._remove((namespace, key))
            return generation, None
        self._slots.move_to_end((namespace, key))
        return generation, slot.entry

    async def store(
        self,
        namespace: str,
        key: str,
        generation: int,
        entry: CachedResponse,
        *,
        ttl_seconds: float,
    ) -> None:
        """See :meth:`ResponseCache.store`."""
        size = entry.size
        if generation != self._generations.get(namespace, 0) or size > self._max_bytes:
            return
        self._remove((namespace, key))
        self._slots[(namespace, key)] = _Slot(generation, entry, self._clock() + ttl_seconds, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._remove(next(iter(self._slots)))

    async def bump(self, namespace: str) -> None:
        """See :meth:`ResponseCache.bump`."""
        self._generations[namespace] = self._generations.get(namespace, 0) + 1

    async def close(self) -> None:
        """Nothing to release; present for symmetry with :class:`RedisResponseCache`."""

    def _remove(self, slot_key: tuple[str, str]) -> None:
        slot = self._slots.pop(slot_key, None)
        if slot is not None:
            self._bytes -= slot.size


# KEYS: generation, entry. ARGV: a seed for a missing generation. The generation
# starts at a random value rather than 0, so if Redis ever loses the key (an
# allkeys eviction policy, a flush) the new count cannot meet an older entry's.
_LOOKUP_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""

# KEYS: generation, entry, rate-limit bucket. ARGV: a seed for a missing generation,
# then gcra's interval, burst, cost and tolerance. The lookup, and the hit on the
# caller's budget that the gateway takes before it, in one round trip; nothing is
# looked up for a caller over budget.
_LIMITED_LOOKUP_SCRIPT = (
    GCRA_LUA
    + """
local decision = gcra(KEYS[3], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
    tonumber(ARGV[5]))
if decision[1] == 0 then
    return {decision}
end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return {decision, redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""
)

# KEYS: generation, entry. ARGV: the generation the entry was fetched under, the
# encoded entry, TTL in ms. Stores only if that generation is still current.
_STORE_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS: generation. ARGV: a seed for a missing generation.
_BUMP_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return tostring(redis.call('INCR', KEYS[1]))
"""


# At most this many lookups in flight per process, each on a connection of its own;
# one more waits at most LOOKUP_WAIT_SECONDS for one to come back, like the pool.
LOOKUP_CONNECTIONS = 64
LOOKUP_WAIT_SECONDS = 5.0
# A lookup's round trip, when the client sets no socket timeout of its own.
LOOKUP_TIMEOUT_SECONDS = 5.0


def _seed() -> str:
    return str(secrets.randbits(52) + 1)


def _current(generation: int, raw: bytes | None) -> tuple[int, CachedResponse | None]:
    if not raw:
        return generation, None
    stored_generation, entry = CachedResponse.decode(raw)
    # An entry of an older generation is left to its TTL: deleting it here
    # would race with a replica storing the current one under the same key.
    return generation, entry if stored_generation == generation else None


def _server(redis: Redis) -> tuple[Any, ...]:
    kwargs = redis.connection_pool.connection_kwargs
    return (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db", 0))


@dataclass(frozen=True, slots=True)
class AddressLimit:
    """The per-address budget, for the cache to take in its lookup's round trip."""

    limiter: RedisRateLimiter
    rate_per_minute: int
    burst: int


class RedisResponseCache:
    """Entries and generations in Redis, shared by every gateway replica.

    One round trip per lookup (generation and entry together) and per store; an
    entry expires by itself after its TTL. A namespace's keys share a hash tag, so
    the scripts touch one slot of a cluster. The bound on memory is Redis's own
    (``maxmemory`` with an eviction policy).
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str = "panthera:rc:",
        *,
        lookup_connections: int = LOOKUP_CONNECTIONS,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        # The lookups' own connections, made by the client's pool from its settings
        # but kept here: taking one from redis-py's pool (locks, timers, a readability
        # check, observability hooks) cost more than the lookup's reply.
        self._idle: list[AbstractConnection] = []
        self._lookup_slots = asyncio.Semaphore(lookup_connections)
        socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        self._lookup_timeout: float = socket_timeout or LOOKUP_TIMEOUT_SECONDS
        self._lookup = redis.register_script(_LOOKUP_SCRIPT)
        self._limited_lookup = redis.register_script(_LIMITED_LOOKUP_SCRIPT)
        self._store = redis.register_script(_STORE_SCRIPT)
        self._bump = redis.register_script(_BUMP_SCRIPT)

    def generation_key(self, namespace: str) -> str:
        return f"{self._prefix}{{{namespace}}}:generation"

    def entry_key(self, namespace: str, key: str) -> str:
        return f"{self._prefix}{{{namespace}}}:entry:{key}"

    async def lookup(self, namespace: str, key: str) -> tuple[int, CachedResponse | None]:
        """See :meth:`ResponseCache.lookup`."""
        reply: Any = await self._run(
            self._lookup,
            [self.generation_key(namespace), self.entry_key(namespace, key)],
            [_seed()],
        )
        return _current(int(reply[0]), reply[1])

    async def lookup_limited(
        self, namespace: str, key: str, bucket: str, gcra_args: list[Any]
    ) -> tuple[Decision, int, CachedResponse | None]:
        """Take a hit on a rate-limit bucket, then, if allowed, :meth:`lookup`: one round trip.

        ``bucket`` and ``gcra_args`` are what :meth:`RedisRateLimiter.hit_arguments`
        gives. The generation is ``-1`` when the hit was refused.
        """
        reply: Any = await self._run(
            self._limited_lookup,
            [self.generation_key(namespace), self.entry_key(namespace, key), bucket],
            [_seed(), *gcra_args],
        )
        decision = RedisRateLimiter.decision(reply[0])
        if not decision.allowed:
            return decision, -1, None
        generation, entry = _current(int(reply[1]), reply[2])
        return decision, generation, entry

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """``script`` on one of the lookups' connections: one EVALSHA, its reply as it comes.

        The lookups run on every cached answer, and redis-py's general command path
        (pool, retry policy, observability hooks, reply callbacks) cost about half of
        the round trip's CPU. A failure here is not retried: the caller answers from
        the service instead. A server that lost the script gets it through redis-py,
        which loads it again.
        """
        if self._lookup_slots.locked():
            async with asyncio.timeout(LOOKUP_WAIT_SECONDS):
                await self._lookup_slots.acquire()
        else:
            await self._lookup_slots.acquire()
        try:
            connection = self._idle.pop() if self._idle else self._new_connection()
            try:
                # One deadline for the whole round trip: redis-py's per-socket timeouts
                # start a task for every write and a timer for every read.
                async with asyncio.timeout(self._lookup_timeout):
                    # Connects first when the connection is new or was dropped.
                    await connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    reply = await connection.read_response()
            except NoScriptError:
                self._idle.append(connection)
            except BaseException:
                # Whatever was half sent or half read must not meet the next command.
                await connection.disconnect()
                self._idle.append(connection)
                raise
            else:
                self._idle.append(connection)
                return reply
        finally:
            self._lookup_slots.release()
        return await script(keys=keys, args=args)

    def _new_connection(self) -> AbstractConnection:
        # The client's own settings, less its socket timeout: _run keeps one
        # deadline for the round trip instead.
        pool = self._redis.connection_pool
        settings = {**pool.connection_kwargs, "socket_timeout": None}
        connection: AbstractConnection = pool.connection_class(**settings)
        return connection

    def shares_server_with(self, limiter: RedisRateLimiter) -> bool:
        """Whether ``limiter`` keeps its buckets in the Redis this cache uses."""
        return _server(self._redis) == _server(limiter.redis)

    async def store(
        self,
        namespace: str,
        key: str,
        generation: int,
        entry: CachedResponse,
        *,
        ttl_seconds: float,
    ) -> None:
        """See :meth:`ResponseCache.store`."""
        await self._store(
            keys=[self.generation_key(namespace), self.entry_key(namespace, key)],
            args=[str(generation), entry.encode(generation), max(1, round(ttl_seconds * 1000))],
        )

    async def bump(self, namespace: str) -> None:
        """See :meth:`ResponseCache.bump`."""
        await self._bump(keys=[self.generation_key(namespace)], args=[_seed()])

    async def close(self) -> None:
        """Close the lookups' connections and the Redis client this cache was given."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect()
        await self._redis.aclose()


def connect_redis_cache(redis_url: str) -> RedisResponseCache:
    """A Redis cache on its own blocking pool (bursts queue for a connection)."""
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=5.0)
    return RedisResponseCache(Redis.from_pool(pool))


def invalidator(cache: ResponseCache) -> tuple[list[str], BatchDeliveryHandler]:
    """The event types to subscribe to and the handler that bumps their namespace.

    The handler takes the events delivered together and bumps each namespace they
    touch once: after a burst (a bulk import, a backlog after a restart) one bump
    makes every cached answer of the namespace stale, as many would, and the cache
    is usable again as soon as the burst has been read. Bumping twice is harmless,
    so the handler needs no inbox; if a bump fails, its events are answered with
    the error and the transport delivers them again.
    """
    namespaces = {
        event_type: namespace
        for namespace, event_types in INVALIDATED_BY.items()
        for event_type in event_types
    }

    async def invalidate(envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        touched = {namespaces[e.type] for e in envelopes if e.type in namespaces}
        failed: dict[str, BaseException] = {}
        for namespace in sorted(touched):
            try:
                await cache.bump(namespace)
            except Exception as exc:
                failed[namespace] = exc
        outcomes: list[BaseException | None] = []
        for envelope in envelopes:
            of = namespaces.get(envelope.type)
            outcome = failed.get(of) if of is not None else None
            if of is not None and outcome is None:
                EVENTS_CONSUMED.labels(CONSUMER, envelope.type, "applied").inc()
            outcomes.append(outcome)
        return outcomes

    return sorted(namespaces), invalidate


# -------------------------------------------------------------- the HTTP side

Headers = list[tuple[bytes, bytes]]
# Sends the request (scope, headers) to the service, its answer to ``send``.
Forward = Callable[[Scope, Headers, Send], Awaitable[None]]


def normalise_query(query_string: bytes) -> bytes:
    """The query with its parameters sorted by name (values of one name keep their order).

    Parsed the way Starlette parses it, so the service reads the same parameters
    from the normalised query as from the original.
    """
    if not query_string:
        return b""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    pairs.sort(key=lambda pair: pair[0])
    return urlencode(pairs).encode("ascii")


def cache_key(scope: Scope, query: bytes) -> str:
    """The entry's key: host, path and normalised query (GET and HEAD share it)."""
    host = _header(scope["headers"], b"host") or b""
    return _key(host, scope["path"], query)


def _key(host: bytes, path: str, query: bytes) -> str:
    material = b"\n".join((b"GET", host, path.encode("utf-8"), query))
    return hashlib.blake2b(material, digest_size=16).hexdigest()


# Shoppers ask for the same few pages over and over: parsing, sorting and hashing
# each query again cost more than the rest of a hit. Bounded, so a stream of
# distinct queries only evicts.
@functools.lru_cache(maxsize=4096)
def _query_and_key(host: bytes, path: str, query_string: bytes) -> tuple[bytes, str]:
    query = normalise_query(query_string)
    return query, _key(host, path, query)


def _header(headers: Any, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return bytes(value)
    return None


def etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 says)."""
    if if_none_match is None:
        return False
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == etag:
            return True
    return False


def _storable(status: int, headers: Headers) -> bool:
    if status != 200:
        return False
    for key, value in headers:
        if key == b"set-cookie":
            return False
        if key == b"cache-control":
            directives = {
                d.strip().split("=", 1)[0].lower() for d in value.decode("latin-1").split(",")
            }
            if directives & {"no-store", "private", "no-cache"}:
                return False
        if key == b"vary":
            fields = {f.strip().lower() for f in value.decode("latin-1").split(",")}
            if not fields <= _HARMLESS_VARY:
                return False
        if key == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return False
    return True


class ResponseCaching:
    """Answers cacheable requests from a :class:`ResponseCache`, filling it on misses."""

    def __init__(
        self,
        cache: ResponseCache,
        *,
        ttl_seconds: float,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        address_limit: AddressLimit | None = None,
    ) -> None:
        self.cache = cache
        self.ttl_seconds = ttl_seconds
        self.max_entry_bytes = max_entry_bytes
        # Only when the budget and the entries live in the same Redis can one
        # script touch both.
        self.address_limit = (
            address_limit
            if address_limit is not None
            and isinstance(cache, RedisResponseCache)
            and cache.shares_server_with(address_limit.limiter)
            else None
        )

    @property
    def namespaces(self) -> frozenset[str]:
        """The namespaces whose entries events can invalidate, hence that may be cached."""
        return frozenset(INVALIDATED_BY)

    def limits_address(self, scope: Scope) -> bool:
        """Whether :meth:`handle` takes the caller's per-address hit itself (with its lookup).

        True for an anonymous ``GET``/``HEAD`` that may be answered from the cache,
        when the rate limiter and the cache share a Redis server.
        """
        return (
            self.address_limit is not None
            and scope["method"] in ("GET", "HEAD")
            and not any(key in _BYPASS_REQUEST_HEADERS for key, _ in scope["headers"])
        )

    async def handle(
        self,
        scope: Scope,
        send: Send,
        *,
        namespace: str,
        headers: Headers,
        forward: Forward,
        address: str | None = None,
    ) -> None:
        """Answer one request on a cacheable route: from the cache or the service.

        With ``address`` (only when :meth:`limits_address`), the address's rate-limit
        hit is taken in the lookup's round trip; :class:`TooManyRequests` when its
        budget is spent.
        """
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await forward(scope, headers, send)
            return
        if any(key in _BYPASS_REQUEST_HEADERS for key, _ in scope["headers"]):
            RESPONSE_CACHE_LOOKUPS.labels(namespace, "bypass").inc()
            await forward(scope, headers, _tagged(send, BYPASS))
            return
        query, key = _query_and_key(
            _header(scope["headers"], b"host") or b"", scope["path"], scope.get("query_string", b"")
        )
        try:
            if address is not None and self.address_limit is not None:
                generation, entry = await self._limited_lookup(namespace, key, address)
            else:
                generation, entry = await self.cache.lookup(namespace, key)
        except TooManyRequests:
            raise
        except Exception as exc:
            # The cache is an optimisation: without it, ask the service.
            log.warning("response cache lookup failed: %r", exc)
            if address is not None and self.address_limit is not None:
                # The budget was not spent: spend it the ordinary way.
                await self._hit(address)
            RESPONSE_CACHE_LOOKUPS.labels(namespace, "error").inc()
            await forward(scope, headers, _tagged(send, BYPASS))
            return
        if_none_match = _header(scope["headers"], b"if-none-match")
        if entry is not None:
            RESPONSE_CACHE_LOOKUPS.labels(namespace, "hit").inc()
            await _send_entry(send, entry, HIT, if_none_match=if_none_match, head=method == "HEAD")
            return
        RESPONSE_CACHE_LOOKUPS.labels(namespace, "miss").inc()
        upstream_scope = dict(scope)
        upstream_scope["query_string"] = query
        upstream_headers = [(k, v) for k, v in headers if k not in _CONDITIONAL_HEADERS]
        if method == "HEAD":
            # No body to store: a HEAD is only ever answered from a GET's entry.
            await forward(upstream_scope, upstream_headers, _tagged(send, MISS))
            return
        capture = _Capture(send, self.max_entry_bytes)
        await forward(upstream_scope, upstream_headers, capture)
        if capture.passed_through or capture.start is None:
            return
        if not capture.complete:
            # The service stopped mid-answer: hand on what came, store nothing.
            await capture.pass_through(more_body=False)
            return
        body = b"".join(capture.chunks)
        replayed = tuple(
            (k, v) for k, v in capture.start.get("headers", []) if k in REPLAYED_HEADERS
        )
        entry = CachedResponse(
            status=capture.start["status"],
            headers=replayed,
            body=body,
            etag=strong_etag(body, replayed),
        )
        try:
            await self.cache.store(namespace, key, generation, entry, ttl_seconds=self.ttl_seconds)
        except Exception as exc:
            log.warning("response cache store failed: %r", exc)
        await _send_entry(send, entry, MISS, if_none_match=if_none_match, head=False)

    async def _limited_lookup(
        self, namespace: str, key: str, address: str
    ) -> tuple[int, CachedResponse | None]:
        limit = self.address_limit
        assert limit is not None
        assert isinstance(self.cache, RedisResponseCache)
        bucket, gcra_args = limit.limiter.hit_arguments(
            f"ip:{address}", rate_per_minute=limit.rate_per_minute, burst=limit.burst
        )
        decision, generation, entry = await self.cache.lookup_limited(
            namespace, key, bucket, gcra_args
        )
        if not decision.allowed:
            raise TooManyRequests(decision.retry_after_seconds)
        return generation, entry

    async def _hit(self, address: str) -> None:
        limit = self.address_limit
        assert limit is not None
        decision = await limit.limiter.hit(
            f"ip:{address}", rate_per_minute=limit.rate_per_minute, burst=limit.burst
        )
        if not decision.allowed:
            raise TooManyRequests(decision.retry_after_seconds)


async def _send_entry(
    send: Send, entry: CachedResponse, x_cache: bytes, *, if_none_match: bytes | None, head: bool
) -> None:
    validators = [
        (b"etag", entry.etag),
        (b"cache-control", CLIENT_CACHE_CONTROL),
        (b"x-cache", x_cache),
    ]
    if etag_matches(if_none_match, entry.etag):
        await send({"type": "http.response.start", "status": 304, "headers": validators})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [
        *entry.headers,
        (b"content-length", str(len(entry.body)).encode()),
        *validators,
    ]
    await send({"type": "http.response.start", "status": entry.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else entry.body})


def _tagged(send: Send, x_cache: bytes) -> Send:
    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"x-cache", x_cache)]}
        await send(message)

    return tagged


class _Capture:
    """Holds back a storable answer until it is complete; passes anything else through.

    An answer that cannot be stored (not 200, a cookie, too large...) goes to the
    client as it comes, tagged ``X-Cache: MISS``.
    """

    def __init__(self, send: Send, max_bytes: int) -> None:
        self._send = send
        self._max_bytes = max_bytes
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self._size = 0
        self.passed_through = False
        self.complete = False

    async def __call__(self, message: Message) -> None:
        if self.passed_through:
            await self._send(message)
            return
        if message["type"] == "http.response.start":
            self.start = message
            if not _storable(message["status"], list(message.get("headers", []))):
                await self.pass_through()
            return
        if message["type"] != "http.response.body" or self.start is None:
            # Nothing this class knows how to hold back.
            if self.start is not None:
                await self.pass_through(more_body=True)
            self.passed_through = True
            await self._send(message)
            return
        chunk = message.get("body", b"")
        more_body = message.get("more_body", False)
        self._size += len(chunk)
        self.chunks.append(chunk)
        self.complete = not more_body
        if self._size > self._max_bytes:
            await self.pass_through(more_body=more_body)

    async def pass_through(self, *, more_body: bool | None = None) -> None:
        """Send what is held back, and from now on everything as it comes."""
        assert self.start is not None
        self.passed_through = True
        headers = [*self.start.get("headers", []), (b"x-cache", MISS)]
        await self._send({**self.start, "headers": headers})
        if more_body is not None:
            await self._send(
                {
                    "type": "http.response.body",
                    "body": b"".join(self.chunks),
                    "more_body": more_body,
                }
            )
        self.chunks = []
