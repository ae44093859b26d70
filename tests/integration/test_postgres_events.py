"""The outbox, the relay and the inbox on PostgreSQL, with the users service's real tables.

What SQLite cannot show: row locks let replicas share one outbox (``SKIP LOCKED``),
and the inbox's primary key makes a duplicate delivery that races the first one
wait for it, then lose.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, func, inspect, select, text, update

from panthera.kernel.db import Database, UnitOfWork
from panthera.kernel.events.envelope import Envelope
from panthera.kernel.events.outbox import OutboxRelay, outbox_writer, record_in_inbox
from panthera.kernel.events.outbox import outbox_rows as rows_of_envelopes
from panthera.kernel.migrations import upgrade
from panthera.kernel.service import ServiceDefinition, ServiceRuntime, Subscription
from panthera.kernel.settings import Settings
from panthera.kernel.sql import DirectTransaction, SessionSql
from panthera.runtime.registry import definition
from panthera.users.events import UserRegistered, UserUpdated
from panthera.users.models import User
from tests.integration.conftest import RoundTrips, ServiceDatabases

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

USERS = definition("users")
OUTBOX = USERS.tables.outbox
INBOX = USERS.tables.inbox


class RecordingTransport:
    """Takes every envelope and remembers it; ``delay`` widens race windows."""

    def __init__(self, delay: float = 0.0, fail: Callable[[Envelope], bool] | None = None) -> None:
        self.delay = delay
        self.fail = fail or (lambda _envelope: False)
        self.published: list[Envelope] = []
        self.attempts = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ready(self) -> bool:
        return True

    async def subscribe(self, consumer: str, event_types: Iterable[str], handler: Any) -> None:
        return None

    async def publish(self, envelope: Envelope) -> None:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail(envelope):
            raise ConnectionError("the broker is down")
        self.published.append(envelope)


class StuckTransport(RecordingTransport):
    """Never answers a publish: ``publishing`` is set once one is under way."""

    def __init__(self) -> None:
        super().__init__()
        self.publishing = asyncio.Event()

    async def publish(self, envelope: Envelope) -> None:
        self.publishing.set()
        await asyncio.Event().wait()


@pytest.fixture
async def users_db(
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
) -> AsyncIterator[Database]:
    """The users service's own, migrated database on PostgreSQL."""
    databases = await service_databases("users")
    database = Database(databases.url_for("users"))
    try:
        await upgrade(database, USERS.migrations_dir, "users")
        yield database
    finally:
        await database.dispose()


def runtime_for(
    database: Database,
    transport: RecordingTransport | None = None,
    service: ServiceDefinition = USERS,
    **settings_values: Any,
) -> ServiceRuntime:
    settings = Settings(environment="test", database_url=database.url, **settings_values)
    return ServiceRuntime(
        definition=service,
        settings=settings,
        database=database,
        transport=transport or RecordingTransport(),
    )


def relay_for(database: Database, transport: RecordingTransport, **kwargs: Any) -> OutboxRelay:
    def transaction() -> DirectTransaction:
        return DirectTransaction(
            database.direct_connections(),
            database.statements,
            source="users",
            outbox_insert=USERS.tables.outbox_insert,
            outbox_rows=rows_of_envelopes,
        )

    return OutboxRelay(
        source="users",
        sessions=database.sessions,
        tables=USERS.tables,
        transport=transport,
        skip_locked=True,
        transactions=transaction,
        reads=database.reads,
        **kwargs,
    )


def new_user(email: str | None = None) -> User:
    now = datetime.now(UTC)
    return User(
        id=uuid.uuid4(),
        email=email or f"{uuid.uuid4().hex[:12]}@example.com",
        first_name="Ada",
        last_name="Lovelace",
        phone_number=None,
        roles=["USER"],
        email_verified=False,
        revision=1,
        created_at=now,
        updated_at=now,
    )


def registered(user: User) -> UserRegistered:
    return UserRegistered(
        user_id=user.id,
        email=user.email,
        first_name=user.first_name,
        last_name=user.last_name,
        roles=list(user.roles),
        email_verified=False,
        registered_at=user.created_at,
    )


