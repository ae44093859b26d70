"""RabbitMQTransport against a real broker (``PANTHERA_TEST_AMQP_URL``).

Every test uses its own exchange, dead-letter exchange and consumer names, and
removes them afterwards. An unreachable broker fails the tests: the transport
is started inside each test body.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
import pytest

from panthera.kernel.events.envelope import Envelope
from panthera.kernel.events.rabbitmq import (
    ATTEMPT_HEADER,
    CONSUMER_HEADER,
    ERROR_HEADER,
    EventNotRoutable,
    PublishFailed,
    RabbitMQTransport,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

AMQP_URL = os.environ.get("PANTHERA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# Upper bound for any single wait; generous so a loaded CI box does not flake.
WAIT = 15.0
FAST_RETRIES = (50, 100)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def make_envelope(event_type: str, **payload: Any) -> Envelope:
    return Envelope(
        type=event_type,
        source="tests",
        subject="subject-1",
        traceparent=TRACEPARENT,
        payload=payload or {"n": 1},
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = WAIT, interval: float = 0.05
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""

    async def poll() -> None:
        while not await check():
            await asyncio.sleep(interval)

    await asyncio.wait_for(poll(), timeout)


@dataclass
class Recorder:
    """A handler that records what it gets and fails the first ``failures`` calls."""

    failures: int = 0
    delay: float = 0.0
    calls: list[tuple[float, Envelope]] = field(default_factory=list)
    received: asyncio.Queue[Envelope] = field(default_factory=asyncio.Queue)

    async def __call__(self, envelope: Envelope) -> None:
        self.calls.append((time.monotonic(), envelope))
        if self.delay:
            await asyncio.sleep(self.delay)
        if len(self.calls) <= self.failures:
            raise RuntimeError(f"boom #{len(self.calls)}")
        self.received.put_nowait(envelope)

    async def next(self, timeout: float = WAIT) -> Envelope:
        return await asyncio.wait_for(self.received.get(), timeout)


@dataclass
class Broker:
    """Per-test names, transports and cleanup."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    transports: list[RabbitMQTransport] = field(default_factory=list)
    consumers: set[str] = field(default_factory=set)
    retry_delays: set[int] = field(default_factory=set)
    # Only then can there be anything to delete; with no broker, the test
    # itself has already failed and cleanup must not add a second error.
    reached_broker: bool = False

    @property
    def exchange(self) -> str:
        return f"test.events.{self.suffix}"

    @property
    def unrouted(self) -> str:
        return f"{self.exchange}.unrouted"

    @property
    def dlx(self) -> str:
        return f"test.dlx.{self.suffix}"

    def consumer(self, label: str) -> str:
        name = f"test-{label}-{self.suffix}"
        self.consumers.add(name)
        return name

    def event_type(self, label: str) -> str:
        return f"test{self.suffix}.{label}"

    async def transport(self, **kwargs: Any) -> RabbitMQTransport:
        kwargs.setdefault("retry_delays_ms", FAST_RETRIES)
        kwargs.setdefault("reconnect_interval", 0.2)
        kwargs.setdefault("publish_timeout", 5.0)
        kwargs.setdefault("close_timeout", 5.0)
        transport = RabbitMQTransport(
            AMQP_URL, exchange=self.exchange, dead_letter_exchange=self.dlx, **kwargs
        )
        self.transports.append(transport)
        self.retry_delays.update(kwargs["retry_delays_ms"])
        await asyncio.wait_for(transport.start(), WAIT)
        self.reached_broker = True
        return transport

    @contextlib.asynccontextmanager
    async def raw_channel(self) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
        connection = await aio_pika.connect(AMQP_URL, timeout=WAIT)
        async with connection:
            yield await connection.channel()

    async def depth(self, queue: str) -> int:
        async with self.raw_channel() as channel:
            underlay = await channel.get_underlay_channel()
            declared = await asyncio.wait_for(underlay.queue_declare(queue, passive=True), WAIT)
            return int(declared.message_count or 0)

    async def get_one(self, queue: str) -> aio_pika.abc.AbstractIncomingMessage:
        async with self.raw_channel() as channel:
            q = await channel.declare_queue(queue, passive=True)
            message = await q.get(timeout=WAIT, fail=True)
            assert message is not None
            await message.ack()
            return message

    async def cleanup(self) -> None:
        for transport in self.transports:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(transport.close(), WAIT)
        if not self.reached_broker:
            return
        queues = [self.unrouted]
        for consumer in self.consumers:
            queues += [
                RabbitMQTransport.queue_name(consumer),
                RabbitMQTransport.dead_letter_queue_name(consumer),
            ]
            queues += [RabbitMQTransport.retry_queue_name(consumer, d) for d in self.retry_delays]
        async with self.raw_channel() as channel:
            for queue in queues:
                await asyncio.wait_for(channel.queue_delete(queue), WAIT)
            for exchange in (self.exchange, self.unrouted, self.dlx):
                await asyncio.wait_for(channel.exchange_delete(exchange), WAIT)


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    state = Broker()
    try:
        yield state
    finally:
        await asyncio.wait_for(state.cleanup(), 4 * WAIT)


