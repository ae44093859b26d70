"""Notifications and analytics on PostgreSQL: replicas that share the delivery log, and
roll-ups that concurrent consumers increment without losing a sale."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from panthera.analytics import reports
from panthera.analytics.models import DailySales
from panthera.kernel.db import Database
from panthera.kernel.events.embedded import EmbeddedTransport
from panthera.kernel.events.envelope import Envelope
from panthera.kernel.migrations import upgrade
from panthera.kernel.service import ServiceRuntime
from panthera.kernel.settings import Settings
from panthera.notifications.channels import PermanentFailure
from panthera.notifications.models import Channel, Delivery, Recipient
from panthera.notifications.sender import DeliverySender, RetryPolicy
from panthera.notifications.service import Rendered, queue, write_queued
from panthera.orders.events import OrderConfirmed, OrderLine, OrderPlaced
from panthera.runtime.registry import definition
from panthera.users.events import UserRegistered, UserUpdated
from tests.integration.conftest import RoundTrips, ServiceDatabases

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def _runtime(name: str, url: str, data_dir: Path) -> ServiceRuntime:
    service = definition(name)
    database = Database(url)
    await upgrade(database, service.migrations_dir, name)
    return ServiceRuntime(
        definition=service,
        settings=Settings(data_dir=data_dir),
        database=database,
        transport=EmbeddedTransport(),
    )


def _batch_consumer(runtime: ServiceRuntime) -> Any:
    """What the transport calls with each batch of the service's events."""
    return runtime._batch_consumer(
        {s.contract.event_type: s for s in runtime.definition.subscriptions}
    )


async def _notifications(url: str, data_dir: Path) -> ServiceRuntime:
    """The notifications runtime with its state (deps, sender) made, not yet started."""
    runtime = await _runtime("notifications", url, data_dir)
    assert runtime.definition.state is not None
    runtime.definition.state(runtime)
    return runtime