async def register_users(
    database: Database, count: int, *, per_transaction: int = 50
) -> list[User]:
    """``count`` users, each with a ``user.registered`` event, committed in a few UoWs."""
    runtime = runtime_for(database)
    users: list[User] = []
    for start in range(0, count, per_transaction):
        async with runtime.uow() as uow:
            for _ in range(min(per_transaction, count - start)):
                user = new_user()
                uow.session.add(user)
                uow.publish(registered(user))
                users.append(user)
            await uow.commit()
    return users


async def outbox_rows(database: Database) -> list[Any]:
    async with database.sessions() as session:
        return list((await session.execute(select(OUTBOX).order_by(OUTBOX.c.seq))).all())


async def count(database: Database, table: Any) -> int:
    async with database.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def test_migrations_apply_on_postgresql(users_db: Database) -> None:
    async with users_db.engine.connect() as conn:
        tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        version = (await conn.execute(text("SELECT version_num FROM alembic_version_users"))).all()
        seq_type = (
            await conn.execute(
                text(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = 'outbox' AND column_name = 'seq'"
                )
            )
        ).scalar_one()
    assert {"users", "account_tokens", "outbox", "inbox", "alembic_version_users"} <= tables
    assert len(version) == 1
    # PostgreSQL gets the 64-bit sequence SQLite cannot have.
    assert seq_type == "bigint"
    # Upgrading a database at head is a no-op, as every restart of a service does.
    await upgrade(users_db, USERS.migrations_dir, "users")
    async with users_db.engine.connect() as conn:
        again = (await conn.execute(text("SELECT version_num FROM alembic_version_users"))).all()
    assert again == version


async def test_replicas_starting_together_migrate_once(
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
) -> None:
    """Every replica upgrades on start; on a fresh database they must not race."""
    databases = await service_databases("users")
    replicas = [Database(databases.url_for("users")) for _ in range(3)]
    try:
        async with asyncio.timeout(30):
            results = await asyncio.gather(
                *(upgrade(db, USERS.migrations_dir, "users") for db in replicas),
                return_exceptions=True,
            )
        assert [r for r in results if r is not None] == []
        async with replicas[0].engine.connect() as conn:
            versions = (
                await conn.execute(text("SELECT version_num FROM alembic_version_users"))
            ).all()
        assert len(versions) == 1
    finally:
        for db in replicas:
            await db.dispose()


async def test_a_commit_writes_state_and_outbox_together(users_db: Database) -> None:
    runtime = runtime_for(users_db)
    user = new_user()
    async with runtime.uow() as uow:
        uow.session.add(user)
        envelope = uow.publish(registered(user))
        await uow.commit()

    rows = await outbox_rows(users_db)
    assert [row.event_id for row in rows] == [envelope.id]
    row = rows[0]
    assert row.type == "user.registered"
    assert row.subject == str(user.id)
    assert row.payload["email"] == user.email
    assert row.dead_at is None
    assert row.attempts == 0
    async with users_db.sessions() as session:
        assert await session.get(User, user.id) is not None


async def test_a_rolled_back_unit_of_work_writes_no_event(users_db: Database) -> None:
    runtime = runtime_for(users_db)

    # Rolled back explicitly.
    async with runtime.uow() as uow:
        user = new_user()
        uow.session.add(user)
        uow.publish(registered(user))
        await uow.session.flush()
        await uow.rollback()

    # Left without a commit because the use case failed.
    async def failing_use_case() -> None:
        async with runtime.uow() as uow:
            user = new_user()
            uow.session.add(user)
            uow.publish(registered(user))
            await uow.session.flush()
            raise RuntimeError("use case failed")

    with pytest.raises(RuntimeError, match="use case failed"):
        await failing_use_case()

    assert await count(users_db, OUTBOX) == 0
    assert await count(users_db, User.__table__) == 0


