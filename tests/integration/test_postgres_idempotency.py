"""Idempotency keys on PostgreSQL, their one-statement writes in autocommit sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import MetaData

from panthera.kernel.db import Database
from panthera.kernel.idempotency import Claim, IdempotencyKeys, idempotency_table
from tests.integration.conftest import RoundTrips, ServiceDatabases

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def keys(
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
) -> AsyncIterator[IdempotencyKeys]:
    databases = await service_databases("idempotency")
    database = Database(databases.url_for("idempotency"))
    metadata = MetaData()
    table = idempotency_table(metadata)
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield IdempotencyKeys(database, table)
    finally:
        await database.dispose()


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
