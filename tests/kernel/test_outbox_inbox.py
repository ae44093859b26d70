"""The outbox, the relay and the inbox on an embedded (SQLite) service database."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import event, func, select

from panthera.kernel import tracing
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
    assert rows[0].attempts == 0
    assert rows[0].dead_at is None


async def test_relay_delivers_and_deletes_the_rows_sent(runtime: ServiceRuntime) -> None:
    async with runtime.uow() as uow:
        for name in ("a", "b", "c"):
            uow.publish(ThingHappened(name=name))
        await uow.commit()
    await runtime.relay.relay_once()
    assert applied == ["a", "b", "c"]
    assert await _outbox_rows(runtime) == []
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


async def test_inbox_records_past_the_retention_are_purged_and_no_others(
    runtime: ServiceRuntime,
) -> None:
    old, recent = (Envelope.wrap(ThingHappened(name=n), source="elsewhere") for n in "or")
    await runtime.transport.publish(old)
    await runtime.transport.publish(recent)
    inbox = runtime.definition.tables.inbox
    retention = timedelta(hours=runtime.settings.inbox_retention_hours)
    async with runtime.database.sessions() as session:
        await session.execute(
            inbox.update()
            .where(inbox.c.event_id == old.id)
            .values(applied_at=datetime.now(UTC) - retention - timedelta(minutes=1))
        )
        await session.commit()
    # Batches smaller than what is due: the purge goes on until none is left.
    assert await runtime.purge_inbox(batch=1) == 1
    async with runtime.database.sessions() as session:
        left = set((await session.execute(select(inbox.c.event_id))).scalars())
    assert left == {recent.id}
    # The event forgotten would be applied again; the one remembered is still a no-op.
    await runtime.transport.publish(recent)
    await runtime.transport.publish(old)
    assert applied == ["o", "r", "o"]


async def test_an_event_is_claimed_in_the_inbox_without_a_savepoint(
    runtime: ServiceRuntime,
) -> None:
    # A duplicate is found by the claiming INSERT returning no row, not by an
    # error that a savepoint would have to contain.
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    envelope = Envelope.wrap(ThingHappened(name="once"), source="elsewhere")
    event.listen(runtime.database.engine.sync_engine, "before_cursor_execute", seen)
    try:
        await runtime.transport.publish(envelope)
        await runtime.transport.publish(envelope)
    finally:
        event.remove(runtime.database.engine.sync_engine, "before_cursor_execute", seen)
    assert applied == ["once"]
    # SQLite's own BEGIN aside, each delivery ran its one claiming statement.
    assert [s for s in statements if s != "BEGIN"] == ["INSERT", "INSERT"]


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
    assert await _outbox_rows(runtime) == []
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


class ThingNoted(EventContract):
    event_type = "test.thing_noted"
    version = 1

    name: str


async def note(_runtime: ServiceRuntime, uow: UnitOfWork, event: Any, _e: Envelope) -> None:
    # Its effect is written in the consuming transaction: the outbox shows what was applied.
    if event.name.startswith("poison"):
        raise RuntimeError(f"cannot apply {event.name}")
    applied.append(event.name)
    uow.publish(ThingNoted(name=event.name))


@pytest.fixture
async def batching(tmp_path: Path) -> AsyncIterator[tuple[ServiceRuntime, list[int]]]:
    """A runtime consuming in batches, and how many times its batch hook ran."""
    applied.clear()
    hooked: list[int] = []

    async def before_commit(_runtime: ServiceRuntime, uow: UnitOfWork) -> None:
        hooked.append(len(applied))

    service = dataclasses.replace(
        definition("users"),
        subscriptions=(Subscription(ThingHappened, note),),
        consume_batch=8,
        before_commit=before_commit,
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
    yield runtime, hooked
    await database.dispose()


def _batch_consumer(runtime: ServiceRuntime) -> Any:
    return runtime._batch_consumer({ThingHappened.event_type: Subscription(ThingHappened, note)})


async def _noted(runtime: ServiceRuntime) -> list[str]:
    return sorted(row.payload["name"] for row in await _outbox_rows(runtime))


async def _inbox_count(runtime: ServiceRuntime) -> int:
    inbox = runtime.definition.tables.inbox
    async with runtime.database.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(inbox))).scalar_one())


async def test_a_batch_is_applied_in_one_transaction_each_event_once(
    batching: tuple[ServiceRuntime, list[int]],
) -> None:
    runtime, hooked = batching
    consume = _batch_consumer(runtime)
    before = Envelope.wrap(ThingHappened(name="before"), source="elsewhere")
    assert await consume([before]) == [None]
    a, b = (Envelope.wrap(ThingHappened(name=name), source="elsewhere") for name in "ab")
    other = Envelope(type="test.not_consumed", source="elsewhere", payload={})
    # A redelivery of an applied event, and one event delivered twice in the batch.
    assert await consume([a, before, b, a, other]) == [None] * 5
    assert await _noted(runtime) == ["a", "b", "before"]
    assert await _inbox_count(runtime) == 3
    # The hook ran once per transaction, after that transaction's handlers.
    assert hooked == [1, 3]


async def test_a_failing_event_in_a_batch_holds_back_no_other(
    batching: tuple[ServiceRuntime, list[int]],
) -> None:
    runtime, _ = batching
    consume = _batch_consumer(runtime)
    unknown = Envelope(
        type=ThingHappened.event_type, version=2, source="elsewhere", payload={"name": "v2"}
    )
    envelopes = [
        Envelope.wrap(ThingHappened(name=name), source="elsewhere")
        for name in ("one", "poison", "two")
    ]
    outcomes = await consume([*envelopes, unknown])
    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[3], UnsupportedEventVersion)
    # The batch's transaction was rolled back whole; each good event then
    # committed once on its own, and the failing ones left no trace.
    assert await _noted(runtime) == ["one", "two"]
    assert await _inbox_count(runtime) == 2
    assert await consume(envelopes[:1]) == [None]
    assert await _noted(runtime) == ["one", "two"]


async def test_embedded_delivery_to_a_batch_consumer_raises_for_a_failure(
    batching: tuple[ServiceRuntime, list[int]],
) -> None:
    runtime, _ = batching
    await runtime.transport.publish(Envelope.wrap(ThingHappened(name="fine"), source="x"))
    with pytest.raises(ConsumerFailed, match="poison"):
        await runtime.transport.publish(Envelope.wrap(ThingHappened(name="poison"), source="x"))
    assert await _noted(runtime) == ["fine"]


INCOMING_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def _traceparents(runtime: ServiceRuntime) -> list[str | None]:
    return [row.traceparent for row in await _outbox_rows(runtime)]


async def test_without_an_exporter_events_published_while_consuming_carry_the_trace_on(
    batching: tuple[ServiceRuntime, list[int]],
) -> None:
    runtime, _ = batching
    envelope = Envelope.wrap(
        ThingHappened(name="traced"), source="elsewhere", traceparent=INCOMING_TRACE
    )
    assert await _batch_consumer(runtime)([envelope]) == [None]
    assert await _traceparents(runtime) == [INCOMING_TRACE]


async def test_with_an_exporter_each_event_consumed_is_a_span_its_events_continue(
    batching: tuple[ServiceRuntime, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, _ = batching
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    envelope = Envelope.wrap(
        ThingHappened(name="traced"), source="elsewhere", traceparent=INCOMING_TRACE
    )
    assert await _batch_consumer(runtime)([envelope]) == [None]
    (span,) = exporter.get_finished_spans()
    assert (span.name, span.kind) == ("consume test.thing_happened", SpanKind.CONSUMER)
    (passed_on,) = await _traceparents(runtime)
    assert passed_on == f"00-{INCOMING_TRACE.split('-')[1]}-{span.context.span_id:016x}-01"
    provider.shutdown()
