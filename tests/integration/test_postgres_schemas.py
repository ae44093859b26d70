"""Every service's migrations against its models on PostgreSQL, and the event tables'
own migration: an outbox that keeps only what is still to be sent, an inbox that forgets."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from panthera.kernel.db import Database
from panthera.kernel.events.embedded import EmbeddedTransport
from panthera.kernel.migrations import alembic_config, schema_differences, upgrade
from panthera.kernel.service import ServiceRuntime
from panthera.kernel.settings import Settings
from panthera.runtime.registry import SERVICE_NAMES, definition
from tests.integration.conftest import ServiceDatabases

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# The users service's revision before its outbox stopped keeping sent rows.
USERS_BEFORE = "e2fcca972932"


async def test_every_services_migrations_make_its_models_schema(
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
) -> None:
    databases = await service_databases(*SERVICE_NAMES)
    for name in SERVICE_NAMES:
        service = definition(name)
        database = Database(databases.url_for(name))
        try:
            await upgrade(database, service.migrations_dir, name)
            async with database.engine.connect() as conn:
                found = await conn.run_sync(schema_differences, service.metadata)
                # What autogenerate does not compare: an index's method and condition.
                indexes = dict(
                    (
                        await conn.execute(
                            text(
                                "SELECT indexname, indexdef FROM pg_indexes "
                                "WHERE tablename = 'inbox'"
                            )
                        )
                    ).all()
                )
        finally:
            await database.dispose()
        assert found == [], f"{name}: the migrations and the models differ"
        assert "USING brin (applied_at)" in indexes["ix_inbox_applied_at"], name


async def _at(database: Database, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config(definition("users").migrations_dir, "users")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with database.engine.begin() as conn:
        await conn.run_sync(run)


async def test_the_outbox_migration_drops_sent_rows_and_keeps_the_others(
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
) -> None:
    databases = await service_databases("users")
    database = Database(databases.url_for("users"))
    now = datetime.now(UTC)
    rows = {"sent": (now, None), "pending": (None, None), "dead": (None, now)}
    ids = {name: uuid.uuid4() for name in rows}
    try:
        await _at(database, USERS_BEFORE)
        async with database.engine.begin() as conn:
            for name, (sent_at, dead_at) in rows.items():
                await conn.execute(
                    text(
                        "INSERT INTO outbox (event_id, type, version, subject, payload, "
                        "occurred_at, attempts, next_attempt_at, sent_at, dead_at) VALUES "
                        "(:id, 'user.registered', 1, '', '{}', :now, 0, :now, :sent_at, :dead_at)"
                    ),
                    {"id": ids[name], "now": now, "sent_at": sent_at, "dead_at": dead_at},
                )
        await upgrade(database, definition("users").migrations_dir, "users")
        async with database.engine.connect() as conn:
            left = set((await conn.execute(text("SELECT event_id FROM outbox"))).scalars())
            columns = set(
                (
                    await conn.execute(
                        text(
                            "SELECT column_name FROM information_schema.columns "
                            "WHERE table_name = 'outbox'"
                        )
                    )
                ).scalars()
            )
    finally:
        await database.dispose()
    assert left == {ids["pending"], ids["dead"]}
    assert "sent_at" not in columns


async def test_a_service_forgets_the_events_it_applied_past_the_retention(
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
) -> None:
    databases = await service_databases("users")
    service = definition("users")
    database = Database(databases.url_for("users"))
    settings = Settings(inbox_retention_hours=24)
    cutoff = datetime.now(UTC) - timedelta(hours=24)
    ages = [cutoff - timedelta(minutes=5 * n) for n in range(1, 8)] + [
        cutoff + timedelta(minutes=5 * n) for n in range(1, 4)
    ]
    try:
        await upgrade(database, service.migrations_dir, "users")
        async with database.engine.begin() as conn:
            for n, applied_at in enumerate(ages):
                await conn.execute(
                    text(
                        "INSERT INTO inbox (consumer, event_id, event_type, applied_at) "
                        "VALUES (:consumer, :id, 'user.updated', :at)"
                    ),
                    {"consumer": f"c{n % 2}", "id": uuid.uuid4(), "at": applied_at},
                )
        runtime = ServiceRuntime(
            definition=service,
            settings=settings,
            database=database,
            transport=EmbeddedTransport(),
        )
        # Batches smaller than what is due: every one of them still goes.
        assert await runtime.purge_inbox(batch=3) == 7
        assert await runtime.purge_inbox(batch=3) == 0
        async with database.engine.connect() as conn:
            kept = sorted((await conn.execute(text("SELECT applied_at FROM inbox"))).scalars())
    finally:
        await database.dispose()
    assert kept == sorted(ages[7:])