async def test_state_is_not_committed_when_its_events_cannot_be_written(
    users_db: Database,
) -> None:
    write = outbox_writer(USERS.tables)

    async def write_then_fail(session: Any, envelopes: list[Envelope]) -> None:
        await write(session, envelopes)
        raise RuntimeError("outbox write failed")

    user = new_user()
    uow = UnitOfWork(users_db, source="users", outbox_insert=write_then_fail)
    async with uow:
        uow.session.add(user)
        uow.publish(registered(user))
        with pytest.raises(RuntimeError, match="outbox write failed"):
            await uow.commit()

    async with users_db.sessions() as session:
        assert await session.get(User, user.id) is None
    assert await count(users_db, OUTBOX) == 0


async def drain(relay: OutboxRelay, database: Database, *, timeout: float = 30.0) -> None:
    """Run one relay until the outbox has nothing pending (the other replica may hold rows)."""
    async with asyncio.timeout(timeout):
        while True:
            if await relay.relay_once():
                continue
            pending, _age = await relay.lag()
            if pending == 0:
                return
            await asyncio.sleep(0.005)


async def test_two_relay_replicas_deliver_every_row_exactly_once(users_db: Database) -> None:
    users = await register_users(users_db, 400)
    written = {row.event_id for row in await outbox_rows(users_db)}
    # A second replica of the service: its own engine and pool on the same database.
    replica = Database(users_db.url)
    try:
        transport = RecordingTransport(delay=0.001)
        first = relay_for(users_db, transport, batch_size=20)
        second = relay_for(replica, transport, batch_size=20)
        await asyncio.gather(drain(first, users_db), drain(second, replica))
    finally:
        await replica.dispose()

    published = Counter(envelope.id for envelope in transport.published)
    twice = [event_id for event_id, n in published.items() if n > 1]
    assert not twice, f"{len(twice)} events were published more than once"
    assert len(written) == len(users)
    assert set(published) == written
    # Each row deleted as its event was taken: none left, none sent twice.
    assert await outbox_rows(users_db) == []
    assert first.delivered + second.delivered == len(written)
    # Both replicas took part: the rows were shared out, not serialised behind one.
    assert first.delivered > 0
    assert second.delivered > 0


async def test_a_failing_transport_leaves_rows_pending_with_backoff(users_db: Database) -> None:
    await register_users(users_db, 3)
    before = datetime.now(UTC)
    down = RecordingTransport(fail=lambda _envelope: True)
    relay = relay_for(users_db, down)
    assert await relay.relay_once() is False

    rows = await outbox_rows(users_db)
    assert len(rows) == 3
    assert down.attempts == 3
    for row in rows:
        assert row.dead_at is None
        assert row.attempts == 1
        assert "the broker is down" in row.last_error
        # Backed off: not due again straight away.
        assert row.next_attempt_at > before + timedelta(seconds=0.5)

    # Not due yet, so a second pass does not touch the transport.
    await relay.relay_once()
    assert down.attempts == 3
    assert all(row.attempts == 1 for row in await outbox_rows(users_db))

    # Once due, a working transport delivers them, each once.
    async with users_db.sessions() as session:
        await session.execute(update(OUTBOX).values(next_attempt_at=datetime.now(UTC)))
        await session.commit()
    up = RecordingTransport()
    await relay_for(users_db, up).relay_once()
    assert sorted(e.id for e in up.published) == sorted(row.event_id for row in rows)
    assert await outbox_rows(users_db) == []


async def test_one_failing_event_does_not_hold_back_the_others(users_db: Database) -> None:
    await register_users(users_db, 5)
    rows = await outbox_rows(users_db)
    poisoned = rows[2].event_id
    transport = RecordingTransport(fail=lambda envelope: envelope.id == poisoned)
    await relay_for(users_db, transport).relay_once()

    assert {e.id for e in transport.published} == {row.event_id for row in rows} - {poisoned}
    # Only the refused row is left, set back for another try.
    (left,) = await outbox_rows(users_db)
    assert left.event_id == poisoned
    assert left.attempts == 1
    assert left.dead_at is None