async def test_round_trip_preserves_the_envelope(broker: Broker) -> None:
    transport = await broker.transport()
    recorder = Recorder()
    event_type = broker.event_type("user.registered")
    await transport.subscribe(broker.consumer("a"), [event_type], recorder)

    sent = make_envelope(event_type, user_id="u-1", email="a@example.com")
    await asyncio.wait_for(transport.publish(sent), WAIT)
    got = await recorder.next()

    assert got == sent
    assert got.traceparent == TRACEPARENT
    assert got.payload == {"user_id": "u-1", "email": "a@example.com"}
    assert await transport.ready()


async def test_message_properties_on_the_wire(broker: Broker) -> None:
    transport = await broker.transport()
    event_type = broker.event_type("order.placed")
    sent = make_envelope(event_type)
    async with broker.raw_channel() as channel:
        exchange = await channel.get_exchange(broker.exchange)
        probe = await channel.declare_queue(exclusive=True)
        await probe.bind(exchange, routing_key=event_type)

        await asyncio.wait_for(transport.publish(sent), WAIT)
        message = await probe.get(timeout=WAIT, fail=True)
        assert message is not None

    assert message.routing_key == event_type
    assert message.body == sent.to_bytes()
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == str(sent.id)
    assert message.type == event_type
    assert message.headers.get("traceparent") == TRACEPARENT
    assert message.timestamp is not None


async def test_fan_out_to_two_consumers(broker: Broker) -> None:
    transport = await broker.transport()
    event_type = broker.event_type("catalog.updated")
    first, second = Recorder(), Recorder()
    await transport.subscribe(broker.consumer("first"), [event_type], first)
    await transport.subscribe(broker.consumer("second"), [event_type], second)

    sent = make_envelope(event_type)
    await asyncio.wait_for(transport.publish(sent), WAIT)

    assert (await first.next()).id == sent.id
    assert (await second.next()).id == sent.id


async def test_a_declared_consumer_gets_what_was_published_before_it_started(
    broker: Broker,
) -> None:
    # A one-shot command publishes before any long-running process consumed.
    command = await broker.transport()
    consumer = broker.consumer("late")
    event_type = broker.event_type("user.roles_changed")
    await command.declare(consumer, [event_type])
    sent = make_envelope(event_type)
    await asyncio.wait_for(command.publish(sent), WAIT)
    assert await broker.depth(broker.unrouted) == 0

    service = await broker.transport()
    recorder = Recorder()
    await service.subscribe(consumer, [event_type], recorder)
    assert (await recorder.next()).id == sent.id


async def test_same_consumer_name_shares_one_queue(broker: Broker) -> None:
    replica_a = await broker.transport(prefetch=1)
    replica_b = await broker.transport(prefetch=1)
    event_type = broker.event_type("payment.captured")
    consumer = broker.consumer("shared")
    # A slow handler and prefetch 1 make sure both replicas get work.
    a, b = Recorder(delay=0.02), Recorder(delay=0.02)
    await replica_a.subscribe(consumer, [event_type], a)
    await replica_b.subscribe(consumer, [event_type], b)

    sent = [make_envelope(event_type, n=i) for i in range(20)]
    for envelope in sent:
        await asyncio.wait_for(replica_a.publish(envelope), WAIT)

    async def all_received() -> bool:
        return a.received.qsize() + b.received.qsize() >= len(sent)

    await eventually(all_received)
    await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one

    ids_a = [envelope.id for _, envelope in a.calls]
    ids_b = [envelope.id for _, envelope in b.calls]
    assert sorted(ids_a + ids_b) == sorted(envelope.id for envelope in sent)
    assert ids_a
    assert ids_b
    depths = await replica_a.queue_depths()
    assert depths == {
        RabbitMQTransport.queue_name(consumer): 0,
        RabbitMQTransport.dead_letter_queue_name(consumer): 0,
    }


