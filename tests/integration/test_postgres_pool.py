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
