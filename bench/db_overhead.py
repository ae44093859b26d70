"""Client CPU per one-row write, through a service's ``Database`` and through the bare driver.

Each way runs the same ``UPDATE`` of one row, sequentially, on uvloop as the services
do; the figure is this process's CPU time per write (least of ``--repeats`` runs of
``--writes``), so it is the Python side's cost alone, not PostgreSQL's. It tells how
much of a saga step's CPU is the database layer rather than the statement. The last
two ways also publish an event (an outbox row): as its own INSERT before COMMIT, and
with the UPDATE in one statement (``Transaction.commit_with``).

    .venv/bin/python bench/db_overhead.py postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Awaitable, Callable

import uvloop
from sqlalchemy import Column, Integer, MetaData, Table, insert, update

from panthera.kernel.db import Database
from panthera.kernel.events.envelope import EventContract
from panthera.kernel.events.outbox import event_tables, outbox_rows
from panthera.kernel.sql import DirectTransaction


class Bumped(EventContract):
    event_type = "bench.bumped"
    version = 1

    n: int


async def measure(dsn: str, writes: int, repeats: int) -> list[tuple[str, float]]:
    import asyncpg  # type: ignore[import-untyped]

    table_name = f"bench_overhead_{uuid.uuid4().hex[:8]}"
    table = Table(
        table_name, MetaData(), Column("id", Integer, primary_key=True), Column("n", Integer)
    )
    statement = update(table).where(table.c.id == 1).values(n=table.c.n + 1)
    raw_sql = f"UPDATE {table_name} SET n = n + 1 WHERE id = $1"  # noqa: S608 - a name made here
    # An outbox of the services' shape, under a name of this run's.
    outbox = event_tables(MetaData()).outbox.to_metadata(MetaData(), name=f"{table_name}_outbox")
    database = Database(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=2)
    connection = await asyncpg.connect(dsn)
    await connection.execute(f"CREATE TABLE {table_name} (id int PRIMARY KEY, n int)")
    await connection.execute(f"INSERT INTO {table_name} VALUES (1, 0)")  # noqa: S608
    async with database.engine.begin() as conn:
        await conn.run_sync(outbox.metadata.create_all)

    async def session_transaction() -> None:
        async with database.sessions() as session:
            await session.execute(statement)
            await session.commit()

    async def autocommit_session() -> None:
        # On PostgreSQL the read sessions run each statement on its own (autocommit).
        async with database.read_sessions() as session:
            await session.execute(statement)

    async def engine_transaction() -> None:
        async with database.engine.begin() as conn:
            await conn.execute(statement)

    async def pool_checkout_then_driver() -> None:
        async with database.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.execute(raw_sql, 1)

    def direct_transaction() -> DirectTransaction:
        return DirectTransaction(
            database.direct_connections(),
            database.statements,
            source="bench",
            outbox_insert=insert(outbox),
            outbox_rows=outbox_rows,
        )

    async def kernel_transaction() -> None:
        async with direct_transaction() as tx:
            await tx.sql.execute(statement)
            await tx.commit()

    async def kernel_alone() -> None:
        await database.execute_alone(statement)

    async def kernel_transaction_with_event() -> None:
        async with direct_transaction() as tx:
            await tx.sql.execute(statement)
            tx.publish(Bumped(n=1))
            await tx.commit()

    async def kernel_commit_with_event() -> None:
        async with direct_transaction() as tx:
            tx.publish(Bumped(n=1))
            await tx.commit_with(statement)

    async def driver_transaction() -> None:
        async with connection.transaction():
            await connection.execute(raw_sql, 1)

    async def driver_autocommit() -> None:
        await connection.execute(raw_sql, 1)

    ways: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("Database.sessions(): ORM session, BEGIN, UPDATE, COMMIT", session_transaction),
        ("Database.read_sessions() (autocommit): ORM session, UPDATE", autocommit_session),
        ("engine.begin(): Core, BEGIN, UPDATE, COMMIT", engine_transaction),
        ("engine.connect(): pool checkout, UPDATE on the driver", pool_checkout_then_driver),
        ("kernel/sql.py DirectTransaction: BEGIN, UPDATE, COMMIT", kernel_transaction),
        ("kernel/sql.py Database.execute_alone(): UPDATE", kernel_alone),
        ("asyncpg: BEGIN, UPDATE, COMMIT", driver_transaction),
        ("asyncpg: UPDATE", driver_autocommit),
        (
            "kernel/sql.py DirectTransaction + event: BEGIN, UPDATE, INSERT outbox, COMMIT",
            kernel_transaction_with_event,
        ),
        (
            "kernel/sql.py commit_with + event: UPDATE and outbox row, one statement",
            kernel_commit_with_event,
        ),
    ]
    results = []
    try:
        for label, write in ways:
            for _ in range(50):
                await write()
            runs = []
            for _ in range(repeats):
                started = time.process_time()
                for _ in range(writes):
                    await write()
                runs.append((time.process_time() - started) / writes * 1000)
            results.append((label, min(runs)))
    finally:
        await connection.execute(f"DROP TABLE {table_name}, {outbox.name}")
        await connection.close()
        await database.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", help="a PostgreSQL database to make a scratch table in")
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # The servers' event loop (uvicorn picks uvloop when it is installed, and it is).
    for label, ms in uvloop.run(measure(args.dsn, args.writes, args.repeats)):
        print(f"{ms:6.3f} ms  {label}")


if __name__ == "__main__":
    main()