async def test_failed_handler_is_retried_after_a_delay(broker: Broker) -> None:
    transport = await broker.transport(retry_delays_ms=FAST_RETRIES)
    event_type = broker.event_type("stock.reserved")
    consumer = broker.consumer("flaky")
    recorder = Recorder(failures=1)
    await transport.subscribe(consumer, [event_type], recorder)

    sent = make_envelope(event_type)
    await asyncio.wait_for(transport.publish(sent), WAIT)
    got = await recorder.next()

    assert got == sent
    assert len(recorder.calls) == 2
    (first_at, _), (second_at, _) = recorder.calls
    assert second_at - first_at >= FAST_RETRIES[0] / 1000 * 0.8
    await asyncio.sleep(0.3)
    assert len(recorder.calls) == 2
    assert await broker.depth(RabbitMQTransport.dead_letter_queue_name(consumer)) == 0


async def test_handler_that_always_fails_ends_in_the_dlq(broker: Broker) -> None:
    max_deliveries = 3
    transport = await broker.transport(max_deliveries=max_deliveries, retry_delays_ms=FAST_RETRIES)
    event_type = broker.event_type("mail.send")
    consumer = broker.consumer("doomed")
    dlq = RabbitMQTransport.dead_letter_queue_name(consumer)
    recorder = Recorder(failures=1_000)
    await transport.subscribe(consumer, [event_type], recorder)

    sent = make_envelope(event_type)
    await asyncio.wait_for(transport.publish(sent), WAIT)

    async def dead_lettered() -> bool:
        return (await transport.queue_depths()).get(dlq) == 1

    await eventually(dead_lettered)
    # Longer than the largest retry delay: a further attempt would show up.
    await asyncio.sleep(0.5)
    assert len(recorder.calls) == max_deliveries
    assert all(envelope.id == sent.id for _, envelope in recorder.calls)

    dead = await broker.get_one(dlq)
    assert Envelope.from_bytes(dead.body) == sent
    assert dead.message_id == str(sent.id)
    assert dead.headers[ATTEMPT_HEADER] == max_deliveries
    assert dead.headers[CONSUMER_HEADER] == consumer
    assert "boom" in str(dead.headers[ERROR_HEADER])
    assert dead.headers["traceparent"] == TRACEPARENT
    assert await broker.depth(RabbitMQTransport.queue_name(consumer)) == 0


async def test_malformed_body_goes_straight_to_the_dlq(broker: Broker) -> None:
    transport = await broker.transport()
    event_type = broker.event_type("garbage")
    consumer = broker.consumer("strict")
    dlq = RabbitMQTransport.dead_letter_queue_name(consumer)
    recorder = Recorder()
    await transport.subscribe(consumer, [event_type], recorder)

    bodies = [b"{not json", orjson.dumps({"type": event_type, "payload": "not a dict"})]
    async with broker.raw_channel() as channel:
        exchange = await channel.get_exchange(broker.exchange)
        for body in bodies:
            await exchange.publish(aio_pika.Message(body), routing_key=event_type)

    async def dead_lettered() -> bool:
        return (await transport.queue_depths()).get(dlq) == len(bodies)

    await eventually(dead_lettered)
    assert recorder.calls == []
    dead = await broker.get_one(dlq)
    assert dead.body == bodies[0]
    assert "malformed" in str(dead.headers[ERROR_HEADER])


async def test_event_without_subscribers_is_published(broker: Broker) -> None:
    transport = await broker.transport()
    await asyncio.wait_for(transport.publish(make_envelope(broker.event_type("nobody"))), WAIT)

    async def parked() -> bool:
        return await broker.depth(broker.unrouted) == 1

    await eventually(parked)