class SlowMailbox:
    """Takes every message after a pause, so two senders overlap."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def send(self, message: EmailMessage) -> None:
        await asyncio.sleep(0.01)
        self.ids.append(str(message["Message-ID"]))


async def test_sender_replicas_send_each_message_once(
    service_databases: Callable[..., Awaitable[ServiceDatabases]], tmp_path: Path
) -> None:
    databases = await service_databases("notifications")
    runtime = await _notifications(databases.url_for("notifications"), tmp_path)
    try:
        deps = runtime.components["notifications_deps"]
        mailbox = SlowMailbox()
        deps.email = mailbox
        # Queued due, not leased to this process's sender: the replicas below share them.
        deps.take_up = None
        rendered = Rendered(subject="Order confirmed", text="t", html="<p>t</p>", short=None)
        async with runtime.uow() as uow:
            for index in range(40):
                await queue(
                    deps,
                    uow,
                    event_id=uuid.uuid4(),
                    user_id=None,
                    channel=Channel.EMAIL,
                    to=f"shopper{index}@example.com",
                    template="order_confirmed",
                    rendered=rendered,
                    transactional=True,
                )
            await write_queued(uow)
            await uow.commit()
        replicas = [
            DeliverySender(
                transactions=runtime.transaction,
                deps=deps,
                policy=RetryPolicy(),
                skip_locked=True,
                batch_size=5,
            )
            for _ in range(3)
        ]
        await asyncio.gather(*(replica.drain() for replica in replicas))
        assert len(mailbox.ids) == 40
        assert len(set(mailbox.ids)) == 40
    finally:
        await runtime.database.dispose()


async def test_messages_are_sent_by_the_process_that_queued_them_or_after_its_lease(
    service_databases: Callable[..., Awaitable[ServiceDatabases]], tmp_path: Path
) -> None:
    databases = await service_databases("notifications")
    runtime = await _notifications(databases.url_for("notifications"), tmp_path)
    try:
        deps = runtime.components["notifications_deps"]
        mailbox = SlowMailbox()
        deps.email = mailbox
        sender: DeliverySender = runtime.components["notifications_sender"]
        other = DeliverySender(
            transactions=runtime.transaction,
            deps=deps,
            policy=RetryPolicy(),
            skip_locked=True,
        )
        rendered = Rendered(subject="Order confirmed", text="t", html="<p>t</p>", short=None)

        async def queue_two() -> list[uuid.UUID]:
            async with runtime.uow() as uow:
                queued = [
                    await queue(
                        deps,
                        uow,
                        event_id=uuid.uuid4(),
                        user_id=None,
                        channel=Channel.EMAIL,
                        to=f"shopper{index}@example.com",
                        template="order_confirmed",
                        rendered=rendered,
                        transactional=True,
                    )
                    for index in range(2)
                ]
                await write_queued(uow)
                await uow.commit()
            return queued

        first = await queue_two()
        # Leased to the process that queued them: another sender leaves them alone...
        assert await other.send_due() == 0
        # ...and this one sends them without looking for them.
        assert await sender.send_due() == 2
        assert [_delivery_of(sent) for sent in mailbox.ids] == first

        # A process that queued messages and died before sending them (its sender
        # never runs again): once the lease runs out, any sender takes them.
        second = await queue_two()
        assert await other.send_due() == 0
        async with runtime.database.sessions() as session:
            await session.execute(
                update(Delivery)
                .where(Delivery.id.in_(second))
                .values(next_attempt_at=datetime.now(UTC))
            )
            await session.commit()
        assert await other.send_due() == 2
        assert sorted(_delivery_of(sent) for sent in mailbox.ids[2:]) == sorted(second)
        async with runtime.database.sessions() as session:
            rows = (await session.execute(select(Delivery))).scalars().all()
        assert {(row.status, row.attempts) for row in rows} == {("sent", 1)}
    finally:
        await runtime.database.dispose()


async def test_a_message_held_past_half_its_lease_is_left_to_the_poll(
    service_databases: Callable[..., Awaitable[ServiceDatabases]], tmp_path: Path
) -> None:
    databases = await service_databases("notifications")
    runtime = await _notifications(databases.url_for("notifications"), tmp_path)
    try:
        deps = runtime.components["notifications_deps"]
        mailbox = SlowMailbox()
        deps.email = mailbox
        sender = DeliverySender(
            transactions=runtime.transaction,
            deps=deps,
            policy=RetryPolicy(lease_seconds=4.0),
            skip_locked=True,
        )
        deps.take_up, deps.take_up_lease = sender.take_up, sender.lease
        rendered = Rendered(subject="Order confirmed", text="t", html="<p>t</p>", short=None)
        async with runtime.uow() as uow:
            delivery_id = await queue(
                deps,
                uow,
                event_id=uuid.uuid4(),
                user_id=None,
                channel=Channel.EMAIL,
                to="shopper@example.com",
                template="order_confirmed",
                rendered=rendered,
                transactional=True,
            )
            await write_queued(uow)
            await uow.commit()
        # Sends slower than the queueing: by the time its turn comes, another
        # sender may soon take the message up, so this one no longer sends it...
        await asyncio.sleep(2.5)
        assert await sender.send_due() == 0
        assert mailbox.ids == []
        # ...and once the lease is over, it is sent like any message that fell due.
        await asyncio.sleep(2.0)
        assert await sender.send_due() == 1
        assert [_delivery_of(sent) for sent in mailbox.ids] == [delivery_id]
    finally:
        await runtime.database.dispose()


def _delivery_of(message_id: str) -> uuid.UUID:
    return uuid.UUID(message_id.strip("<>").partition("@")[0])


class PickyMailbox:
    """Refuses mail to some addresses: for good (``bad``) or for now (``busy``)."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def send(self, message: EmailMessage) -> None:
        to = str(message["To"])
        if to.startswith("bad"):
            raise PermanentFailure("no such mailbox")
        if to.startswith("busy"):
            raise ConnectionError("try later")
        self.ids.append(str(message["Message-ID"]))