async def test_an_event_that_keeps_failing_is_parked_as_dead(users_db: Database) -> None:
    await register_users(users_db, 1)
    relay = relay_for(users_db, RecordingTransport(fail=lambda _e: True), max_attempts=1)
    await relay.relay_once()
    (row,) = await outbox_rows(users_db)
    assert row.dead_at is not None
    assert row.attempts == 1
    pending, _age = await relay.lag()
    assert pending == 0


def user_updated(user_id: uuid.UUID, first_name: str = "Grace") -> Envelope:
    return Envelope.wrap(
        UserUpdated(
            user_id=user_id,
            revision=2,
            email="ada@example.com",
            first_name=first_name,
            last_name="Lovelace",
            phone_number=None,
            roles=["USER"],
            email_verified=False,
            changed=["first_name"],
            updated_at=datetime.now(UTC),
        ),
        source="tests",
    )


async def test_a_concurrent_duplicate_delivery_is_applied_once(users_db: Database) -> None:
    """Two replicas of a consumer get the same envelope at once: the inbox lets one apply it."""
    (user,) = await register_users(users_db, 1)
    applied: list[uuid.UUID] = []

    async def rename(runtime: ServiceRuntime, uow: UnitOfWork, event: Any, e: Envelope) -> None:
        target = await uow.session.get(User, event.user_id, with_for_update=True)
        assert target is not None
        target.first_name = event.first_name
        target.revision += 1
        applied.append(e.id)
        # Hold the transaction open so the duplicate really overlaps it.
        await asyncio.sleep(0.3)

    consumer = dataclasses.replace(USERS, subscriptions=(Subscription(UserUpdated, rename),))
    envelope = user_updated(user.id)
    replica = Database(users_db.url)
    try:
        handlers = [
            runtime_for(database, service=consumer)._consumer({UserUpdated.event_type: sub})
            for database in (users_db, replica)
            for sub in consumer.subscriptions
        ]
        await asyncio.gather(*(handle(envelope) for handle in handlers))
    finally:
        await replica.dispose()

    assert applied == [envelope.id]
    async with users_db.sessions() as session:
        stored = await session.get(User, user.id)
        inbox = (await session.execute(select(INBOX))).all()
    assert stored is not None
    assert stored.first_name == "Grace"
    assert stored.revision == 2
    assert [(row.consumer, row.event_id) for row in inbox] == [("users", envelope.id)]

    # A redelivery after the fact is recognised as well.
    await handlers[0](envelope)
    assert applied == [envelope.id]


async def test_record_in_inbox_lets_one_of_two_racing_transactions_claim(
    users_db: Database,
) -> None:
    envelope = Envelope(type="user.deleted", source="tests", payload={})
    replica = Database(users_db.url)
    first_claimed = asyncio.Event()

    async def claim(database: Database, *, wait_first: bool) -> bool:
        async with database.sessions() as session:
            if wait_first:
                await first_claimed.wait()
            claimed = await record_in_inbox(SessionSql(session), USERS.tables, "auth", envelope)
            if not wait_first:
                first_claimed.set()
                # The loser is now blocked on our uncommitted row.
                await asyncio.sleep(0.3)
            await session.commit()
            return claimed

    try:
        results = await asyncio.gather(
            claim(users_db, wait_first=False), claim(replica, wait_first=True)
        )
    finally:
        await replica.dispose()
    assert results == [True, False]
    assert await count(users_db, INBOX) == 1


async def test_a_claim_rolled_back_leaves_the_event_to_the_one_waiting(
    users_db: Database,
) -> None:
    envelope = Envelope(type="user.deleted", source="tests", payload={})
    replica = Database(users_db.url)
    first_claimed = asyncio.Event()

    async def first() -> bool:
        async with users_db.sessions() as session:
            claimed = await record_in_inbox(SessionSql(session), USERS.tables, "auth", envelope)
            first_claimed.set()
            await asyncio.sleep(0.3)  # the other claim is now waiting on this row
            await session.rollback()
            return claimed

    async def second() -> bool:
        async with replica.sessions() as session:
            await first_claimed.wait()
            claimed = await record_in_inbox(SessionSql(session), USERS.tables, "auth", envelope)
            await session.commit()
            return claimed

    try:
        results = await asyncio.gather(first(), second())
    finally:
        await replica.dispose()
    assert results == [True, True]
    assert await count(users_db, INBOX) == 1