async def test_unroutable_event_raises_when_the_topology_is_broken(broker: Broker) -> None:
    transport = await broker.transport()
    async with broker.raw_channel() as channel:
        await channel.queue_delete(broker.unrouted)

    with pytest.raises(EventNotRoutable) as caught:
        await asyncio.wait_for(transport.publish(make_envelope(broker.event_type("lost"))), WAIT)
    assert isinstance(caught.value, PublishFailed)
    # The failure is per message: the transport stays usable.
    assert await transport.ready()


async def test_publish_many_gives_each_envelope_its_outcome_in_order(broker: Broker) -> None:
    transport = await broker.transport()
    event_type = broker.event_type("many")
    recorder = Recorder()
    await transport.subscribe(broker.consumer("many"), [event_type], recorder)
    sent = [make_envelope(event_type, n=i) for i in range(5)]

    assert await asyncio.wait_for(transport.publish_many(sent), WAIT) == [None] * len(sent)
    received = [await recorder.next() for _ in sent]
    assert sorted(envelope.id for envelope in received) == sorted(e.id for e in sent)

    async with broker.raw_channel() as channel:
        await channel.queue_delete(broker.unrouted)
    routed, lost = make_envelope(event_type, n=9), make_envelope(broker.event_type("lost"))
    outcomes = await asyncio.wait_for(transport.publish_many([routed, lost]), WAIT)
    # A broken topology fails only the event it returns; the other is confirmed.
    assert outcomes[0] is None
    assert isinstance(outcomes[1], EventNotRoutable)
    assert (await recorder.next()).id == routed.id


async def test_delivery_cut_short_by_shutdown_is_redelivered(broker: Broker) -> None:
    event_type = broker.event_type("long.job")
    consumer = broker.consumer("replicas")
    started, release = asyncio.Event(), asyncio.Event()

    async def stuck(_: Envelope) -> None:
        started.set()
        await asyncio.wait_for(release.wait(), WAIT)

    dying = await broker.transport(close_timeout=0.1)
    await dying.subscribe(consumer, [event_type], stuck)
    sent = make_envelope(event_type)
    await asyncio.wait_for(dying.publish(sent), WAIT)
    await asyncio.wait_for(started.wait(), WAIT)

    await asyncio.wait_for(dying.close(), WAIT)
    survivor = await broker.transport()
    recorder = Recorder()
    await survivor.subscribe(consumer, [event_type], recorder)
    try:
        assert (await recorder.next()).id == sent.id
    finally:
        release.set()


async def test_shutdown_finishes_the_running_handler_and_hands_back_the_waiting_one(
    broker: Broker,
) -> None:
    """A replica told to stop while busy: the message it is handling is finished
    and acked (applied once, never redelivered); one it was given but had not yet
    started goes back to the queue and the next replica applies it."""
    event_type = broker.event_type("busy")
    consumer = broker.consumer("stopping")
    applied: list[uuid.UUID] = []
    running, waiting, finish_running = asyncio.Event(), asyncio.Event(), asyncio.Event()
    never = asyncio.Event()
    first: list[uuid.UUID] = []

    async def busy(envelope: Envelope) -> None:
        if not first:
            first.append(envelope.id)
            running.set()
            await finish_running.wait()
        else:
            # Queued behind work this replica never gets to before it stops.
            waiting.set()
            await never.wait()
        applied.append(envelope.id)

    # Both messages reach this replica before it is told to stop.
    stopping = await broker.transport(prefetch=2, close_timeout=2.0)
    await stopping.subscribe(consumer, [event_type], busy)
    one, two = make_envelope(event_type, n=1), make_envelope(event_type, n=2)
    for envelope in (one, two):
        await asyncio.wait_for(stopping.publish(envelope), WAIT)
    await asyncio.wait_for(asyncio.gather(running.wait(), waiting.wait()), WAIT)
    in_flight = first[0]
    not_started = two.id if in_flight == one.id else one.id

    closing = asyncio.create_task(stopping.close())
    await asyncio.sleep(0.3)
    assert not closing.done(), "close returned while a handler was still running"
    finish_running.set()
    await asyncio.wait_for(closing, WAIT)
    assert applied == [in_flight]

    survivor = await broker.transport()
    recorder = Recorder()
    await survivor.subscribe(consumer, [event_type], recorder)
    assert (await recorder.next()).id == not_started
    # The finished one was acked: nothing else comes, and the queue is empty.
    with pytest.raises(asyncio.TimeoutError):
        await recorder.next(timeout=1.0)
    assert await broker.depth(RabbitMQTransport.queue_name(consumer)) == 0
    assert [envelope.id for _, envelope in recorder.calls] == [not_started]


