"""Core statements on the driver (``kernel/sql.py``): the same statements, the same rows,
the same transaction semantics as through SQLAlchemy, on PostgreSQL and on SQLite."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import StatementError

from panthera.kernel.db import (
    Database,
    UnitOfWork,
    UTCDateTime,
    WrittenBeforeCommit,
    service_metadata,
)
from panthera.kernel.events.envelope import Envelope, EventContract
from panthera.kernel.events.outbox import EventTables, event_tables, outbox_rows, outbox_writer
from panthera.kernel.sql import (
    DirectTransaction,
    Transaction,
    compile_for_postgres,
    is_unique_violation,
)
from tests.integration.conftest import ServiceDatabases

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

METADATA: MetaData = service_metadata()
THINGS = Table(
    "things",
    METADATA,
    Column("id", Uuid, primary_key=True),
    Column("name", String(40), nullable=False),
    Column("hits", Integer, nullable=False, default=0),
    Column("seen_at", UTCDateTime, nullable=False),
    Column("doc", JSON),
)
EVENTS: EventTables = event_tables(METADATA)

ADD = insert(THINGS)
BUMP = (
    update(THINGS)
    .where(THINGS.c.id == bindparam("thing_id"), THINGS.c.name != "frozen")
    .values(hits=THINGS.c.hits + bindparam("by"), seen_at=bindparam("at"))
)
BUMP_RETURNING = BUMP.returning(THINGS.c.hits, THINGS.c.seen_at)
ONE = select(THINGS.c.name, THINGS.c.hits, THINGS.c.seen_at, THINGS.c.doc).where(
    THINGS.c.id == bindparam("thing_id")
)
HOW_MANY = select(func.count()).select_from(THINGS)


@dataclass(frozen=True)
class ThingNamed(EventContract):
    event_type = "thing.named"
    version = 1

    name: str


@dataclass
class Shape:
    database: Database
    transaction: Callable[[], Transaction]


async def _shape(url: str) -> Shape:
    database = Database(url, pool_size=2)
    async with database.engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    woken: list[int] = []

    def transaction() -> Transaction:
        if database.is_sqlite:
            return UnitOfWork(
                database,
                source="things",
                outbox_insert=outbox_writer(EVENTS),
                after_commit=lambda events: woken.append(len(events)),
            )
        return DirectTransaction(
            database.direct_connections(),
            database.statements,
            source="things",
            outbox_insert=EVENTS.outbox_insert,
            outbox_rows=outbox_rows,
            after_commit=lambda events: woken.append(len(events)),
        )

    return Shape(database, transaction)


@pytest.fixture(params=["postgresql", "sqlite"])
async def shape(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
) -> AsyncIterator[Shape]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'things.db'}"
    else:
        url = (await service_databases("things")).url_for("things")
    found = await _shape(url)
    try:
        yield found
    finally:
        await found.database.dispose()


def _thing(name: str = "a") -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "name": name,
        "seen_at": datetime.now(UTC),
        "doc": {"tags": ["x", "y"], "n": 1},
    }


async def _count(shape: Shape, table: Table) -> int:
    async with shape.database.read_sessions() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def test_rows_and_events_commit_together(shape: Shape) -> None:
    thing = _thing()
    async with shape.transaction() as tx:
        await tx.sql.execute(ADD, thing)
        tx.publish(ThingNamed(name="a"))
        committed: list[bool] = []
        tx.on_commit(lambda: committed.append(True))
        await tx.commit()
    assert committed == [True]
    async with shape.transaction() as tx:
        row = await tx.sql.fetch_one(ONE, {"thing_id": thing["id"]})
    assert row is not None
    # The column's default, SQLAlchemy's JSON and UTC timestamp conversions all applied.
    assert row.name == "a"
    assert row.hits == 0
    # JSON comes back as the driver reads it: decoded by SQLAlchemy, as text from asyncpg.
    doc = row.doc
    assert (json.loads(doc) if isinstance(doc, str) else doc) == {"tags": ["x", "y"], "n": 1}
    assert row.seen_at == thing["seen_at"]
    assert row.seen_at.tzinfo is not None
    assert await _count(shape, EVENTS.outbox) == 1


async def test_leaving_without_commit_or_with_an_error_writes_nothing(shape: Shape) -> None:
    async with shape.transaction() as tx:
        await tx.sql.execute(ADD, _thing())
        tx.publish(ThingNamed(name="a"))

    async def fails() -> None:
        async with shape.transaction() as tx:
            await tx.sql.execute(ADD, _thing())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fails()
    first = _thing()

    async def twice() -> None:
        async with shape.transaction() as tx:
            await tx.sql.execute(ADD, first)
            await tx.sql.execute(ADD, first)

    with pytest.raises(Exception) as refused:  # noqa: PT011 - each driver has its own class
        await twice()
    assert is_unique_violation(refused.value)
    assert await _count(shape, THINGS) == 0
    assert await _count(shape, EVENTS.outbox) == 0
    # The connections went back in a usable state.
    async with shape.transaction() as tx:
        await tx.sql.execute(ADD, first)
        await tx.commit()
    assert await _count(shape, THINGS) == 1


async def test_rowcounts_returning_and_many_rows(shape: Shape) -> None:
    things = [_thing("a"), _thing("frozen"), _thing("c")]
    later = datetime.now(UTC) + timedelta(minutes=1)
    async with shape.transaction() as tx:
        await tx.sql.execute_many(ADD, things)
        bumped = [
            await tx.sql.execute(BUMP, {"thing_id": t["id"], "by": 2, "at": later}) for t in things
        ]
        answered = await tx.sql.fetch(
            BUMP_RETURNING, {"thing_id": things[0]["id"], "by": 3, "at": later}
        )
        await tx.commit()
    # The literal in the statement's condition ("frozen") is part of its compiled form.
    assert bumped == [1, 0, 1]
    assert [(row.hits, row.seen_at) for row in answered] == [(5, later)]
    assert await _count(shape, THINGS) == 3


def _upsert(postgres: bool) -> Any:
    # Each dialect's own INSERT: ON CONFLICT is not part of the generic one.
    statement = (pg_insert if postgres else sqlite_insert)(THINGS)
    return statement.on_conflict_do_update(
        index_elements=["id"],
        set_={"hits": THINGS.c.hits + statement.excluded.hits, "doc": statement.excluded.doc},
        where=THINGS.c.name != "frozen",
    ).returning(THINGS.c.id, THINGS.c.hits)


_UPSERTS = {True: _upsert(True), False: _upsert(False)}


async def test_many_rows_in_one_insert_answer_what_it_returned(shape: Shape) -> None:
    """``fetch_many``: one INSERT of many rows, its ON CONFLICT applied to each, and
    every row it wrote answered (on PostgreSQL as one array per column)."""
    first, frozen = _thing("a"), _thing("frozen")
    async with shape.transaction() as tx:
        await tx.sql.execute_many(ADD, [first, frozen])
        await tx.commit()
    new = [_thing("b"), _thing("c")]
    rows = [
        {**thing, "hits": hits}
        for thing, hits in ((first, 4), (frozen, 5), (new[0], 1), (new[1], 2))
    ]
    rows[0]["doc"] = {"moved": True}
    async with shape.transaction() as tx:
        answered = await tx.sql.fetch_many(_UPSERTS[tx.sql.postgres], rows)
        none = await tx.sql.fetch_many(_UPSERTS[tx.sql.postgres], [])
        await tx.commit()
    assert none == []
    # The frozen row refused the update, so it is not among the rows written.
    assert sorted((row[0], row[1]) for row in answered) == sorted(
        [(first["id"], 4), (new[0]["id"], 1), (new[1]["id"], 2)]
    )
    async with shape.transaction() as tx:
        stored = {
            thing["id"]: await tx.sql.fetch_one(ONE, {"thing_id": thing["id"]})
            for thing in (first, frozen, *new)
        }
    assert stored[frozen["id"]].hits == 0
    doc = stored[first["id"]].doc
    assert (json.loads(doc) if isinstance(doc, str) else doc) == {"moved": True}
    # Timestamps keep their instant and zone through the arrays.
    assert stored[new[1]["id"]].seen_at == new[1]["seen_at"]
    assert stored[new[1]["id"]].name == "c"


_PENDING: WrittenBeforeCommit[list[int]] = WrittenBeforeCommit(
    "test rows", list, lambda found: bool(found)
)


async def test_gathered_work_left_unwritten_refuses_the_commit(shape: Shape) -> None:
    async with shape.transaction() as tx:
        await tx.sql.execute(ADD, _thing())
        _PENDING.of(tx).append(1)
        with pytest.raises(RuntimeError, match="test rows were not written"):
            await tx.commit()
    assert await _count(shape, THINGS) == 0
    async with shape.transaction() as tx:
        _PENDING.of(tx).append(1)
        # commit_with is refused too, before its statement runs.
        with pytest.raises(RuntimeError, match="test rows were not written"):
            await tx.commit_with(ADD, _thing())
    assert await _count(shape, THINGS) == 0
    async with shape.transaction() as tx:
        _PENDING.of(tx).append(2)
        await tx.rollback()
        assert _PENDING.gathered(tx) is None
        gathered = _PENDING.of(tx)
        await tx.sql.execute(ADD, _thing())
        gathered.clear()  # written
        await tx.commit()
        assert _PENDING.gathered(tx) is None
    assert await _count(shape, THINGS) == 1


async def test_statements_alone_commit_each_on_their_own(shape: Shape) -> None:
    thing = _thing()
    assert await shape.database.execute_alone(ADD, thing) == 1
    async with shape.database.alone() as sql:
        row = await sql.fetch_one(
            BUMP_RETURNING, {"thing_id": thing["id"], "by": 4, "at": datetime.now(UTC)}
        )
    assert row is not None
    assert row.hits == 4
    missing = {"thing_id": uuid.uuid4(), "by": 1, "at": datetime.now(UTC)}
    assert await shape.database.execute_alone(BUMP, missing) == 0
    async with shape.database.alone() as sql:
        assert await sql.fetch_one(BUMP_RETURNING, missing) is None
    # SQLAlchemy wraps the type's refusal in its StatementError; the driver path does not.
    with pytest.raises((ValueError, StatementError), match="timezone-aware"):
        await shape.database.execute_alone(BUMP, {**missing, "at": datetime(2026, 1, 1)})


async def test_a_transaction_cut_off_closes_its_connection(
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
) -> None:
    shape = await _shape((await service_databases("things")).url_for("things"))
    try:
        connections = shape.database.direct_connections()

        async def stuck() -> None:
            async with shape.transaction() as tx:
                await tx.sql.execute(ADD, _thing())
                await tx.sql.fetch_one(select(func.pg_sleep(5)))

        task = asyncio.create_task(stuck())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Its row was never committed, and its connection was not lent again.
        assert connections.size == 0
        assert await _count(shape, THINGS) == 0
    finally:
        await shape.database.dispose()


async def test_an_in_of_the_statements_own_values(shape: Shape) -> None:
    await shape.database.execute_alone(ADD, _thing("a"))
    await shape.database.execute_alone(ADD, _thing("b"))
    await shape.database.execute_alone(ADD, _thing("c"))
    named = select(THINGS.c.name).where(
        THINGS.c.name.in_(["a", "c"]), THINGS.c.hits == bindparam("hits")
    )
    async with shape.database.reads() as sql:
        found = sorted(row.name for row in await sql.fetch(named, {"hits": 0}))
    assert found == ["a", "c"]


def test_a_missing_value_or_an_expanding_parameter_is_refused() -> None:
    compiled = compile_for_postgres(BUMP)
    with pytest.raises(KeyError, match="by"):
        compiled.arguments({"thing_id": uuid.uuid4(), "at": datetime.now(UTC)})
    with pytest.raises(ValueError, match="expanding"):
        compile_for_postgres(
            select(THINGS.c.id).where(THINGS.c.id.in_(bindparam("ids", expanding=True)))
        )


async def test_a_statement_after_rollback_or_commit_begins_the_next_transaction(
    shape: Shape,
) -> None:
    kept, dropped = _thing("kept"), _thing("dropped")
    async with shape.transaction() as tx:
        await tx.sql.execute(ADD, dropped)
        await tx.rollback()
        await tx.sql.execute(ADD, kept)
        await tx.commit()
        await tx.sql.execute(ADD, _thing("left open"))
    async with shape.database.reads() as sql:
        names = [row.name for row in await sql.fetch(select(THINGS.c.name))]
    assert names == ["kept"]


NAMED_WITH_CTE = insert(THINGS).from_select(
    ["id", "name", "seen_at"],
    select(
        bindparam("id", type_=THINGS.c.id.type),
        bindparam("name", type_=THINGS.c.name.type),
        bindparam("seen_at", type_=THINGS.c.seen_at.type),
    ),
)


async def _outbox(shape: Shape) -> list[tuple[str, Any]]:
    async with shape.database.read_sessions() as session:
        rows = await session.execute(
            select(EVENTS.outbox.c.type, EVENTS.outbox.c.payload).order_by(EVENTS.outbox.c.seq)
        )
        return [(kind, json.loads(p) if isinstance(p, str) else p) for kind, p in rows]


async def test_commit_with_writes_the_last_statement_and_the_events_together(
    shape: Shape,
) -> None:
    thing = _thing()
    committed: list[bool] = []
    async with shape.transaction() as tx:
        tx.publish(ThingNamed(name="first"))
        tx.publish(ThingNamed(name="second"))
        tx.on_commit(lambda: committed.append(True))
        assert await tx.commit_with(ADD, thing) == 1
    assert committed == [True]
    assert await _count(shape, THINGS) == 1
    assert [payload["name"] for _, payload in await _outbox(shape)] == ["first", "second"]

    # After earlier statements in the same transaction, all commit with it.
    other = _thing("b")
    async with shape.transaction() as tx:
        await tx.sql.execute(ADD, other)
        tx.publish(ThingNamed(name="bumped"))
        bumped = await tx.commit_with(
            BUMP, {"thing_id": other["id"], "by": 2, "at": datetime.now(UTC)}
        )
    assert bumped == 1
    assert await _count(shape, THINGS) == 2
    assert len(await _outbox(shape)) == 3

    # With no events: the statement alone, committed.
    async with shape.transaction() as tx:
        assert await tx.commit_with(BUMP, {"thing_id": thing["id"], "by": 1, "at": later()}) == 1
    async with shape.database.reads() as sql:
        row = await sql.fetch_one(ONE, {"thing_id": thing["id"]})
    assert row is not None
    assert row.hits == 1


def later() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=1)


async def test_commit_with_a_statement_that_writes_nothing_rolls_everything_back(
    shape: Shape,
) -> None:
    frozen = _thing("frozen")
    await shape.database.execute_alone(ADD, frozen)
    called: list[bool] = []
    bump_frozen = {"thing_id": frozen["id"], "by": 1, "at": later()}
    # Alone: nothing written, the events dropped.
    async with shape.transaction() as tx:
        tx.publish(ThingNamed(name="never"))
        tx.on_commit(lambda: called.append(True))
        assert await tx.commit_with(BUMP, bump_frozen) == 0
    # After an earlier statement: that one is rolled back as well.
    async with shape.transaction() as tx:
        await tx.sql.execute(ADD, _thing("rolled back"))
        tx.publish(ThingNamed(name="never"))
        tx.on_commit(lambda: called.append(True))
        assert await tx.commit_with(BUMP, bump_frozen) == 0
        # The transaction goes on usable: the next statement begins the next one.
        await tx.sql.execute(ADD, _thing("next"))
        await tx.commit()
    assert called == []
    assert await _outbox(shape) == []
    async with shape.database.reads() as sql:
        names = sorted(row.name for row in await sql.fetch(select(THINGS.c.name)))
    assert names == ["frozen", "next"]


async def test_commit_with_a_statement_of_its_own_ctes_and_a_failing_one(shape: Shape) -> None:
    thing = _thing("from select")
    async with shape.transaction() as tx:
        tx.publish(ThingNamed(name="selected"))
        written = await tx.commit_with(
            NAMED_WITH_CTE, {"id": thing["id"], "name": thing["name"], "seen_at": later()}
        )
    assert written == 1
    assert [kind for kind, _ in await _outbox(shape)] == ["thing.named"]

    async def twice() -> None:
        async with shape.transaction() as tx:
            tx.publish(ThingNamed(name="twice"))
            await tx.commit_with(ADD, {**_thing(), "id": thing["id"]})

    with pytest.raises(Exception) as refused:  # noqa: PT011 - each driver has its own class
        await twice()
    assert is_unique_violation(refused.value)
    assert len(await _outbox(shape)) == 1
    assert await _count(shape, THINGS) == 1


def test_events_ride_with_the_statement_built_once_per_shape() -> None:
    from panthera.kernel.sql import Statements

    statements = Statements()
    keys = tuple(outbox_rows([Envelope.wrap(ThingNamed(name="a"), source="things")])[0])
    one = statements.with_events(BUMP, EVENTS.outbox, keys, 1)
    assert statements.with_events(BUMP, EVENTS.outbox, keys, 1) is one
    two = statements.with_events(BUMP, EVENTS.outbox, keys, 2)
    assert two is not one
    sql = compile_for_postgres(two).sql
    # The outbox rows are written only when the statement wrote a row.
    assert sql.count("WHERE EXISTS (SELECT 1") == 2
    assert "RETURNING 1 AS written" in sql