async def test_an_event_consumed_on_its_own_costs_begin_claim_and_commit(
    users_db: Database, round_trips: RoundTrips
) -> None:
    async def nothing(runtime: ServiceRuntime, uow: UnitOfWork, event: Any, e: Envelope) -> None:
        return None

    sub = Subscription(UserUpdated, nothing)
    consume = runtime_for(users_db, service=dataclasses.replace(USERS, subscriptions=(sub,)))
    handle = consume._consumer({UserUpdated.event_type: sub})

    await handle(user_updated(uuid.uuid4()))  # prepares the claim on the pooled connection
    envelope = user_updated(uuid.uuid4())
    round_trips.clear()
    await handle(envelope)
    assert round_trips.verbs() == ["BEGIN", "INSERT", "COMMIT"]
    round_trips.clear()
    await handle(envelope)  # a redelivery: claimed before, skipped
    assert round_trips.verbs() == ["BEGIN", "INSERT", "ROLLBACK"]
    assert await count(users_db, INBOX) == 2


_RENAME_IF_UNCHANGED = (
    update(User)
    .where(User.id == bindparam("user_id"), User.revision == bindparam("was"))
    .values(first_name=bindparam("first_name"), revision=bindparam("was") + 1)
)
_LOCK_USER = select(User.revision).where(User.id == bindparam("user_id")).with_for_update()


def consumer_on_sql(database: Database, handler: Any) -> Callable[[Envelope], Awaitable[None]]:
    """The consumer of ``user.updated`` with ``handler``, run on the driver's transactions."""
    sub = Subscription(UserUpdated, handler)
    service = dataclasses.replace(USERS, subscriptions=(sub,), handlers_on_sql=True)
    return runtime_for(database, service=service)._consumer({UserUpdated.event_type: sub})


async def test_an_event_applied_by_one_statement_is_claimed_inside_it(
    users_db: Database, round_trips: RoundTrips
) -> None:
    """A handler whose whole work is ``commit_with`` writes the event's inbox row in that
    statement: one round trip; a redelivery fails on the inbox's key and writes nothing."""
    users = await register_users(users_db, 2)
    committed: list[uuid.UUID] = []

    async def rename(runtime: ServiceRuntime, tx: Any, event: Any, e: Envelope) -> None:
        tx.on_commit(lambda: committed.append(e.id))
        written = await tx.commit_with(
            _RENAME_IF_UNCHANGED,
            {"user_id": event.user_id, "was": 1, "first_name": event.first_name},
        )
        assert written == 1

    handle = consumer_on_sql(users_db, rename)
    await handle(user_updated(users[0].id))  # prepares the statement on the pooled connection
    envelope = user_updated(users[1].id, first_name="Hedy")
    round_trips.clear()
    await handle(envelope)
    assert round_trips.verbs() == ["WITH"]
    assert committed[-1] == envelope.id

    async with users_db.sessions() as session:
        await session.execute(update(User).where(User.id == users[1].id).values(revision=1))
        await session.commit()
    round_trips.clear()
    await handle(envelope)  # a redelivery: the same write would hold, the inbox refuses it
    assert round_trips.verbs() == ["WITH"]
    assert committed.count(envelope.id) == 1
    async with users_db.sessions() as session:
        stored = await session.get(User, users[1].id)
        claims = (await session.execute(select(INBOX.c.event_id))).scalars().all()
    assert stored is not None
    assert stored.revision == 1
    assert sorted(claims) == sorted([committed[0], envelope.id])