async def test_publish_before_start_fails() -> None:
    transport = RabbitMQTransport(AMQP_URL)
    assert not await transport.ready()
    with pytest.raises(PublishFailed):
        await transport.publish(make_envelope("test.not.started"))


async def test_start_is_idempotent_and_restartable(broker: Broker) -> None:
    transport = await broker.transport()
    await asyncio.wait_for(transport.start(), WAIT)
    assert await transport.ready()

    await asyncio.wait_for(transport.close(), WAIT)
    assert not await transport.ready()
    await asyncio.wait_for(transport.close(), WAIT)

    await asyncio.wait_for(transport.start(), WAIT)
    event_type = broker.event_type("restarted")
    recorder = Recorder()
    await transport.subscribe(broker.consumer("restart"), [event_type], recorder)
    sent = make_envelope(event_type)
    await asyncio.wait_for(transport.publish(sent), WAIT)
    assert (await recorder.next()).id == sent.id


async def publish_until_accepted(transport: RabbitMQTransport, envelope: Envelope) -> None:
    """What the outbox relay does: keep the row pending and try again."""

    async def attempt() -> bool:
        try:
            await transport.publish(envelope)
        except PublishFailed:
            return False
        return True

    await eventually(attempt, interval=0.2)


async def check_resumes_after(
    broker: Broker, drop: Callable[[RabbitMQTransport, str], Awaitable[None]]
) -> None:
    name = f"panthera-test-{broker.suffix}"
    transport = await broker.transport(connection_name=name)
    event_type = broker.event_type("resilient")
    recorder = Recorder()
    await transport.subscribe(broker.consumer("resilient"), [event_type], recorder)

    before = make_envelope(event_type, n=1)
    await asyncio.wait_for(transport.publish(before), WAIT)
    assert (await recorder.next()).id == before.id

    connection = transport._connection
    assert connection is not None
    reconnected = asyncio.Event()
    connection.reconnect_callbacks.add(lambda *_: reconnected.set())

    await drop(transport, name)
    await asyncio.wait_for(reconnected.wait(), WAIT)

    after = make_envelope(event_type, n=2)
    await publish_until_accepted(transport, after)
    assert (await recorder.next()).id == after.id
    assert await transport.ready()


async def test_consumer_resumes_after_the_connection_drops(broker: Broker) -> None:
    async def drop(transport: RabbitMQTransport, _: str) -> None:
        connection = transport._connection
        assert connection is not None
        assert connection.transport is not None
        # Closing aiormq's connection underneath aio-pika, without close() on
        # the robust connection, is what a dropped network looks like to it.
        await asyncio.wait_for(connection.transport.connection.close(ConnectionError()), WAIT)

    await check_resumes_after(broker, drop)


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl on PATH")
async def test_consumer_resumes_after_the_broker_closes_the_connection(broker: Broker) -> None:
    async def rabbitmqctl(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()
        return stdout.decode()

    async def drop(_: RabbitMQTransport, name: str) -> None:
        # Only this test's connection: others may share the broker.
        listing = await rabbitmqctl(
            "-q", "list_connections", "--no-table-headers", "pid", "client_properties"
        )
        pids = [line.split("\t")[0] for line in listing.splitlines() if f'"{name}"' in line]
        assert len(pids) == 1, listing
        await rabbitmqctl("close_connection", pids[0], "panthera test: forced close")

    await check_resumes_after(broker, drop)


@dataclass
class BatchRecorder:
    """A batch handler that records each batch; ``refuse`` says which envelopes fail."""

    refuse: Callable[[Envelope], bool] = lambda _envelope: False
    hold: asyncio.Event | None = None
    batches: list[list[Envelope]] = field(default_factory=list)
    applied: list[uuid.UUID] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, envelopes: Any) -> list[BaseException | None]:
        self.batches.append(list(envelopes))
        self.started.set()
        if self.hold is not None:
            await asyncio.wait_for(self.hold.wait(), WAIT)
        outcomes: list[BaseException | None] = []
        for envelope in envelopes:
            if self.refuse(envelope):
                outcomes.append(RuntimeError(f"refused {envelope.id}"))
            else:
                self.applied.append(envelope.id)
                outcomes.append(None)
        return outcomes


