"""What a service is (its definition) and what a running instance of it holds (its runtime)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from opentelemetry.trace import INVALID_SPAN, SpanKind
from sqlalchemy import MetaData

from panthera.kernel.db import Database, UnitOfWork
from panthera.kernel.events.envelope import Envelope, EventContract
from panthera.kernel.events.outbox import (
    EventTables,
    OutboxRelay,
    inbox_claim,
    outbox_writer,
    purge_inbox,
    record_all_in_inbox,
    record_in_inbox,
)
from panthera.kernel.events.transport import EventTransport
from panthera.kernel.observability import EVENTS_CONSUMED, current_traceparent, set_traceparent
from panthera.kernel.settings import Settings
from panthera.kernel.sql import AlreadyApplied, DirectTransaction, Transaction
from panthera.kernel.tracing import continue_trace, recording

log = logging.getLogger("panthera.events")

# The handler's transaction: a UnitOfWork, or with ``handlers_on_sql`` any Transaction.
EventHandler = Callable[["ServiceRuntime", Any, Any, Envelope], Awaitable[None]]
# Given the transaction the batch's handlers had (see ``EventHandler``).
BeforeCommit = Callable[["ServiceRuntime", Any], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """A reaction to another service's event: which contract, which versions, which handler."""

    contract: type[EventContract]
    handler: EventHandler
    versions: frozenset[int] = frozenset({1})


@dataclass(frozen=True)
class ServiceDefinition:
    """A service's static description, registered in its package's ``__init__``."""

    name: str
    title: str
    description: str
    metadata: MetaData
    tables: EventTables
    migrations_dir: Path
    router: Callable[[], APIRouter]
    subscriptions: Sequence[Subscription] = ()
    # Objects the routes find on ``app.state``, built from the running instance.
    state: Callable[[ServiceRuntime], dict[str, Any]] | None = None
    # Runs once when an instance starts, after migrations (e.g. to create keys).
    on_start: Callable[[ServiceRuntime], Awaitable[None]] | None = None
    # Runs once when an instance stops.
    on_stop: Callable[[ServiceRuntime], Awaitable[None]] | None = None
    # Other services this one calls over HTTP.
    calls: Sequence[str] = ()
    # Where the gateway publishes this service's paths; default /api/v1/<name>.
    public_prefix: str = ""
    # Up to how many delivered events one transaction applies. Above 1 a
    # consumer off the critical path pays one transaction, one inbox insert and
    # one commit for a whole batch; at 1 events are applied concurrently, each
    # on its own, for the lowest latency.
    consume_batch: int = 1
    # With batches, how long (seconds) a batch not yet full waits for more
    # events: latency a consumer off the critical path can spare for fewer
    # transactions.
    consume_linger: float = 0.0
    # Runs in every transaction that applies events, after their handlers and
    # before the commit: handlers may leave work for it to do once per batch.
    before_commit: BeforeCommit | None = None
    # Whether the handlers (and ``before_commit``) use nothing of their transaction but
    # what kernel/sql.py's Transaction offers (``sql``, ``publish``, ``on_commit``,
    # ``gathering``): then, on PostgreSQL, events are applied on the driver.
    handlers_on_sql: bool = False

    @property
    def api_prefix(self) -> str:
        return self.public_prefix or f"/api/v1/{self.name}"