async def test_an_event_applied_by_one_statement_publishes_its_own_events_in_it(
    users_db: Database, round_trips: RoundTrips
) -> None:
    """The inbox row and the events the handler published ride in the same statement."""
    users = await register_users(users_db, 2)
    before = await count(users_db, OUTBOX)

    async def rename(runtime: ServiceRuntime, tx: Any, event: Any, e: Envelope) -> None:
        user = new_user()
        tx.publish(registered(user))
        tx.publish(registered(new_user()))
        values = {"user_id": event.user_id, "was": 1, "first_name": event.first_name}
        assert await tx.commit_with(_RENAME_IF_UNCHANGED, values) == 1

    handle = consumer_on_sql(users_db, rename)
    await handle(user_updated(users[0].id))
    envelope = user_updated(users[1].id)
    round_trips.clear()
    await handle(envelope)
    assert round_trips.verbs() == ["WITH"]
    assert await count(users_db, OUTBOX) == before + 4
    assert await count(users_db, INBOX) == 2
    # A redelivery writes neither the change, nor the claim, nor the events.
    async with users_db.sessions() as session:
        await session.execute(update(User).where(User.id == users[1].id).values(revision=1))
        await session.commit()
    await handle(envelope)
    assert await count(users_db, OUTBOX) == before + 4
    assert await count(users_db, INBOX) == 2


async def test_a_statement_that_writes_nothing_leaves_the_claim_to_the_locked_way(
    users_db: Database, round_trips: RoundTrips
) -> None:
    """``commit_with`` wrote nothing (the row had moved on): no inbox row either; the
    handler's next statement begins a transaction that claims the event first."""
    users = await register_users(users_db, 2)

    async def rename(runtime: ServiceRuntime, tx: Any, event: Any, e: Envelope) -> None:
        values = {"user_id": event.user_id, "was": 7, "first_name": event.first_name}
        if await tx.commit_with(_RENAME_IF_UNCHANGED, values):
            return
        values["was"] = await tx.sql.fetch_value(_LOCK_USER, {"user_id": event.user_id})
        await tx.sql.execute(_RENAME_IF_UNCHANGED, values)

    handle = consumer_on_sql(users_db, rename)
    await handle(user_updated(users[0].id))
    envelope = user_updated(users[1].id)
    round_trips.clear()
    await handle(envelope)
    assert round_trips.verbs() == ["WITH", "BEGIN", "INSERT", "SELECT", "UPDATE", "COMMIT"]
    round_trips.clear()
    await handle(envelope)  # claimed before: the transaction stops at its claim
    assert round_trips.verbs() == ["WITH", "BEGIN", "INSERT", "ROLLBACK"]
    async with users_db.sessions() as session:
        stored = await session.get(User, users[1].id)
        claims = (await session.execute(select(INBOX.c.event_id))).scalars().all()
    assert stored is not None
    assert (stored.first_name, stored.revision) == ("Grace", 2)
    assert envelope.id in claims
    assert len(claims) == 2


async def test_an_event_that_writes_nothing_is_claimed_alone(
    users_db: Database, round_trips: RoundTrips
) -> None:
    seen: list[uuid.UUID] = []

    async def look(runtime: ServiceRuntime, tx: Any, event: Any, e: Envelope) -> None:
        seen.append(e.id)

    handle = consumer_on_sql(users_db, look)
    await handle(user_updated(uuid.uuid4()))
    envelope = user_updated(uuid.uuid4())
    round_trips.clear()
    await handle(envelope)
    assert round_trips.verbs() == ["INSERT"]
    await handle(envelope)
    assert await count(users_db, INBOX) == 2