async def test_a_batch_records_each_message_by_its_own_outcome(
    service_databases: Callable[..., Awaitable[ServiceDatabases]], tmp_path: Path
) -> None:
    databases = await service_databases("notifications")
    runtime = await _notifications(databases.url_for("notifications"), tmp_path)
    try:
        deps = runtime.components["notifications_deps"]
        deps.email = PickyMailbox()
        deps.take_up = None
        rendered = Rendered(subject="Order confirmed", text="t", html="<p>t</p>", short=None)
        addresses = ["a@example.com", "bad@example.com", "busy@example.com", "b@example.com"]
        async with runtime.uow() as uow:
            for to in addresses:
                await queue(
                    deps,
                    uow,
                    event_id=uuid.uuid4(),
                    user_id=None,
                    channel=Channel.EMAIL,
                    to=to,
                    template="order_confirmed",
                    rendered=rendered,
                    transactional=True,
                )
            await write_queued(uow)
            await uow.commit()
        sender = DeliverySender(
            transactions=runtime.transaction,
            deps=deps,
            policy=RetryPolicy(base_seconds=60.0),
            skip_locked=True,
            batch_size=10,
        )
        assert await sender.send_due() == 4
        # Nothing is due any more: the retry waits for its backoff.
        assert await sender.send_due() == 0
        async with runtime.database.sessions() as session:
            rows = {
                row.recipient: row for row in (await session.execute(select(Delivery))).scalars()
            }
        assert len(deps.email.ids) == 2
        for to in ("a@example.com", "b@example.com"):
            assert (rows[to].status, rows[to].attempts) == ("sent", 1)
            assert rows[to].sent_at is not None
            assert rows[to].next_attempt_at is None
        assert (rows["bad@example.com"].status, rows["bad@example.com"].attempts) == ("failed", 1)
        busy = rows["busy@example.com"]
        assert (busy.status, busy.attempts) == ("queued", 1)
        assert busy.next_attempt_at > datetime.now(UTC)
        assert "try later" in (busy.last_error or "")
    finally:
        await runtime.database.dispose()


def _confirmed(day: datetime, product: uuid.UUID, quantity: int) -> OrderConfirmed:
    line = OrderLine(
        product_id=product,
        variant_id=product,
        sku="SKU-1",
        name="Trail running shoe",
        category_id=None,
        quantity=quantity,
        unit_price=1000,
        line_total=1000 * quantity,
    )
    return OrderConfirmed(
        order_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        status="CONFIRMED",
        total_amount=1000 * quantity,
        currency="USD",
        revision=2,
        occurred_at=day,
        items=(line,),
        payment_id=None,
    )


async def test_concurrent_consumers_lose_no_sale_in_the_roll_ups(
    service_databases: Callable[..., Awaitable[ServiceDatabases]], tmp_path: Path
) -> None:
    databases = await service_databases("analytics")
    runtime = await _runtime("analytics", databases.url_for("analytics"), tmp_path)
    try:
        await runtime.transport.start()
        await runtime.subscribe()
        day = datetime(2026, 11, 2, 12, tzinfo=UTC)
        product = uuid.uuid4()
        events = [_confirmed(day, product, 1 + index % 3) for index in range(60)]
        # Each order's placement races its confirmation: both want to create its fact.
        placed = [
            OrderPlaced(
                shipping_address="1 Main St",
                **event.model_dump(exclude={"payment_id"}) | {"status": "PENDING", "revision": 1},
            )
            for event in events
        ]
        envelopes = [Envelope.wrap(event, source="orders") for event in [*events, *placed]]
        # Replicas of the consumer apply events of one day and product at once, each
        # envelope twice: the upserts serialise on the row, the inbox drops the repeats.
        await asyncio.gather(
            *(runtime.transport.publish(envelope) for envelope in envelopes + envelopes)
        )
        units = sum(event.items[0].quantity for event in events)
        async with runtime.database.sessions() as session:
            (row,) = (await session.execute(select(DailySales))).scalars()
            assert (row.gross, row.orders, row.units) == (1000 * units, 60, units)
            top = await reports.top_products(
                session, reports.DateRange(day.date(), day.date()), limit=5, by="units"
            )
            by_status = await reports.orders_by_status(
                session, reports.DateRange(day.date(), day.date())
            )
        assert Counter({r["productId"]: r["units"] for r in top}) == Counter({str(product): units})
        assert by_status == [{"status": "CONFIRMED", "orders": 60}]
    finally:
        await runtime.database.dispose()