async def test_batches_take_what_arrived_and_settle_each_delivery_on_its_own(
    broker: Broker,
) -> None:
    transport = await broker.transport(prefetch=16, retry_delays_ms=FAST_RETRIES)
    event_type = broker.event_type("batched")
    consumer = broker.consumer("batched")
    queue = RabbitMQTransport.queue_name(consumer)
    hold = asyncio.Event()
    refused_once: set[uuid.UUID] = set()
    sent = [make_envelope(event_type, n=i) for i in range(9)]
    poison = sent[4].id

    def refuse(envelope: Envelope) -> bool:
        # Fails the first time only: its retry must come back alone, later.
        if envelope.id == poison and poison not in refused_once:
            refused_once.add(poison)
            return True
        return False

    recorder = BatchRecorder(refuse=refuse, hold=hold)
    await transport.subscribe_batch(consumer, [event_type], recorder, max_batch=5)

    # The first delivery keeps the worker busy while the others pile up.
    await asyncio.wait_for(transport.publish(sent[0]), WAIT)
    await asyncio.wait_for(recorder.started.wait(), WAIT)
    for envelope in sent[1:]:
        await asyncio.wait_for(transport.publish(envelope), WAIT)
    await asyncio.sleep(0.3)
    hold.set()

    async def all_applied() -> bool:
        return len(recorder.applied) == len(sent)

    await eventually(all_applied)
    sizes = [len(batch) for batch in recorder.batches]
    assert sizes[0] == 1
    assert max(sizes) == 5, sizes
    assert sorted(recorder.applied) == sorted(envelope.id for envelope in sent)
    # The refused one came back on its own; nothing else was seen twice.
    seen = [envelope.id for batch in recorder.batches for envelope in batch]
    assert sorted(seen) == sorted([*(envelope.id for envelope in sent), poison])
    assert recorder.batches[-1] == [next(e for e in sent if e.id == poison)]
    await asyncio.sleep(0.3)
    assert await broker.depth(queue) == 0
    assert await broker.depth(RabbitMQTransport.dead_letter_queue_name(consumer)) == 0


async def test_a_batch_handler_that_raises_retries_then_dead_letters_every_delivery(
    broker: Broker,
) -> None:
    transport = await broker.transport(max_deliveries=2, retry_delays_ms=FAST_RETRIES)
    event_type = broker.event_type("batched.doomed")
    consumer = broker.consumer("batched-doomed")
    dlq = RabbitMQTransport.dead_letter_queue_name(consumer)
    calls: list[list[uuid.UUID]] = []

    async def broken(envelopes: Any) -> list[BaseException | None]:
        calls.append([envelope.id for envelope in envelopes])
        raise RuntimeError("boom")

    await transport.subscribe_batch(consumer, [event_type], broken, max_batch=8)
    sent = [make_envelope(event_type, n=i) for i in range(3)]
    for envelope in sent:
        await asyncio.wait_for(transport.publish(envelope), WAIT)

    async def dead_lettered() -> bool:
        return (await transport.queue_depths()).get(dlq) == len(sent)

    await eventually(dead_lettered)
    tried = Counter(event_id for batch in calls for event_id in batch)
    assert tried == {envelope.id: 2 for envelope in sent}
    dead = await broker.get_one(dlq)
    assert dead.headers[CONSUMER_HEADER] == consumer
    assert "boom" in str(dead.headers[ERROR_HEADER])


