"""Idempotency keys on PostgreSQL: one-statement writes on the driver, or the answer
stored in the work's own transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import MetaData, literal, select

from panthera.kernel.db import Database
from panthera.kernel.idempotency import Claim, IdempotencyKeys, idempotency_table
from panthera.kernel.sql import DirectTransaction
from tests.integration.conftest import RoundTrips, ServiceDatabases

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def database(
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
) -> AsyncIterator[Database]:
    databases = await service_databases("idempotency")
    found = Database(databases.url_for("idempotency"))
    try:
        yield found
    finally:
        await found.dispose()


@pytest.fixture
async def keys(database: Database) -> IdempotencyKeys:
    metadata = MetaData()
    table = idempotency_table(metadata)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return IdempotencyKeys(database, table)


def _transaction(database: Database) -> DirectTransaction:
    return DirectTransaction(
        database.direct_connections(),
        database.statements,
        source="idempotency",
        outbox_insert=select(literal(1)),
        outbox_rows=lambda envelopes: [],
    )


async def answer(_claim: Claim) -> tuple[int, Any]:
    return 201, {"id": "first"}


async def test_a_keyed_run_claims_and_answers_in_one_statement_each(
    keys: IdempotencyKeys, round_trips: RoundTrips
) -> None:
    await keys.run(scope="s", key="warm", request_hash="h", handler=answer)
    round_trips.clear()
    first = await keys.run(scope="s", key="k", request_hash="h", handler=answer)
    assert round_trips.verbs() == ["INSERT", "UPDATE"]
    assert (first.status, first.json(), first.replayed) == (201, {"id": "first"}, False)

    async def other(_claim: Claim) -> tuple[int, Any]:
        return 201, {"id": "second"}

    again = await keys.run(scope="s", key="k", request_hash="h", handler=other)
    assert (again.json(), again.replayed) == ({"id": "first"}, True)


async def test_a_failed_run_releases_its_key_for_the_next_try(keys: IdempotencyKeys) -> None:
    async def broken(_claim: Claim) -> tuple[int, Any]:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        await keys.run(scope="s", key="k", request_hash="h", handler=broken)
    retried = await keys.run(scope="s", key="k", request_hash="h", handler=answer)
    assert (retried.json(), retried.replayed) == ({"id": "first"}, False)


async def test_an_answer_stored_with_the_work_commits_and_rolls_back_with_it(
    keys: IdempotencyKeys, database: Database, round_trips: RoundTrips
) -> None:
    async def fails_after_answering(claim: Claim) -> tuple[int, Any]:
        async with _transaction(database) as tx:
            await keys.answer_in(tx.sql, claim, 201, {"id": "lost"})
            raise RuntimeError("the work failed before its commit")

    with pytest.raises(RuntimeError, match="before its commit"):
        await keys.run(scope="s", key="k", request_hash="h", handler=fails_after_answering)

    async def answers_with_the_work(claim: Claim) -> tuple[int, Any]:
        async with _transaction(database) as tx:
            await keys.answer_in(tx.sql, claim, 201, {"id": "kept"})
            await tx.commit()
        return 201, {"id": "kept"}

    # The rolled-back answer left the key free; this one is stored by the work's commit.
    round_trips.clear()
    first = await keys.run(scope="s", key="k", request_hash="h", handler=answers_with_the_work)
    assert (first.json(), first.replayed) == ({"id": "kept"}, False)
    assert "UPDATE" not in round_trips.verbs()[round_trips.verbs().index("COMMIT") :]
    again = await keys.run(scope="s", key="k", request_hash="h", handler=answer)
    assert (again.json(), again.replayed) == ({"id": "kept"}, True)