async def test_concurrent_batches_add_every_sale_once_to_the_roll_ups(
    service_databases: Callable[..., Awaitable[ServiceDatabases]], tmp_path: Path
) -> None:
    databases = await service_databases("analytics")
    runtime = await _runtime("analytics", databases.url_for("analytics"), tmp_path)
    try:
        consume = _batch_consumer(runtime)
        day = datetime(2026, 11, 3, 12, tzinfo=UTC)
        products = [uuid.uuid4(), uuid.uuid4()]
        events = [_confirmed(day, products[index % 2], 1 + index % 3) for index in range(48)]
        placed = [
            OrderPlaced(
                shipping_address="1 Main St",
                **event.model_dump(exclude={"payment_id"}) | {"status": "PENDING", "revision": 1},
            )
            for event in events
        ]
        envelopes = [Envelope.wrap(event, source="orders") for event in [*events, *placed]]
        # Replicas take overlapping batches: some hold an order's placement and its
        # confirmation together, every event arrives twice, and the batches race.
        batches = [envelopes[start : start + 8] for start in range(0, len(envelopes), 8)]
        batches += [envelopes[start : start + 12] for start in range(4, len(envelopes), 12)]
        outcomes = await asyncio.gather(*(consume(batch) for batch in batches))
        assert all(outcome is None for batch in outcomes for outcome in batch)

        units = sum(event.items[0].quantity for event in events)
        async with runtime.database.sessions() as session:
            (row,) = (await session.execute(select(DailySales))).scalars()
            assert (row.gross, row.orders, row.units) == (1000 * units, 48, units)
            period = reports.DateRange(day.date(), day.date())
            top = await reports.top_products(session, period, limit=5, by="units")
            by_status = await reports.orders_by_status(session, period)
        expected: Counter[str] = Counter()
        for event in events:
            expected[str(event.items[0].product_id)] += event.items[0].quantity
        assert Counter({r["productId"]: r["units"] for r in top}) == expected
        assert by_status == [{"status": "CONFIRMED", "orders": 48}]
    finally:
        await runtime.database.dispose()


async def test_a_batch_is_applied_on_the_driver_in_round_trips_that_do_not_grow_with_it(
    service_databases: Callable[..., Awaitable[ServiceDatabases]],
    tmp_path: Path,
    round_trips: RoundTrips,
) -> None:
    """Analytics applies a batch with one claim for all its events, one upsert per kind
    of fact and one per roll-up table: as many round trips for 4 events as for 16."""
    databases = await service_databases("analytics")
    runtime = await _runtime("analytics", databases.url_for("analytics"), tmp_path)
    try:
        consume = _batch_consumer(runtime)
        day = datetime(2026, 11, 3, 12, tzinfo=UTC)
        product = uuid.uuid4()

        async def trips_for(orders: int) -> list[str]:
            events = [_confirmed(day, product, 1) for _ in range(orders)]
            round_trips.clear()
            outcomes = await consume([Envelope.wrap(event, source="orders") for event in events])
            assert outcomes == [None] * orders
            return round_trips.verbs()

        await trips_for(2)  # prepares the statements on the pooled connection
        assert await trips_for(4) == await trips_for(16)
        assert await trips_for(16) == ["BEGIN", "INSERT", "INSERT", *["INSERT"] * 3, "COMMIT"]
        async with runtime.database.sessions() as session:
            (row,) = (await session.execute(select(DailySales))).scalars()
        assert row.orders == 2 + 4 + 16 + 16
    finally:
        await runtime.database.dispose()


async def test_a_registration_racing_its_first_update_leaves_one_recipient(
    service_databases: Callable[..., Awaitable[ServiceDatabases]], tmp_path: Path
) -> None:
    databases = await service_databases("notifications")
    runtime = await _notifications(databases.url_for("notifications"), tmp_path)
    try:
        await runtime.transport.start()
        await runtime.subscribe()
        now = datetime.now(UTC)
        envelopes = []
        for index in range(20):
            user_id = uuid.uuid4()
            profile = {"user_id": user_id, "email": f"u{index}@example.com", "last_name": "Doe"}
            envelopes.append(
                Envelope.wrap(
                    UserRegistered(
                        first_name="Ada",
                        roles=["USER"],
                        email_verified=False,
                        registered_at=now,
                        **profile,
                    ),
                    source="users",
                )
            )
            envelopes.append(
                Envelope.wrap(
                    UserUpdated(
                        revision=2,
                        first_name="Grace",
                        phone_number="+15551234567",
                        roles=["USER"],
                        email_verified=True,
                        changed=["firstName", "phoneNumber"],
                        updated_at=now,
                        **profile,
                    ),
                    source="users",
                )
            )
        await asyncio.gather(*(runtime.transport.publish(envelope) for envelope in envelopes))
        async with runtime.database.sessions() as session:
            recipients = list((await session.execute(select(Recipient))).scalars())
        assert len(recipients) == 20
        assert {(r.first_name, r.phone_number, r.revision) for r in recipients} == {
            ("Grace", "+15551234567", 2)
        }
    finally:
        await runtime.database.dispose()


