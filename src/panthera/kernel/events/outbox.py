"""The outbox and inbox tables every service carries, the relay and the idempotent consumer."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.db import UTCDateTime
from panthera.kernel.events.envelope import Envelope
from panthera.kernel.events.transport import EventTransport
from panthera.kernel.sql import InboxClaim, SessionSql, Sql, Transaction, among, json_column

log = logging.getLogger("panthera.events")

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT.
_Sequence = BigInteger().with_variant(Integer(), "sqlite")


@dataclass(frozen=True)
class EventTables:
    """The outbox and inbox of one service's database."""

    outbox: Table
    inbox: Table

    @functools.cached_property
    def outbox_insert(self) -> Insert:
        """The statement that writes outbox rows (``outbox_rows``)."""
        return insert(self.outbox)


def event_tables(metadata: MetaData) -> EventTables:
    """Add the outbox and inbox tables to a service's metadata."""
    outbox = Table(
        "outbox",
        metadata,
        Column("seq", _Sequence, primary_key=True, autoincrement=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("type", String(120), nullable=False),
        Column("version", Integer, nullable=False),
        Column("subject", String(120), nullable=False, default=""),
        Column("payload", JSON, nullable=False),
        Column("traceparent", String(64)),
        Column("occurred_at", UTCDateTime, nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", UTCDateTime, nullable=False),
        Column("last_error", Text),
        # Set on a row parked after ``max_attempts``: it stays for an operator. Every
        # other row leaves the table once the broker has confirmed its event.
        Column("dead_at", UTCDateTime),
    )
    Index("ix_outbox_pending", outbox.c.dead_at, outbox.c.next_attempt_at)
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(80), primary_key=True),
        Column("event_id", Uuid, primary_key=True),
        Column("event_type", String(120), nullable=False),
        Column("applied_at", UTCDateTime, nullable=False),
    )
    # For the purge of rows past their retention. PostgreSQL: a BRIN index, a few
    # pages for the whole table, since rows are written in the order they are applied.
    Index("ix_inbox_applied_at", inbox.c.applied_at, postgresql_using="brin")
    return EventTables(outbox=outbox, inbox=inbox)


def outbox_rows(envelopes: list[Envelope], *, due_in: float = 0.0) -> list[dict[str, Any]]:
    """The outbox rows of ``envelopes``, due to be sent by the relay's poll in ``due_in``
    seconds (now by default)."""
    now = datetime.now(UTC)
    due = now + timedelta(seconds=due_in) if due_in else now
    return [
        {
            "event_id": e.id,
            "type": e.type,
            "version": e.version,
            "subject": e.subject,
            "payload": e.payload,
            "traceparent": e.traceparent,
            "occurred_at": e.occurred_at,
            "attempts": 0,
            "next_attempt_at": due,
        }
        for e in envelopes
    ]


def outbox_writer(
    tables: EventTables,
    rows: Callable[[list[Envelope]], list[dict[str, Any]]] = outbox_rows,
) -> Callable[[AsyncSession, list[Envelope]], Awaitable[None]]:
    """The function a unit of work calls to write its events in its own transaction;
    ``rows``: their outbox rows (``OutboxRelay.rows_of``)."""

    # Built once, and run on the session's connection: every commit that
    # publishes runs it, and the ORM layer adds nothing to a Core INSERT.
    statement = tables.outbox_insert

    async def write(session: AsyncSession, envelopes: list[Envelope]) -> None:
        await (await session.connection()).execute(statement, rows(envelopes))

    return write


def envelope_of(row: Any, source: str) -> Envelope:
    payload = json_column(row.payload)
    return Envelope(
        id=row.event_id,
        type=row.type,
        version=row.version,
        occurred_at=row.occurred_at,
        source=source,
        subject=row.subject,
        traceparent=row.traceparent,
        payload=payload,
    )


# How often the rows of handed-off events the broker confirmed are deleted.
DELETE_EVERY = 0.05