async def test_a_rollback_gives_the_event_back_to_the_next_transaction(
    users_db: Database,
) -> None:
    """A handler that rolls its transaction back and writes again claims the event again:
    the claim went with the rollback."""
    (user,) = await register_users(users_db, 1)

    async def twice(runtime: ServiceRuntime, tx: Any, event: Any, e: Envelope) -> None:
        values = {"user_id": event.user_id, "was": 1, "first_name": "Wrong"}
        await tx.sql.execute(_RENAME_IF_UNCHANGED, values)
        await tx.rollback()
        await tx.sql.execute(_RENAME_IF_UNCHANGED, values | {"first_name": event.first_name})

    handle = consumer_on_sql(users_db, twice)
    envelope = user_updated(user.id)
    await handle(envelope)
    await handle(envelope)
    async with users_db.sessions() as session:
        stored = await session.get(User, user.id)
        claims = (await session.execute(select(INBOX.c.event_id))).scalars().all()
    assert stored is not None
    assert (stored.first_name, stored.revision) == ("Grace", 2)
    assert claims == [envelope.id]


async def test_a_relay_pass_costs_begin_claim_delete_and_commit(
    users_db: Database, round_trips: RoundTrips
) -> None:
    transport = RecordingTransport()
    relay = relay_for(users_db, transport)
    await register_users(users_db, 1)
    await relay.relay_once()  # prepares the claim on the pooled connection
    await register_users(users_db, 30, per_transaction=30)
    rows = await outbox_rows(users_db)
    round_trips.clear()
    assert await relay.relay_once() is False
    # Rows are locked by one statement and deleted by another once published.
    assert round_trips.verbs() == ["BEGIN", "SELECT", "DELETE", "COMMIT"]
    # After the first pass's one event, the thirty in the order written.
    assert [e.id for e in transport.published[1:]] == [row.event_id for row in rows]
    assert await outbox_rows(users_db) == []


async def test_a_relay_stopped_while_publishing_leaves_its_rows_pending(
    users_db: Database,
) -> None:
    await register_users(users_db, 3)
    stuck = StuckTransport()
    relay = relay_for(users_db, stuck)
    relay.start()
    await asyncio.wait_for(stuck.publishing.wait(), timeout=5)
    await relay.stop()
    rows = await outbox_rows(users_db)
    # The rows' claim is rolled back with the transaction: the next pass sends them.
    assert len(rows) == 3
    assert all(row.dead_at is None and row.attempts == 0 for row in rows)
    transport = RecordingTransport()
    await relay_for(users_db, transport).relay_once()
    assert [e.id for e in transport.published] == [row.event_id for row in rows]


async def test_an_idle_poll_reads_once_outside_a_transaction(
    users_db: Database, round_trips: RoundTrips
) -> None:
    transport = RecordingTransport()
    relay = relay_for(users_db, transport, read_sessions=users_db.read_sessions)
    await relay._poll_once()  # prepares the statements on the pooled connection
    round_trips.clear()
    assert await relay._poll_once() is False
    assert round_trips.verbs() == ["SELECT"]
    await register_users(users_db, 2)
    round_trips.clear()
    assert await relay._poll_once() is False
    assert round_trips.verbs() == ["SELECT", "BEGIN", "SELECT", "DELETE", "COMMIT"]
    assert len(transport.published) == 2


async def test_a_running_relay_polls_for_rows_nobody_told_it_about(users_db: Database) -> None:
    transport = RecordingTransport()
    relay = relay_for(users_db, transport, read_sessions=users_db.read_sessions, poll_seconds=0.05)
    relay.start()
    try:
        await asyncio.sleep(0.2)  # a few idle polls
        await register_users(users_db, 3)  # committed elsewhere: no notify
        for _ in range(100):
            if len(transport.published) == 3:
                break
            await asyncio.sleep(0.02)
    finally:
        await relay.stop()
    assert len(transport.published) == 3


async def register_with(runtime: ServiceRuntime, count: int) -> None:
    """``count`` users registered in one unit of work of ``runtime`` (its relay is told)."""
    async with runtime.uow() as uow:
        for _ in range(count):
            user = new_user()
            uow.session.add(user)
            uow.publish(registered(user))
        await uow.commit()


async def _published(transport: RecordingTransport, count: int) -> None:
    for _ in range(250):
        if len(transport.published) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(transport.published)} of {count} events published")


async def _all_deleted(database: Database) -> None:
    for _ in range(250):
        if not await outbox_rows(database):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("rows of sent events left in the outbox")