async def test_a_batch_tells_each_user_on_the_channels_they_chose(
    service_databases: Callable[..., Awaitable[ServiceDatabases]], tmp_path: Path
) -> None:
    """The batch's users are read together; each message goes to its own user's email,
    phone and every push token, and a user the directory does not know gets nothing."""
    databases = await service_databases("notifications")
    runtime = await _notifications(databases.url_for("notifications"), tmp_path)
    try:
        now = datetime.now(UTC)
        everywhere, mail_only, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        async with runtime.database.sessions() as session:
            for user_id, email, sms, push in (
                (everywhere, "ada@example.com", True, True),
                (mail_only, "grace@example.com", False, False),
            ):
                session.add(
                    Recipient(
                        user_id=user_id,
                        email=email,
                        first_name="Ada",
                        last_name="Doe",
                        phone_number="+15551234567",
                        push_tokens=["device-1", "device-2"],
                        revision=1,
                        marketing_email=True,
                        sms_enabled=sms,
                        push_enabled=push,
                        updated_at=now,
                    )
                )
            await session.commit()
        consume = _batch_consumer(runtime)
        events = []
        for user_id in (everywhere, mail_only, unknown, everywhere):
            event = _confirmed(now, uuid.uuid4(), 1)
            events.append(event.model_copy(update={"user_id": user_id}))
        envelopes = [Envelope.wrap(event, source="orders") for event in events]
        assert await consume(envelopes) == [None] * 4
        assert await consume(envelopes) == [None] * 4  # delivered again: nothing more
        async with runtime.database.sessions() as session:
            deliveries = list((await session.execute(select(Delivery))).scalars())
        sent = Counter((d.user_id, d.channel, d.recipient) for d in deliveries)
        assert sent == {
            (everywhere, Channel.EMAIL.value, "ada@example.com"): 2,
            (everywhere, Channel.SMS.value, "+15551234567"): 2,
            (everywhere, Channel.PUSH.value, "device-1"): 2,
            (everywhere, Channel.PUSH.value, "device-2"): 2,
            (mail_only, Channel.EMAIL.value, "grace@example.com"): 1,
        }
        # Each message is about its own event's order, for that event's user.
        user_of = {
            envelope.id: event.user_id for envelope, event in zip(envelopes, events, strict=True)
        }
        assert all(user_of[d.event_id] == d.user_id for d in deliveries)
    finally:
        await runtime.database.dispose()


async def test_messages_queued_together_are_inserted_once_and_never_committed_unwritten(
    service_databases: Callable[..., Awaitable[ServiceDatabases]], tmp_path: Path
) -> None:
    databases = await service_databases("notifications")
    runtime = await _notifications(databases.url_for("notifications"), tmp_path)
    try:
        deps = runtime.components["notifications_deps"]
        taken_up: list[uuid.UUID] = []
        deps.take_up = lambda deliveries: taken_up.extend(d["id"] for d in deliveries)
        rendered = Rendered(subject="Order confirmed", text="t", html="<p>t</p>", short=None)
        event_id = uuid.uuid4()

        async def queue_twice(uow: Any) -> None:
            for _ in range(2):
                await queue(
                    deps,
                    uow,
                    event_id=event_id,
                    user_id=None,
                    channel=Channel.EMAIL,
                    to="ada@example.com",
                    template="order_confirmed",
                    rendered=rendered,
                    transactional=True,
                )

        # Committing messages nobody wrote fails the transaction rather than lose them.
        async with runtime.uow() as uow:
            await queue_twice(uow)
            with pytest.raises(RuntimeError, match="not written"):
                await uow.commit()
        assert taken_up == []
        async with runtime.database.sessions() as session:
            assert (await session.execute(select(Delivery.id))).all() == []

        async with runtime.uow() as uow:
            await queue_twice(uow)
            await write_queued(uow)
            await uow.commit()
        # A repeat of the event, in a later transaction, adds nothing.
        async with runtime.uow() as uow:
            await queue_twice(uow)
            await write_queued(uow)
            await uow.commit()
        async with runtime.database.sessions() as session:
            assert len((await session.execute(select(Delivery.id))).all()) == 1
        assert len(taken_up) == 1
    finally:
        await runtime.database.dispose()
