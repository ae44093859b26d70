"""The outbox, the relay and the inbox on an embedded (SQLite) service database."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from panthera.kernel.db import Database, UnitOfWork
from panthera.kernel.events import Envelope, EventContract
from panthera.kernel.events.embedded import ConsumerFailed, EmbeddedTransport
from panthera.kernel.migrations import upgrade
from panthera.kernel.service import ServiceRuntime, Subscription, UnsupportedEventVersion
from panthera.kernel.settings import Settings
from panthera.runtime.registry import definition


class ThingHappened(EventContract):
    event_type = "test.thing_happened"
    version = 1

    name: str


applied: list[str] = []


async def remember(_runtime: ServiceRuntime, uow: UnitOfWork, event: Any, _e: Envelope) -> None:
    applied.append(event.name)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[ServiceRuntime]:
    applied.clear()
    service = dataclasses.replace(
        definition("users"), subscriptions=(Subscription(ThingHappened, remember),)
    )
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/users.sqlite3")
    await upgrade(database, service.migrations_dir, "users")
    transport = EmbeddedTransport()
    await transport.start()
    runtime = ServiceRuntime(
        definition=service,
        settings=Settings(data_dir=tmp_path),
        database=database,
        transport=transport,
    )
    await runtime.subscribe()
    yield runtime
    await database.dispose()


async def _outbox_rows(runtime: ServiceRuntime) -> list[Any]:
    outbox = runtime.definition.tables.outbox
    async with runtime.database.sessions() as session:
        return list((await session.execute(select(outbox))).all())


async def test_commit_writes_events_with_the_state_change(runtime: ServiceRuntime) -> None:
    async with runtime.uow() as uow:
        uow.publish(ThingHappened(name="kept"))
        await uow.commit()
    async with runtime.uow() as uow:
        uow.publish(ThingHappened(name="dropped"))
        # Leaving without commit rolls the events back with everything else.
    rows = await _outbox_rows(runtime)
    assert [row.payload["name"] for row in rows] == ["kept"]
    assert rows[0].sent_at is None


async def test_relay_delivers_and_marks_sent(runtime: ServiceRuntime) -> None:
    async with runtime.uow() as uow:
        for name in ("a", "b", "c"):
            uow.publish(ThingHappened(name=name))
        await uow.commit()
    await runtime.relay.relay_once()
    assert applied == ["a", "b", "c"]
    assert all(row.sent_at is not None for row in await _outbox_rows(runtime))
    assert await runtime.relay.lag() == (0, 0.0)


async def test_a_redelivered_event_is_applied_once(runtime: ServiceRuntime) -> None:
    envelope = Envelope.wrap(ThingHappened(name="once"), source="elsewhere")
    await runtime.transport.publish(envelope)
    await runtime.transport.publish(envelope)
    assert applied == ["once"]
    inbox = runtime.definition.tables.inbox
    async with runtime.database.sessions() as session:
        count = (await session.execute(select(func.count()).select_from(inbox))).scalar_one()
    assert count == 1


async def test_a_failing_consumer_leaves_the_row_pending(runtime: ServiceRuntime) -> None:
    failures = {"left": 1}

    async def flaky(envelope: Envelope) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("consumer down")

    await runtime.transport.subscribe("flaky", [ThingHappened.event_type], flaky)
    async with runtime.uow() as uow:
        uow.publish(ThingHappened(name="retry me"))
        await uow.commit()
    await runtime.relay.relay_once()
    (row,) = await _outbox_rows(runtime)
    assert row.sent_at is None
    assert row.attempts == 1
    assert "consumer down" in row.last_error
    assert row.next_attempt_at > row.occurred_at
    # Not due yet: the next pass leaves it alone.
    await runtime.relay.relay_once()
    (row,) = await _outbox_rows(runtime)
    assert row.attempts == 1
    outbox = runtime.definition.tables.outbox
    async with runtime.database.sessions() as session:
        await session.execute(outbox.update().values(next_attempt_at=row.occurred_at))
        await session.commit()
    await runtime.relay.relay_once()
    (row,) = await _outbox_rows(runtime)
    assert row.sent_at is not None
    # The healthy consumer saw it twice but applied it once.
    assert applied == ["retry me"]


async def test_an_unknown_version_is_refused_not_dropped(runtime: ServiceRuntime) -> None:
    envelope = Envelope(
        type=ThingHappened.event_type, version=2, source="elsewhere", payload={"name": "v2"}
    )
    with pytest.raises(ConsumerFailed, match="not applied"):
        await runtime.transport.publish(envelope)
    assert applied == []
    consumer = runtime._consumer({ThingHappened.event_type: Subscription(ThingHappened, remember)})
    with pytest.raises(UnsupportedEventVersion):
        await consumer(envelope)
