"""A few asyncpg connections the kernel lends itself, without asyncpg's pool.

asyncpg's pool wraps every connection it lends in a proxy and every return in
``asyncio.shield``, a task of its own: for a read that PostgreSQL answers in a
fraction of a millisecond that was more of the client's CPU than the query itself
(0.12 ms against 0.04 ms on one connection). Their users need none of what the pool
does besides lending: single-statement reads (``Database.read_one``) and the short
write transactions of :mod:`panthera.kernel.sql`, which end with COMMIT or ROLLBACK
and leave no session state behind. So a connection goes back as it came, or is
closed when its state is unknown.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]

# What a connection the server or the network closed raises: a statement sent on it
# before its protocol has read the hang-up (the server's FATAL) meets a confused
# protocol state (InternalClientError) rather than a closed connection.
LOST = (
    OSError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def intact(exc: BaseException) -> bool:
    """Whether a connection whose statement raised ``exc`` may be lent again: the server
    refused the statement, or its arguments were refused before anything was sent
    (asyncpg's DataError is a ValueError)."""
    return isinstance(exc, (asyncpg.PostgresError, KeyError, ValueError))


# A connection that sat unused this long is closed rather than lent: a burst's extra
# connections do not stay open, counted against the server's limit, for ever.
IDLE_SECONDS = 300.0


class DirectConnections:
    """Up to ``max_size`` connections to ``dsn``, each set up with ``setup`` once.

    The last connection returned is lent first, so a quiet service keeps one warm
    and the rest go idle and are closed. A read whose connection the server or the
    network closed is tried once more on another.
    """

    def __init__(self, dsn: str, *, max_size: int, setup: Sequence[str] = ()) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        self._dsn = dsn
        self._max_size = max_size
        self._setup = tuple(setup)
        # (connection, when it was returned); the most recently returned last.
        self._idle: list[tuple[Any, float]] = []
        self._open = 0
        # Reads waiting for a connection; each gets one, or None to try again.
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._closed = False

    @property
    def size(self) -> int:
        """Connections open now, lent or idle."""
        return self._open

    async def fetchrow(self, sql: str, args: Sequence[Any]) -> Any:
        """The first row of ``sql``, or ``None``."""
        for attempt in (1, 2):
            connection = await self.acquire()
            try:
                row = await connection.fetchrow(sql, *args)
            except asyncpg.PostgresError:
                # The server refused the statement; the connection is as it was.
                self.release(connection)
                raise
            except LOST:
                self.discard(connection)
                if attempt == 2:
                    raise
                continue
            except BaseException:
                # Cancelled mid-statement: what the connection still has to read is unknown.
                self.discard(connection)
                raise
            self.release(connection)
            return row
        return None  # pragma: no cover - the loop returns or raises

    @asynccontextmanager
    async def lend(self) -> AsyncIterator[Any]:
        """A connection for the block, outside any transaction: returned after it, or
        closed when the block raised something that leaves its state unknown."""
        connection = await self.acquire()
        try:
            yield connection
        except BaseException as exc:
            if intact(exc):
                self.release(connection)
            else:
                self.discard(connection)
            raise
        self.release(connection)

    async def acquire(self) -> Any:
        """A connection, outside any transaction; give it back with :meth:`release`, or
        :meth:`discard` it when what it was doing was cut off."""
        while True:
            if self._closed:
                raise asyncpg.InterfaceError("the read connections are closed")
            connection = self._take_idle()
            if connection is not None:
                return connection
            if self._open < self._max_size:
                return await self._connect()
            waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                connection = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self.release(waiter.result())
                else:
                    self._waiters.remove(waiter)
                raise
            if connection is not None:
                return connection

    def _take_idle(self) -> Any:
        now = time.monotonic()
        # The oldest idle connection first: closed if it has sat too long.
        while self._idle and now - self._idle[0][1] > IDLE_SECONDS:
            stale, _ = self._idle.pop(0)
            self._open -= 1
            stale.terminate()
        while self._idle:
            connection, _ = self._idle.pop()
            if not connection.is_closed():
                return connection
            self._open -= 1
        return None

    async def _connect(self) -> Any:
        self._open += 1
        try:
            connection = await asyncpg.connect(self._dsn)
            try:
                for statement in self._setup:
                    await connection.execute(statement)
            except BaseException:
                connection.terminate()
                raise
        except BaseException:
            self._open -= 1
            self._wake_one(None)
            raise
        return connection

    def release(self, connection: Any) -> None:
        """Take back a connection lent by :meth:`acquire`, outside any transaction."""
        if self._closed or connection.is_closed():
            self.discard(connection)
            return
        if not self._wake_one(connection):
            self._idle.append((connection, time.monotonic()))

    def discard(self, connection: Any) -> None:
        """Close a connection lent by :meth:`acquire` whose state is unknown."""
        connection.terminate()
        self._open -= 1
        # A waiter may open a connection in its place.
        self._wake_one(None)

    def _wake_one(self, connection: Any) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return True
        return False

    async def close(self) -> None:
        """Close the idle connections now and the lent ones as they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            self._open -= 1
            try:
                await asyncio.wait_for(connection.close(), timeout=5)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                connection.terminate()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