class OutboxRelay:
    """Delivers a service's outbox rows to the transport, at least once.

    A row is deleted once the transport has taken its event, never before: the table
    holds only what is still to be sent, and what was parked. A failing row backs off
    on its own (consumers tolerate reordering: they check versions), and after
    ``max_attempts`` it is parked as dead for an operator to inspect.

    With ``hand_off_seconds``, a transaction of this process gives the relay the
    events it wrote as it commits (``committed``): they are published from memory at
    once and their rows deleted after the broker's confirm, with no read of the
    outbox. Their rows are written due only that many seconds later, so the poll
    does not send them too; it takes over whatever the hand-off did not get out (a
    process that died, a broker that refused) once they fall due.
    """

    def __init__(
        self,
        *,
        source: str,
        sessions: Callable[[], AsyncSession],
        read_sessions: Callable[[], AsyncSession] | None = None,
        tables: EventTables,
        transport: EventTransport,
        skip_locked: bool,
        poll_seconds: float = 1.0,
        batch_size: int = 100,
        max_attempts: int = 12,
        transactions: Callable[[], Transaction] | None = None,
        reads: Callable[[], AbstractAsyncContextManager[Sql]] | None = None,
        hand_off_seconds: float | None = None,
    ) -> None:
        self.source = source
        self._sessions = sessions
        self._read_sessions = read_sessions or sessions
        # PostgreSQL (skip_locked): the claim and the deletes run in these transactions,
        # and the idle poll in these reads, on the driver (kernel/sql.py).
        if skip_locked and (transactions is None or reads is None):
            raise ValueError("a relay that skips locked rows needs its transactions and reads")
        self._transactions = transactions
        self._reads = reads
        self._outbox = tables.outbox
        outbox = tables.outbox
        # Built once and run on the session's connection: every event of every
        # service passes through these, and the ORM layer adds nothing to them.
        due = (outbox.c.dead_at.is_(None), outbox.c.next_attempt_at <= bindparam("now"))
        self._due = select(outbox).where(*due).order_by(outbox.c.seq).limit(batch_size)
        # Replicas of one service share the outbox: the row locks, held while
        # publishing, give each row to exactly one relay; the rows the transport took
        # are deleted and a row it refused is set back (``_record``) before the commit.
        self._claim = self._due.with_for_update(skip_locked=True)
        # Each by dialect (True: PostgreSQL).
        self._delete_sent = {
            pg: delete(outbox).where(among(outbox.c.seq, "seqs", pg)) for pg in (True, False)
        }
        # Handed-off events, by id; a row the poll took over meanwhile is its to delete,
        # and a parked one stays.
        self._delete_handed = {
            pg: delete(outbox).where(
                among(outbox.c.event_id, "ids", pg), outbox.c.dead_at.is_(None)
            )
            for pg in (True, False)
        }
        # A row the transport refused: its next try set (or, past the attempts, parked
        # dead).
        self._set_back = (
            update(outbox)
            .where(outbox.c.seq == bindparam("row_seq"))
            .values(
                attempts=bindparam("new_attempts"),
                last_error=bindparam("new_last_error"),
                dead_at=bindparam("new_dead_at", type_=outbox.c.dead_at.type),
                next_attempt_at=func.coalesce(
                    bindparam("new_next_attempt_at", type_=outbox.c.next_attempt_at.type),
                    outbox.c.next_attempt_at,
                ),
            )
        )
        self._any_due = self._due.with_only_columns(outbox.c.seq).limit(1)
        self._transport = transport
        self._skip_locked = skip_locked
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.delivered = 0
        self._hand_off_seconds = hand_off_seconds
        self._handed: list[Envelope] = []
        self._handed_ready = asyncio.Event()
        self._hand_off_task: asyncio.Task[None] | None = None
        # Handed-off events the broker confirmed, their rows not yet deleted.
        self._confirmed: list[uuid.UUID] = []
        self._confirmed_ready = asyncio.Event()
        self._deleter_task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """Deliver due rows now rather than at the next poll."""
        self._wakeup.set()

    def rows_of(self, envelopes: list[Envelope]) -> list[dict[str, Any]]:
        """The outbox rows a transaction writes for ``envelopes``."""
        if self._hand_off_seconds is None or self._hand_off_task is None:
            return outbox_rows(envelopes)
        return outbox_rows(envelopes, due_in=self._hand_off_seconds)

    def committed(self, envelopes: list[Envelope]) -> None:
        """A transaction of this process committed ``envelopes`` (as ``rows_of`` wrote them)."""
        if self._hand_off_task is None:
            self.notify()
            return
        self._handed.extend(envelopes)
        self._handed_ready.set()

    def start(self) -> None:
        """Run the relay loop (and the hand-off) in the background."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.source}")
        if self._hand_off_seconds is not None and self._hand_off_task is None:
            self._hand_off_task = asyncio.create_task(
                self._hand_off_run(), name=f"outbox-hand-off-{self.source}"
            )
            self._deleter_task = asyncio.create_task(
                self._delete_run(), name=f"outbox-deletes-{self.source}"
            )

    async def stop(self) -> None:
        """Stop the loop after the batch in flight."""
        hand_off, self._hand_off_task = self._hand_off_task, None
        deleter, self._deleter_task = self._deleter_task, None
        for task in (hand_off, deleter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # Events handed off and not yet out stay in the outbox for the poll; the rows
        # of those out are deleted now, or sent once more after their grace.
        self._handed = []
        if self._confirmed:
            try:
                await self._delete_confirmed()
            except Exception:
                log.warning("deleting handed-off events' rows failed", exc_info=True)
        if self._task is not None:
            # A cancellation can be lost (asyncio.wait_for on Python 3.11 drops one
            # that races the wake-up; a consumer may swallow one): the flag still
            # ends the loop, where waiting on the task alone could hang forever.
            self._stopping = True
            self._wakeup.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _hand_off_run(self) -> None:
        while True:
            await self._handed_ready.wait()
            self._handed_ready.clear()
            while self._handed:
                # Commit order, in batches: what piles up while one is confirmed
                # goes out together next.
                batch = self._handed[: self._batch_size]
                del self._handed[: self._batch_size]
                try:
                    await self._hand_off(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Their rows fall due and the poll sends them.
                    log.exception("outbox hand-off failed", extra={"service": self.source})

    async def _hand_off(self, envelopes: list[Envelope]) -> None:
        outcomes = await self._send(envelopes)
        sent = [
            envelope.id
            for envelope, outcome in zip(envelopes, outcomes, strict=True)
            if outcome is None
        ]
        if len(sent) < len(envelopes):
            log.warning(
                "handed-off events not taken by the broker; the relay will retry them",
                extra={"service": self.source, "events": len(envelopes) - len(sent)},
            )
        if sent:
            self._confirmed.extend(sent)
            self._confirmed_ready.set()

    async def _delete_run(self) -> None:
        """Delete confirmed events' rows, what gathered over ``DELETE_EVERY`` in one write.

        A delete costs a write per transaction that published, or one per tick here: a
        row it missed (a process that died first) is sent again after its grace.
        """
        while True:
            await self._confirmed_ready.wait()
            await asyncio.sleep(DELETE_EVERY)
            self._confirmed_ready.clear()
            try:
                await self._delete_confirmed()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "deleting handed-off events' rows failed", extra={"service": self.source}
                )

    async def _delete_confirmed(self) -> None:
        sent, self._confirmed = self._confirmed, []
        if not sent:
            return
        values = {"ids": sent}
        if self._transactions is not None:
            async with self._transactions() as tx:
                await tx.commit_with(self._delete_handed[True], values)
        else:
            async with self._sessions() as session:
                await SessionSql(session).execute(self._delete_handed[False], values)
                await session.commit()
        self.delivered += len(sent)

    async def _run(self) -> None:
        polled = False
        while not self._stopping:
            try:
                more = await (self._poll_once() if polled else self.relay_once())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed", extra={"service": self.source})
                more = False
            if more:
                polled = False
                continue
            polled = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wakeup.wait()
                    polled = False
            self._wakeup.clear()

    async def _poll_once(self) -> bool:
        """``relay_once`` for a timed poll, which mostly finds nothing to do.

        On PostgreSQL a pass that finds nothing still costs BEGIN, the claim
        and ROLLBACK: a read outside any transaction answers the idle case in
        one round trip. A row committed just after it is seen by the next
        pass, as it would be after an empty one.
        """
        if self._skip_locked:
            assert self._reads is not None
            async with self._reads() as sql:
                found = await sql.fetch_one(self._any_due, {"now": datetime.now(UTC)})
            if found is None:
                return False
        return await self.relay_once()

    async def relay_once(self) -> bool:
        """Deliver one batch of due rows; True when a full batch suggests more are waiting."""
        due = {"now": datetime.now(UTC)}
        rows: Sequence[Any]
        if self._skip_locked:
            assert self._transactions is not None
            async with self._transactions() as tx:
                rows = await tx.sql.fetch(self._claim, due)
                if not rows:
                    # Nothing was locked or written: leaving ends the transaction
                    # without a commit.
                    return False
                sent, failures = await self._publish(rows)
                await self._record(tx.sql, sent, failures)
                await tx.commit()
        else:
            # SQLite has one relay per database (one process) and a single writer:
            # holding the write lock while consumers in this process write to the
            # same file would deadlock, so read, publish, then record.
            async with self._read_sessions() as session:
                rows = (await (await session.connection()).execute(self._due, due)).all()
            if not rows:
                return False
            sent, failures = await self._publish(rows)
            async with self._sessions() as session:
                await self._record(SessionSql(session), sent, failures)
                await session.commit()
        self.delivered += len(sent)
        return len(rows) == self._batch_size and bool(sent)

    async def _publish(self, rows: Sequence[Any]) -> tuple[list[int], list[tuple[Any, Exception]]]:
        outcomes = await self._send([envelope_of(row, self.source) for row in rows])
        sent = [row.seq for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
        failures = [
            (row, outcome)
            for row, outcome in zip(rows, outcomes, strict=True)
            if outcome is not None
        ]
        return sent, failures

    async def _send(self, envelopes: list[Envelope]) -> list[Exception | None]:
        """Publish ``envelopes``: what each came to, None when the transport took it."""
        # A transport that only publishes one at a time (a test double) gets
        # them one after the other.
        publish_many = getattr(self._transport, "publish_many", None)
        if publish_many is None:
            outcomes: list[Exception | None] = []
            for envelope in envelopes:
                try:
                    await self._transport.publish(envelope)
                except Exception as exc:
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
            return outcomes
        # The whole batch goes out before any confirm is awaited: the broker
        # confirms it in one round trip rather than one per event.
        try:
            answers = await publish_many(envelopes)
        except Exception as exc:
            return [exc] * len(envelopes)
        return [
            None
            if answer is None
            else answer
            if isinstance(answer, Exception)
            else RuntimeError(repr(answer))
            for answer in answers
        ]

    async def _record(
        self, sql: Sql, sent: list[int], failures: list[tuple[Any, Exception]]
    ) -> None:
        for row, error in failures:
            await self._record_failure(sql, row, error)
        if sent:
            await sql.execute(self._delete_sent[sql.postgres], {"seqs": sent})

    async def _record_failure(self, sql: Sql, row: Any, exc: Exception) -> None:
        attempts = row.attempts + 1
        values: dict[str, Any] = {
            "row_seq": row.seq,
            "new_attempts": attempts,
            "new_last_error": repr(exc)[:2000],
            "new_dead_at": None,
            "new_next_attempt_at": None,
        }
        if attempts >= self._max_attempts:
            values["new_dead_at"] = datetime.now(UTC)
            log.error(
                "outbox event parked after repeated failures",
                extra={"service": self.source, "event_id": str(row.event_id), "type": row.type},
            )
        else:
            values["new_next_attempt_at"] = datetime.now(UTC) + timedelta(
                seconds=min(300.0, 0.5 * 2**attempts)
            )
            log.warning(
                "outbox delivery failed; will retry",
                extra={"service": self.source, "event_id": str(row.event_id), "error": str(exc)},
            )
        await sql.execute(self._set_back, values)

    async def lag(self) -> tuple[int, float]:
        """Pending rows and the age in seconds of the oldest one (for metrics)."""
        async with self._sessions() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(self._outbox.c.occurred_at)).where(
                        self._outbox.c.dead_at.is_(None)
                    )
                )
            ).one()
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        return int(count), age


@functools.cache
def _expired_inbox_rows(inbox: Table) -> Any:
    # Built once per table: a bounded batch, so one purge never holds many locks.
    oldest = (
        select(inbox.c.consumer, inbox.c.event_id)
        .where(inbox.c.applied_at < bindparam("before"))
        .limit(bindparam("limit"))
    )
    return delete(inbox).where(tuple_(inbox.c.consumer, inbox.c.event_id).in_(oldest))


async def purge_inbox(sql: Sql, tables: EventTables, before: datetime, limit: int = 1000) -> int:
    """Delete up to ``limit`` inbox records of events applied before ``before``; how many.

    A record is what makes a redelivered event a no-op, so ``before`` must lie further
    back than any redelivery can: the relay's retries and the broker's together take
    minutes, not the days the retention setting keeps.
    """
    return await sql.execute(_expired_inbox_rows(tables.inbox), {"before": before, "limit": limit})


async def record_in_inbox(sql: Sql, tables: EventTables, consumer: str, envelope: Envelope) -> bool:
    """Claim an event for this consumer inside the caller's transaction.

    False when it was applied before: the caller then skips the effect. The
    primary key makes a concurrent duplicate wait for, then lose to, the first
    (or claim the event after all, if the first rolls back).
    """
    # ON CONFLICT DO NOTHING rather than a savepoint around a plain INSERT: a
    # duplicate then returns no row instead of an error, which spares every
    # event the SAVEPOINT and RELEASE round trips.
    claimed = await sql.fetch_one(
        _claim(tables.inbox, "postgresql" if sql.postgres else "sqlite"),
        _inbox_row(consumer, envelope),
    )
    return claimed is not None


def inbox_claim(tables: EventTables, consumer: str, envelope: Envelope) -> InboxClaim:
    """PostgreSQL: the claim of ``envelope`` for this consumer, made with the writes
    that apply it (:meth:`~panthera.kernel.sql.DirectTransaction.claim_once`)."""
    return InboxClaim(
        tables.inbox, _claim(tables.inbox, "postgresql"), _inbox_row(consumer, envelope)
    )


def _inbox_row(consumer: str, envelope: Envelope) -> dict[str, Any]:
    return {
        "consumer": consumer,
        "event_id": envelope.id,
        "event_type": envelope.type,
        "applied_at": datetime.now(UTC),
    }


@functools.cache
def _claim(inbox: Table, dialect: str) -> Insert:
    # Built once per table and dialect: every event consumed runs it (a batch of
    # events, each as one row of it).
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert_(inbox)
        .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        .returning(inbox.c.event_id)
    )


async def record_all_in_inbox(
    sql: Sql, tables: EventTables, consumer: str, envelopes: Sequence[Envelope]
) -> set[uuid.UUID]:
    """Claim several events for this consumer in one statement; the ids not applied before.

    As with ``record_in_inbox`` a concurrent transaction claiming one of them
    makes this wait for its outcome, and the event is not returned if it won.
    """
    if not envelopes:
        return set()
    now = datetime.now(UTC)
    rows = {
        envelope.id: {
            "consumer": consumer,
            "event_id": envelope.id,
            "event_type": envelope.type,
            "applied_at": now,
        }
        for envelope in envelopes
    }
    statement = _claim(tables.inbox, "postgresql" if sql.postgres else "sqlite")
    return {row[0] for row in await sql.fetch_many(statement, list(rows.values()))}
