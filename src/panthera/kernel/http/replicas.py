"""Several addresses of one service: take turns, and pass over one that refused to connect."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence


class ReplicaSet:
    """Round-robin over a service's replicas, skipping one that recently refused a connection.

    A replica that cannot be connected to is set aside for ``retry_after_seconds``;
    the next request goes to the next one. When every replica is set aside they are
    all tried anyway: a whole service restarting should slow requests, not fail
    them for the rest of the window.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        retry_after_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("a replica set needs at least one address")
        self.urls = tuple(dict.fromkeys(url.rstrip("/") for url in urls))
        self._retry_after = retry_after_seconds
        self._clock = clock
        self._next = 0
        self._down_until = [0.0] * len(self.urls)

    def order(self) -> Iterator[str]:
        """Every replica once, live ones first, starting with the one whose turn it is."""
        start = self._next
        self._next = (self._next + 1) % len(self.urls)
        now = self._clock()
        turn = [self.urls[(start + i) % len(self.urls)] for i in range(len(self.urls))]
        live = [url for url in turn if self._down_until[self.urls.index(url)] <= now]
        resting = [url for url in turn if url not in live]
        yield from live
        yield from resting

    def refused(self, url: str) -> None:
        """``url`` could not be connected to: pass over it for a while."""
        self._down_until[self.urls.index(url)] = self._clock() + self._retry_after

    def answered(self, url: str) -> None:
        """``url`` answered: it is live again."""
        self._down_until[self.urls.index(url)] = 0.0