@dataclass
class ServiceRuntime:
    """One running instance of a service and the adapters chosen for it."""

    definition: ServiceDefinition
    settings: Settings
    database: Database
    transport: EventTransport
    relay: OutboxRelay = field(init=False)
    # Adapters that the composition root wires (HTTP clients, rate limiters, keys...).
    components: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.relay = OutboxRelay(
            source=self.definition.name,
            sessions=self.database.sessions,
            read_sessions=self.database.read_sessions,
            tables=self.definition.tables,
            transport=self.transport,
            skip_locked=not self.database.is_sqlite,
            poll_seconds=self.settings.relay_poll_seconds,
            transactions=None if self.database.is_sqlite else self.transaction,
            reads=None if self.database.is_sqlite else self.database.reads,
            hand_off_seconds=self.settings.relay_hand_off_seconds or None,
        )

    @property
    def name(self) -> str:
        return self.definition.name

    def uow(self) -> UnitOfWork:
        """A unit of work on this service's database whose events go to its outbox."""
        return UnitOfWork(
            self.database,
            source=self.definition.name,
            outbox_insert=outbox_writer(self.definition.tables, self.relay.rows_of),
            after_commit=self.relay.committed,
            traceparent=current_traceparent,
        )

    def transaction(self) -> Transaction:
        """A transaction for Core statements (``.sql``) and the events they publish.

        On PostgreSQL it runs on the driver (:class:`~panthera.kernel.sql.DirectTransaction`);
        on SQLite it is a unit of work, queued on the one writer.
        """
        if self.database.is_sqlite:
            return self.uow()
        return DirectTransaction(
            self.database.direct_connections(),
            self.database.statements,
            source=self.definition.name,
            outbox_insert=self.definition.tables.outbox_insert,
            outbox_rows=self.relay.rows_of,
            after_commit=self.relay.committed,
            traceparent=current_traceparent,
        )

    def _applying(self) -> Transaction:
        """The transaction one event is applied in."""
        if self.definition.handlers_on_sql:
            return self.transaction()
        return self.uow()

    async def purge_inbox(self, batch: int = 1000) -> int:
        """Forget the events applied longer ago than the inbox retention; how many."""
        before = datetime.now(UTC) - timedelta(hours=self.settings.inbox_retention_hours)
        purged = 0
        while True:
            # A transaction per batch: locks stay few and short beside the consumers.
            async with self.transaction() as tx:
                deleted = await purge_inbox(tx.sql, self.definition.tables, before, batch)
                await tx.commit()
            purged += deleted
            if deleted < batch:
                return purged

    def subscribed_event_types(self) -> list[str]:
        """The event types this service consumes."""
        return list(dict.fromkeys(s.contract.event_type for s in self.definition.subscriptions))

    async def subscribe(self) -> None:
        """Register this service's consumers with the transport."""
        by_type: dict[str, Subscription] = {}
        for subscription in self.definition.subscriptions:
            by_type[subscription.contract.event_type] = subscription
        if not by_type:
            return
        if self.definition.consume_batch > 1:
            await self.transport.subscribe_batch(
                self.name,
                list(by_type),
                self._batch_consumer(by_type),
                max_batch=self.definition.consume_batch,
                linger=self.definition.consume_linger,
            )
        else:
            await self.transport.subscribe(self.name, list(by_type), self._consumer(by_type))

    def _contract_of(self, by_type: dict[str, Subscription], envelope: Envelope) -> Any:
        """The envelope's payload as its contract, or None for a type not consumed here."""
        subscription = by_type.get(envelope.type)
        if subscription is None:
            return None
        if envelope.version not in subscription.versions:
            # A version this consumer does not understand is a deploy-order
            # problem: refuse it so it is retried and, failing, dead-lettered
            # for an operator rather than silently dropped.
            raise UnsupportedEventVersion(envelope.type, envelope.version)
        return subscription.contract.model_validate(envelope.payload)

    @contextmanager
    def _consuming(self, envelope: Envelope) -> Iterator[Any]:
        """The consumer span of ``envelope``; events published inside it continue its trace."""
        if not recording():
            # No span goes anywhere: the event's trace is passed on as it came, which is
            # what a span of the no-op tracer would pass on, without building one per
            # event.
            outer = current_traceparent()
            set_traceparent(envelope.traceparent)
            try:
                yield INVALID_SPAN
            finally:
                set_traceparent(outer)
            return
        with continue_trace(
            f"consume {envelope.type}",
            kind=SpanKind.CONSUMER,
            traceparent=envelope.traceparent,
            attributes={"messaging.consumer.group.name": self.name},
        ) as (span, passed_on):
            outer = current_traceparent()
            set_traceparent(passed_on)
            try:
                yield span
            finally:
                set_traceparent(outer)

    async def _handle(
        self, subscription: Subscription, tx: Transaction, payload: Any, envelope: Envelope
    ) -> None:
        with self._consuming(envelope):
            await subscription.handler(self, tx, payload, envelope)

    async def _commit_applied(self, tx: Transaction) -> None:
        if self.definition.before_commit is not None:
            await self.definition.before_commit(self, tx)
        await tx.commit()

    def _batch_consumer(
        self, by_type: dict[str, Subscription]
    ) -> Callable[[Sequence[Envelope]], Awaitable[list[BaseException | None]]]:
        one_by_one = self._consumer(by_type)

        async def consume(envelopes: Sequence[Envelope]) -> list[BaseException | None]:
            try:
                await self._apply_together(by_type, envelopes)
            except Exception as exc:
                if len(envelopes) == 1:
                    return [exc]
                # One bad event must neither hold back nor take down the
                # others: each is tried again in its own transaction, so
                # only the failing ones are retried.
                log.warning(
                    "applying a batch of events failed; applying them one by one",
                    exc_info=True,
                    extra={"consumer": self.name, "events": len(envelopes)},
                )
            else:
                return [None] * len(envelopes)
            outcomes: list[BaseException | None] = []
            for envelope in envelopes:
                try:
                    await one_by_one(envelope)
                except Exception as exc:
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
            return outcomes

        return consume

    async def _apply_together(
        self, by_type: dict[str, Subscription], envelopes: Sequence[Envelope]
    ) -> None:
        """Apply ``envelopes`` in one transaction with one inbox insert; raise if any fails."""
        todo: dict[uuid.UUID, tuple[Subscription, Any, Envelope]] = {}
        for envelope in envelopes:
            payload = self._contract_of(by_type, envelope)
            if payload is not None:
                todo.setdefault(envelope.id, (by_type[envelope.type], payload, envelope))
        applied: list[Envelope] = []
        async with self._applying() as tx:
            if todo:
                fresh = await record_all_in_inbox(
                    tx.sql,
                    self.definition.tables,
                    self.name,
                    [envelope for _, _, envelope in todo.values()],
                )
                for subscription, payload, envelope in todo.values():
                    if envelope.id in fresh:
                        await self._handle(subscription, tx, payload, envelope)
                        applied.append(envelope)
            await self._commit_applied(tx)
        fresh_ids = {envelope.id for envelope in applied}
        for envelope in envelopes:
            if envelope.id in fresh_ids:
                fresh_ids.discard(envelope.id)
                EVENTS_CONSUMED.labels(self.name, envelope.type, "applied").inc()
            elif envelope.type in by_type:
                EVENTS_CONSUMED.labels(self.name, envelope.type, "duplicate").inc()

    def _consumer(self, by_type: dict[str, Subscription]) -> Callable[[Envelope], Awaitable[None]]:
        async def consume(envelope: Envelope) -> None:
            payload = self._contract_of(by_type, envelope)
            if payload is None:
                return
            subscription = by_type[envelope.type]
            with self._consuming(envelope) as span:
                try:
                    async with self._applying() as tx:
                        if isinstance(tx, DirectTransaction):
                            # Claimed with the handler's first write, or inside its
                            # one statement: no round trip of its own.
                            tx.claim_once(inbox_claim(self.definition.tables, self.name, envelope))
                        elif not await record_in_inbox(
                            tx.sql, self.definition.tables, self.name, envelope
                        ):
                            raise AlreadyApplied()
                        await subscription.handler(self, tx, payload, envelope)
                        await self._commit_applied(tx)
                except AlreadyApplied:
                    EVENTS_CONSUMED.labels(self.name, envelope.type, "duplicate").inc()
                    span.set_attribute("panthera.duplicate", True)
                    return
            EVENTS_CONSUMED.labels(self.name, envelope.type, "applied").inc()

        return consume


class UnsupportedEventVersion(Exception):
    """An event arrived in a version its consumer was not written for."""

    def __init__(self, event_type: str, version: int) -> None:
        super().__init__(f"{event_type} v{version} is not supported")