async def test_a_malformed_body_in_a_batch_is_dead_lettered_and_the_rest_applied(
    broker: Broker,
) -> None:
    transport = await broker.transport()
    event_type = broker.event_type("batched.garbage")
    consumer = broker.consumer("batched-strict")
    dlq = RabbitMQTransport.dead_letter_queue_name(consumer)
    hold = asyncio.Event()
    recorder = BatchRecorder(hold=hold)
    await transport.subscribe_batch(consumer, [event_type], recorder, max_batch=8)

    first, good = make_envelope(event_type, n=1), make_envelope(event_type, n=2)
    await asyncio.wait_for(transport.publish(first), WAIT)
    await asyncio.wait_for(recorder.started.wait(), WAIT)
    async with broker.raw_channel() as channel:
        exchange = await channel.get_exchange(broker.exchange)
        await exchange.publish(aio_pika.Message(b"{not json"), routing_key=event_type)
    await asyncio.wait_for(transport.publish(good), WAIT)
    await asyncio.sleep(0.3)
    hold.set()

    async def settled() -> bool:
        return (await transport.queue_depths()).get(dlq) == 1 and len(recorder.applied) == 2

    await eventually(settled)
    assert recorder.applied == [first.id, good.id]
    assert [len(batch) for batch in recorder.batches] == [1, 1]
    assert (await broker.get_one(dlq)).body == b"{not json"


async def test_shutdown_finishes_the_batch_in_hand_and_hands_back_the_waiting_ones(
    broker: Broker,
) -> None:
    event_type = broker.event_type("batched.busy")
    consumer = broker.consumer("batched-stopping")
    hold = asyncio.Event()
    recorder = BatchRecorder(hold=hold)
    stopping = await broker.transport(prefetch=8, close_timeout=3.0)
    await stopping.subscribe_batch(consumer, [event_type], recorder, max_batch=8)
    first = make_envelope(event_type, n=0)
    await asyncio.wait_for(stopping.publish(first), WAIT)
    await asyncio.wait_for(recorder.started.wait(), WAIT)
    waiting = [make_envelope(event_type, n=i) for i in range(1, 4)]
    for envelope in waiting:
        await asyncio.wait_for(stopping.publish(envelope), WAIT)
    await asyncio.sleep(0.3)

    closing = asyncio.create_task(stopping.close())
    await asyncio.sleep(0.3)
    assert not closing.done(), "close returned while a batch was being applied"
    hold.set()
    await asyncio.wait_for(closing, WAIT)
    assert recorder.applied == [first.id]

    survivor = await broker.transport()
    after = BatchRecorder()
    await survivor.subscribe_batch(consumer, [event_type], after, max_batch=8)

    async def all_back() -> bool:
        return len(after.applied) == len(waiting)

    await eventually(all_back)
    assert sorted(after.applied) == sorted(envelope.id for envelope in waiting)
    await asyncio.sleep(0.3)
    assert await broker.depth(RabbitMQTransport.queue_name(consumer)) == 0


async def test_a_lingering_batch_gathers_what_arrives_meanwhile_and_acks_it_all(
    broker: Broker,
) -> None:
    transport = await broker.transport(prefetch=16)
    event_type = broker.event_type("batched.linger")
    consumer = broker.consumer("batched-linger")
    recorder = BatchRecorder()
    await transport.subscribe_batch(consumer, [event_type], recorder, max_batch=4, linger=2.0)

    sent = [make_envelope(event_type, n=i) for i in range(6)]
    for envelope in sent[:3]:
        await asyncio.wait_for(transport.publish(envelope), WAIT)
    await asyncio.sleep(0.3)
    # Three of four: still waiting for a fuller batch.
    assert recorder.batches == []
    started = time.monotonic()
    for envelope in sent[3:]:
        await asyncio.wait_for(transport.publish(envelope), WAIT)

    async def all_applied() -> bool:
        return len(recorder.applied) == len(sent)

    await eventually(all_applied)
    # A full batch goes at once; the rest after the linger.
    assert [len(batch) for batch in recorder.batches] == [4, 2]
    assert time.monotonic() - started >= 1.5
    assert sorted(recorder.applied) == sorted(envelope.id for envelope in sent)
    # Every delivery was acked: none comes back to the next consumer.
    await asyncio.wait_for(transport.close(), WAIT)
    survivor = await broker.transport()
    after = BatchRecorder()
    await survivor.subscribe_batch(consumer, [event_type], after, max_batch=4)
    await asyncio.sleep(0.5)
    assert after.batches == []
    assert await broker.depth(RabbitMQTransport.queue_name(consumer)) == 0
