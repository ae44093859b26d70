"""How a service's engine uses its PostgreSQL connections.

Reads run without a transaction of their own, a connection used moments ago is not
pinged, and one that sat idle is, so a connection the server closed meanwhile is
replaced before a transaction starts on it rather than failing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

from panthera.kernel import db as db_module
from panthera.kernel.db import Database
from tests.integration.conftest import PostgresServer, ServiceDatabases

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def database(
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
) -> AsyncIterator[Database]:
    databases = await service_databases("pool")
    database = Database(databases.url_for("pool"), pool_size=2)
    try:
        yield database
    finally:
        await database.dispose()


async def _backend_pid(database: Database) -> int:
    async with database.sessions() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_read_sessions_run_each_statement_on_its_own(database: Database) -> None:
    # Inside one transaction now() stays at the transaction's start; without one,
    # every statement has a now() of its own.
    async with database.read_sessions() as session:
        first = (await session.execute(text("SELECT now()"))).scalar_one()
        await session.execute(text("SELECT pg_sleep(0.01)"))
        second = (await session.execute(text("SELECT now()"))).scalar_one()
    assert second > first

    async with database.sessions() as session:
        first = (await session.execute(text("SELECT now()"))).scalar_one()
        await session.execute(text("SELECT pg_sleep(0.01)"))
        second = (await session.execute(text("SELECT now()"))).scalar_one()
    assert second == first


async def test_writes_still_commit_or_roll_back_as_one(database: Database) -> None:
    async with database.sessions() as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS t (n int)"))
        await session.commit()
    async with database.sessions() as session:
        await session.execute(text("INSERT INTO t VALUES (1)"))
        await session.rollback()
    async with database.read_sessions() as session:
        # The read engine's autocommit is per checkout: the pool's writers get
        # their transactions back afterwards.
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
    async with database.sessions() as session:
        await session.execute(text("INSERT INTO t VALUES (1)"))
        await session.execute(text("INSERT INTO t VALUES (2)"))
        await session.rollback()
    async with database.read_sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0


async def _terminate(postgres: PostgresServer, pid: int) -> None:
    admin = await postgres.connect()
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        for _ in range(200):
            gone = not await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            )
            if gone:
                break
            await asyncio.sleep(0.01)
    finally:
        await admin.close()


async def test_a_connection_the_server_closed_is_replaced_before_use(
    database: Database, postgres: PostgresServer
) -> None:
    pid = await _backend_pid(database)
    await _terminate(postgres, pid)
    await asyncio.sleep(0.1)  # the event loop reads the hang-up
    assert await _backend_pid(database) != pid


class _Pings:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fail_first: bool = False) -> None:
        self.calls = 0
        self._fail = fail_first
        real = AsyncAdapt_asyncpg_connection.ping

        def ping(connection: Any) -> None:
            self.calls += 1
            if self._fail:
                # A connection a firewall or proxy dropped without a word: only a
                # round trip finds out.
                self._fail = False
                raise OSError("connection timed out")
            real(connection)

        monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", ping)


async def test_a_connection_used_moments_ago_is_not_pinged(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _backend_pid(database)
    pings = _Pings(monkeypatch)
    for _ in range(3):
        await _backend_pid(database)
    assert pings.calls == 0


async def test_an_idle_connection_is_pinged_and_replaced_when_dead(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = await _backend_pid(database)
    monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 0.0)
    pings = _Pings(monkeypatch, fail_first=True)
    assert await _backend_pid(database) != pid
    assert pings.calls == 1  # the dead one; the one opened in its place needs none


# -- Database.read_one: its own few connections -----------------------------------


async def _reader_pids(database: Database, n: int) -> set[int]:
    rows = await asyncio.gather(
        *(database.read_one("SELECT pg_backend_pid(), pg_sleep(0.05)") for _ in range(n))
    )
    return {row[0] for row in rows if row is not None}


async def test_reads_share_at_most_pool_size_connections_set_up_once(database: Database) -> None:
    database.on_read_connection("SET application_name = 'panthera-reads'")
    pids = await _reader_pids(database, 12)
    assert len(pids) == 2  # pool_size
    assert await database.read_one("SELECT current_setting('application_name')") == (
        "panthera-reads",
    )
    # Returned connections are lent again rather than opened anew.
    assert await _reader_pids(database, 2) == pids


async def test_a_read_whose_connection_was_closed_is_tried_again(
    database: Database, postgres: PostgresServer
) -> None:
    row = await database.read_one("SELECT pg_backend_pid()")
    assert row is not None
    await _terminate(postgres, row[0])
    # No sleep: the client may not have seen the hang-up yet; the read is retried.
    again = await database.read_one("SELECT pg_backend_pid()")
    assert again is not None
    assert again[0] != row[0]


async def test_a_refused_statement_keeps_its_connection_and_a_cancelled_one_does_not(
    database: Database,
) -> None:
    import asyncpg

    first = await database.read_one("SELECT pg_backend_pid()")
    assert first is not None
    with pytest.raises(asyncpg.PostgresError):
        await database.read_one("SELECT no_such_column FROM pg_class")
    assert await database.read_one("SELECT pg_backend_pid()") == first

    read = asyncio.ensure_future(database.read_one("SELECT pg_backend_pid(), pg_sleep(5)"))
    await asyncio.sleep(0.2)
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    # The cancelled read's connection is closed, not lent in the middle of a statement.
    after = await database.read_one("SELECT pg_backend_pid()")
    assert after is not None
    assert await database.read_one("SELECT 1") == (1,)


async def test_waiting_reads_are_served_as_connections_come_back(database: Database) -> None:
    rows = await asyncio.gather(
        *(database.read_one("SELECT $1::int, pg_sleep(0.01)", [n]) for n in range(40))
    )
    assert [row[0] for row in rows if row is not None] == list(range(40))
    # Waiters cancelled while queued leave the others unharmed.
    waiting = [asyncio.ensure_future(database.read_one("SELECT pg_sleep(0.1)")) for _ in range(10)]
    await asyncio.sleep(0.02)
    for task in waiting[2:]:
        task.cancel()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert sum(isinstance(result, asyncio.CancelledError) for result in results) == 8
    assert await database.read_one("SELECT 2") == (2,)


async def test_a_connection_idle_too_long_is_closed_not_lent(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from panthera.kernel import pgdirect

    first = await database.read_one("SELECT pg_backend_pid()")
    monkeypatch.setattr(pgdirect, "IDLE_SECONDS", 0.0)
    await asyncio.sleep(0.01)
    second = await database.read_one("SELECT pg_backend_pid()")
    assert second != first
    assert database._pg_reader.size == 1