async def test_a_commit_hands_its_events_off_to_be_sent_without_reading_the_outbox(
    users_db: Database, round_trips: RoundTrips
) -> None:
    # A slow broker: the commit is over before the hand-off publishes.
    transport = RecordingTransport(delay=0.05)
    # The poll would take minutes: whatever is sent here, the hand-off sent.
    runtime = runtime_for(users_db, transport, relay_poll_seconds=600.0, relay_hand_off_seconds=5.0)
    runtime.relay.start()
    try:
        await asyncio.sleep(0.05)  # the relay's first pass, at its start, finds nothing
        round_trips.clear()
        committed_at = datetime.now(UTC)
        await register_with(runtime, 3)
        # Read while the broker is still at it (the test's own read, not the relay's).
        rows = await outbox_rows(users_db)
        for _ in range(250):
            if runtime.relay.delivered == 3:  # counted once deleted
                break
            await asyncio.sleep(0.02)
        outbox_statements = [sql.split()[0] for sql in round_trips.sent if "outbox" in sql]
        await _all_deleted(users_db)
    finally:
        await runtime.relay.stop()
    assert [e.id for e in transport.published] == [row.event_id for row in rows]
    # Due for the poll only after the hand-off's grace.
    assert all(row.next_attempt_at >= committed_at + timedelta(seconds=4) for row in rows)
    # Written by the commit, deleted once confirmed; never read or claimed by the relay
    # (the SELECT is the test's own read above).
    assert outbox_statements == ["INSERT", "SELECT", "DELETE"]


async def test_events_the_hand_off_could_not_send_are_sent_by_the_poll(
    users_db: Database,
) -> None:
    refused: set[uuid.UUID] = set()

    def first_try_fails(envelope: Envelope) -> bool:
        if envelope.id in refused:
            return False
        refused.add(envelope.id)
        return True

    transport = RecordingTransport(fail=first_try_fails)
    runtime = runtime_for(users_db, transport, relay_poll_seconds=0.05, relay_hand_off_seconds=0.3)
    runtime.relay.start()
    try:
        await register_with(runtime, 1)
        rows = await outbox_rows(users_db)
        await asyncio.sleep(0.15)
        # Refused by the broker, and not yet due for the poll.
        assert transport.published == []
        assert transport.attempts == 1
        await _published(transport, 1)
        await _all_deleted(users_db)
    finally:
        await runtime.relay.stop()
    assert [e.id for e in transport.published] == [row.event_id for row in rows]
    assert transport.attempts == 2


async def test_the_hand_off_and_the_poll_send_each_event_once(users_db: Database) -> None:
    transport = RecordingTransport()
    runtime = runtime_for(users_db, transport, relay_poll_seconds=0.02, relay_hand_off_seconds=5.0)
    runtime.relay.start()
    try:
        for _ in range(10):
            await register_with(runtime, 2)
        await register_users(users_db, 5)  # committed elsewhere: for the poll
        await _published(transport, 25)
        await _all_deleted(users_db)
        await asyncio.sleep(0.2)  # a few more polls
    finally:
        await runtime.relay.stop()
    sent = Counter(e.id for e in transport.published)
    assert len(sent) == 25
    assert set(sent.values()) == {1}


async def test_events_handed_off_to_a_relay_that_stops_are_left_to_the_poll(
    users_db: Database,
) -> None:
    stuck = StuckTransport()
    runtime = runtime_for(users_db, stuck, relay_poll_seconds=600.0, relay_hand_off_seconds=0.2)
    runtime.relay.start()
    await register_with(runtime, 1)
    await asyncio.wait_for(stuck.publishing.wait(), timeout=5)
    await runtime.relay.stop()
    rows = await outbox_rows(users_db)
    assert [(row.dead_at, row.attempts) for row in rows] == [(None, 0)]
    await asyncio.sleep(0.25)
    transport = RecordingTransport()
    await relay_for(users_db, transport).relay_once()
    assert [e.id for e in transport.published] == [row.event_id for row in rows]
