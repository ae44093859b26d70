"""Several addresses of one service: take turns, and pass over one that refused or keeps failing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol, TypeVar

import aiohttp

from panthera.kernel.http.breaker import CircuitBreaker, CircuitOpen, gauge_reporter

# Requests that change nothing (RFC 9110, 9.2.1): sending one twice is harmless.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Answered(Protocol):
    """What an attempt gives back: its status is all the breaker needs to know."""

    @property
    def status(self) -> int: ...


A = TypeVar("A", bound=Answered)


class ReplicaSet:
    """Round-robin over a service's replicas, skipping one that refused or whose breaker is open.

    A replica that cannot be connected to is set aside for ``retry_after_seconds``;
    the next request goes to the next one. When every replica is set aside they are
    all tried anyway: a whole service restarting should slow requests, not fail
    them for the rest of the window.

    Each replica also has a circuit breaker (see ``breaker``). A replica whose
    breaker is open is not offered at all; when every one is open, ``order`` raises
    ``CircuitOpen`` so the caller answers 503 at once instead of waiting on a peer
    that is known to be failing.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        retry_after_seconds: float,
        failure_threshold: int = 5,
        open_seconds: float = 10.0,
        service: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("a replica set needs at least one address")
        self.urls = tuple(dict.fromkeys(url.rstrip("/") for url in urls))
        self.service = service
        self._retry_after = retry_after_seconds
        self._clock = clock
        self._next = 0
        self._down_until = [0.0] * len(self.urls)
        self._index = {url: i for i, url in enumerate(self.urls)}
        self.breakers = {
            url: CircuitBreaker(
                failure_threshold=failure_threshold,
                open_seconds=open_seconds,
                clock=clock,
                on_change=gauge_reporter(service, url),
            )
            for url in self.urls
        }

    def order(self) -> Iterator[str]:
        """Every replica a call may go to, live ones first, starting with the one whose turn it is.

        Raises ``CircuitOpen`` when every replica's breaker is open.
        """
        count = len(self.urls)
        start = self._next
        self._next = (start + 1) % count
        now = self._clock()
        live: list[str] = []
        resting: list[str] = []
        for i in range(start, start + count):
            url = self.urls[i % count]
            if self.breakers[url].available():
                (live if self._down_until[i % count] <= now else resting).append(url)
        if not live and not resting:
            raise self.unavailable()
        yield from live
        yield from resting

    def claim(self, url: str) -> bool:
        """Whether a call may be sent to ``url`` now; a half-open breaker lets one through."""
        return self.breakers[url].allow()

    def unavailable(self) -> CircuitOpen:
        """The error for a call no replica may take now, with when to try again."""
        wait = min(breaker.retry_after() for breaker in self.breakers.values())
        return CircuitOpen(self.service, wait)

    def refused(self, url: str) -> None:
        """``url`` could not be connected to: pass over it for a while."""
        self._down_until[self._index[url]] = self._clock() + self._retry_after
        self.breakers[url].failure()

    def failed(self, url: str) -> None:
        """A call to ``url`` timed out or broke off: one more failure for its breaker."""
        self.breakers[url].failure()

    def answered(self, url: str, status: int = 200) -> None:
        """``url`` answered: it is live again, though a 5xx still counts against its breaker."""
        self._down_until[self._index[url]] = 0.0
        if status >= 500:
            self.breakers[url].failure()
        else:
            self.breakers[url].success()

    async def call(self, attempt: Callable[[str], Awaitable[A]], *, safe: bool, retries: int) -> A:
        """What ``attempt(base)`` gives for the first replica to answer, whatever its status.

        A replica that nothing reached is passed over; one whose connection broke
        with the request in hand is passed over only for a ``safe`` request, since
        another kind may already have been acted on; a timeout ends the call there.
        Every replica is tried ``retries`` more rounds, a little later each time.
        Raises what the last attempt raised (an ``aiohttp.ClientError`` or
        ``TimeoutError``), or ``CircuitOpen`` when every breaker is open.
        """
        rounds = 0
        failure: aiohttp.ClientError | None = None
        while True:
            for base in self.order():
                if not self.claim(base):
                    continue
                try:
                    answer = await attempt(base)
                except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                    # Nothing reached that replica: another may take the request
                    # without anything being done twice.
                    self.refused(base)
                    failure = exc
                    continue
                except TimeoutError:
                    # The request may be in hand there, so it is not sent again.
                    self.failed(base)
                    raise
                except aiohttp.ClientError as exc:
                    # The connection broke with the request in hand: the replica closed
                    # an idle pooled one, or died. Not set aside, since it may be
                    # fine; its breaker counts it.
                    self.failed(base)
                    if not safe:
                        raise
                    failure = exc
                    continue
                self.answered(base, answer.status)
                return answer
            rounds += 1
            if rounds > retries:
                if failure is None:
                    # Every replica was taken by an open or half-open breaker.
                    raise self.unavailable()
                raise failure
            await asyncio.sleep(0.05 * rounds)
