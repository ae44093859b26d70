"""The RabbitMQ event transport: a durable topic exchange, one quorum queue per consumer.

Topology (``<x>`` is the events exchange name, ``<d>`` the dead-letter exchange,
``<p>`` the queue prefix, ``<c>`` a consumer name; by default ``<x>`` is
``panthera.events``, ``<d>`` ``panthera.dlx`` and ``<p>`` ``panthera``)::

    <x>  (topic, durable, alternate-exchange=<x>.unrouted)
      ── routing key = envelope.type ──▶ <p>.<c>                (quorum)
    <x>.unrouted (fanout) ────────────▶ <x>.unrouted            (quorum, bounded, drop-head)
    <p>.<c>.retry.<ms>  (quorum, TTL <ms>) ── expiry, default exchange ──▶ <p>.<c>
    <d> (direct) ── routing key <p>.<c>.dlq ──▶ <p>.<c>.dlq     (quorum)

A handler failure is retried by copying the message into a retry queue and
acking the original; the copy dead-letters back into the consumer queue when
its TTL runs out, carrying an ``x-panthera-attempt`` header. After
``max_deliveries`` attempts, or straight away for a body that is not an
``Envelope``, the message is published to the dead-letter exchange. The
quorum queue's ``x-delivery-limit`` is the backstop for messages that never
reach a verdict because the consumer process dies while handling them.

Queue arguments are fixed once a queue exists: RabbitMQ refuses a redeclare
with different arguments (PRECONDITION_FAILED), so changing ``max_deliveries``
for an existing consumer needs a policy or a queue migration, and changing
``retry_delays_ms`` creates new retry queues next to the old ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
    HeadersType,
)
from aio_pika.exceptions import ChannelNotFoundEntity, DeliveryError, PublishError
from aiormq.abc import DeliveredMessage

from panthera.kernel.events.envelope import Envelope
from panthera.kernel.events.transport import BatchDeliveryHandler, DeliveryHandler

logger = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-panthera-attempt"
ERROR_HEADER = "x-panthera-error"
CONSUMER_HEADER = "x-panthera-consumer"
TRACEPARENT_HEADER = "traceparent"

# Set by quorum queues on redelivery; copying it onto a republished message
# would make the next delivery count the same redeliveries twice.
_BROKER_DELIVERY_COUNT = "x-delivery-count"
_MAX_ERROR_HEADER_CHARS = 1000


class PublishFailed(Exception):
    """The broker did not durably take the event; the outbox row must stay pending."""


class EventNotRoutable(PublishFailed):
    """The broker returned the event as unroutable: the topology is misconfigured.

    With the alternate exchange in place this never means "no consumer yet";
    it means even ``<exchange>.unrouted`` is missing or unbound.
    """


@dataclass(eq=False)
class _Batching:
    """Deliveries waiting for a subscription's one worker, which applies them in batches."""

    handler: BatchDeliveryHandler
    max_batch: int
    linger: float = 0.0
    waiting: list[AbstractIncomingMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once a whole batch is waiting (or on shutdown): ends a linger early.
    full: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    stopping: bool = False
    # Channels a batch failed on unexpectedly, possibly leaving deliveries
    # unsettled: a multiple ack there would settle them unapplied.
    stranded: list[Any] = field(default_factory=list)


@dataclass(eq=False)
class _Subscription:
    consumer: str
    handler: DeliveryHandler | None
    channel: AbstractRobustChannel
    queue: AbstractRobustQueue
    dead_letter_exchange: AbstractRobustExchange
    consumer_tag: str = ""
    retry_queues: dict[int, str] = field(default_factory=dict)
    batching: _Batching | None = None


class RabbitMQTransport:
    """An :class:`~panthera.kernel.events.transport.EventTransport` on RabbitMQ (aio-pika).

    ``exchange`` is the topic exchange events go through; its alternate
    exchange and overflow queue are both named ``<exchange>.unrouted``.
    Consumer queues are named ``<queue_prefix>.<consumer>``: deployments sharing
    a vhost keep apart with their own exchange names and prefix. ``prefetch``
    bounds unacked deliveries, hence concurrent handler calls, per subscription.
    ``max_deliveries`` is how many times a handler sees one event before it is
    dead-lettered; attempt ``n`` that fails waits ``retry_delays_ms[n - 1]``
    (the last delay repeats). ``publish_timeout`` bounds every broker round
    trip the transport makes: publishing, retry and dead-letter copies and
    ``queue_depths``. ``close_timeout`` is how long ``close`` waits for running
    handlers.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "panthera.events",
        prefetch: int = 32,
        max_deliveries: int = 5,
        retry_delays_ms: tuple[int, ...] = (1000, 5000, 30000),
        dead_letter_exchange: str = "panthera.dlx",
        queue_prefix: str = "panthera",
        unrouted_max_length: int = 100_000,
        connection_name: str | None = None,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        reconnect_interval: float = 2.0,
        close_timeout: float = 10.0,
    ) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if not retry_delays_ms or any(delay <= 0 for delay in retry_delays_ms):
            raise ValueError("retry_delays_ms must be a non-empty tuple of positive delays")
        if unrouted_max_length < 1:
            raise ValueError("unrouted_max_length must be at least 1")
        if not queue_prefix:
            raise ValueError("queue_prefix must not be empty")
        self._url = url
        self._exchange_name = exchange
        self._unrouted_name = f"{exchange}.unrouted"
        self._dlx_name = dead_letter_exchange
        self._queue_prefix = queue_prefix
        self._prefetch = prefetch
        self._max_deliveries = max_deliveries
        self._retry_delays_ms = retry_delays_ms
        self._unrouted_max_length = unrouted_max_length
        self._connection_name = connection_name
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._reconnect_interval = reconnect_interval
        self._close_timeout = close_timeout

        self._lock = asyncio.Lock()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractRobustExchange | None = None
        self._subscriptions: list[_Subscription] = []
        self._inflight: set[asyncio.Task[Any]] = set()

    # -- naming ---------------------------------------------------------------

    # Static so callers can name queues without a transport at hand; an instance
    # passes its own ``queue_prefix``.

    @staticmethod
    def queue_name(consumer: str, prefix: str = "panthera") -> str:
        """The durable queue shared by every replica of ``consumer``."""
        return f"{prefix}.{consumer}"

    @staticmethod
    def dead_letter_queue_name(consumer: str, prefix: str = "panthera") -> str:
        """Where ``consumer``'s poison and malformed messages end up."""
        return f"{prefix}.{consumer}.dlq"

    @staticmethod
    def retry_queue_name(consumer: str, delay_ms: int, prefix: str = "panthera") -> str:
        """The queue that holds ``consumer``'s failed messages for ``delay_ms``."""
        return f"{prefix}.{consumer}.retry.{delay_ms}"

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect, open a confirming channel and declare the exchanges; idempotent."""
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed:
                return
            client_properties: dict[str, Any] | None = (
                {"connection_name": self._connection_name} if self._connection_name else None
            )
            connection = await aio_pika.connect_robust(
                self._url,
                timeout=self._connect_timeout,
                client_properties=client_properties,
                reconnect_interval=self._reconnect_interval,
            )
            try:
                # on_return_raises turns a Basic.Return into an exception on the
                # publish call itself instead of a callback we would have to
                # correlate with the waiting publisher.
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                await self._declare_unrouted(channel)
                self._exchange, _ = await self._declare_exchanges(channel)
            except BaseException:
                await connection.close()
                raise
            self._connection = connection
            self._channel = channel

    async def close(self) -> None:
        """Stop consuming, let running handlers finish (bounded), then disconnect."""
        async with self._lock:
            connection = self._connection
            if connection is None:
                return
            subscriptions, self._subscriptions = self._subscriptions, []
            for sub in subscriptions:
                if not sub.consumer_tag:
                    continue
                try:
                    # Bounded because a robust channel waits for a reconnect
                    # that may never come while the broker is down.
                    await asyncio.wait_for(
                        sub.queue.cancel(sub.consumer_tag), timeout=self._close_timeout
                    )
                except Exception:
                    logger.warning("could not cancel consumer %s cleanly", sub.consumer)
            current = asyncio.current_task()
            pending = {task for task in self._inflight if task is not current}
            for sub in subscriptions:
                batching = sub.batching
                if batching is not None and batching.worker is not None:
                    # The worker finishes the batch in hand and takes no other;
                    # deliveries still waiting are unacked and come back.
                    batching.stopping = True
                    batching.arrived.set()
                    batching.full.set()
                    if batching.worker is not current:
                        pending.add(batching.worker)
            if pending:
                # Unacked messages come back after the connection closes, so a
                # handler cut short is redelivered rather than lost; waiting
                # just avoids needless redeliveries on a normal shutdown.
                _, still_running = await asyncio.wait(pending, timeout=self._close_timeout)
                if still_running:
                    logger.warning(
                        "cancelling %d event handlers still running at close; "
                        "their messages will be redelivered",
                        len(still_running),
                    )
                    # Cancelled rather than left running: a handler finishing
                    # after its delivery went back to the queue would apply
                    # the event concurrently with its redelivery.
                    for task in still_running:
                        task.cancel()
                    # Bounded again: a handler may swallow the cancellation.
                    await asyncio.wait(still_running, timeout=self._close_timeout)
            self._connection = None
            self._channel = None
            self._exchange = None
            await connection.close()

    async def ready(self) -> bool:
        """Whether the connection and the publishing channel are open right now."""
        connection, channel = self._connection, self._channel
        if connection is None or channel is None or connection.is_closed:
            return False
        return connection.connected.is_set() and not channel.is_closed

    # -- publishing -----------------------------------------------------------

    async def publish(self, envelope: Envelope) -> None:
        """Publish ``envelope`` with routing key ``envelope.type``; return once confirmed.

        Raises :class:`EventNotRoutable` if the broker returns the message and
        :class:`PublishFailed` on a nack, a timeout or a lost connection.
        """
        (outcome,) = await self.publish_many([envelope])
        if outcome is not None:
            raise outcome

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[PublishFailed | None]:
        """Publish ``envelopes`` in order and wait for all their confirms together.

        One outcome per envelope, in order: None once the broker confirmed it,
        else the :class:`PublishFailed` (or :class:`EventNotRoutable`) that
        ``publish`` would have raised. Waiting for each confirm before sending
        the next would cost a broker round trip per event.
        """
        channel, exchange = self._channel, self._exchange
        if channel is None or exchange is None:
            failed = PublishFailed("RabbitMQ transport is not started")
            return [failed] * len(envelopes)
        try:
            async with asyncio.timeout(self._publish_timeout):
                # Rides out a short reconnect instead of failing the relay's
                # batch; the timeout bounds how long the relay can be held.
                await channel.ready()
        except Exception as exc:
            failed = PublishFailed(f"could not publish {len(envelopes)} events: {exc!r}")
            return [failed] * len(envelopes)
        if len(envelopes) == 1:
            return [await self._publish_confirmed(exchange, envelopes[0])]
        # The channel's lock sends them in the order the tasks reach it, which
        # is the order given; each then waits for its own confirm.
        return list(
            await asyncio.gather(
                *(self._publish_confirmed(exchange, envelope) for envelope in envelopes)
            )
        )

    async def _publish_confirmed(
        self, exchange: AbstractRobustExchange, envelope: Envelope
    ) -> PublishFailed | None:
        headers: HeadersType = {}
        if envelope.traceparent:
            headers[TRACEPARENT_HEADER] = envelope.traceparent
        message = aio_pika.Message(
            envelope.to_bytes(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(envelope.id),
            type=envelope.type,
            timestamp=envelope.occurred_at,
            app_id=envelope.source,
            headers=headers,
        )
        try:
            async with asyncio.timeout(self._publish_timeout):
                result = await exchange.publish(message, routing_key=envelope.type, mandatory=True)
        except PublishError as exc:
            return _cause(
                EventNotRoutable(
                    f"broker returned event {envelope.id} ({envelope.type}) as unroutable "
                    f"from exchange {self._exchange_name!r}"
                ),
                exc,
            )
        except DeliveryError as exc:
            return _cause(
                PublishFailed(f"broker refused event {envelope.id} ({envelope.type}): {exc}"), exc
            )
        except TimeoutError as exc:
            return _cause(
                PublishFailed(
                    f"no confirmation for event {envelope.id} ({envelope.type}) "
                    f"within {self._publish_timeout}s"
                ),
                exc,
            )
        except Exception as exc:
            return _cause(
                PublishFailed(f"could not publish event {envelope.id} ({envelope.type})"), exc
            )
        # Defensive: with on_return_raises a return arrives as PublishError,
        # and without confirms there would be no result at all.
        if isinstance(result, DeliveredMessage):
            return EventNotRoutable(f"broker returned event {envelope.id} ({envelope.type})")
        if result is None:
            return PublishFailed(f"no publisher confirm for event {envelope.id} ({envelope.type})")
        return None

    # -- consuming ------------------------------------------------------------

    async def subscribe(
        self, consumer: str, event_types: Iterable[str], handler: DeliveryHandler
    ) -> None:
        """Deliver every future envelope of ``event_types`` to ``handler`` as ``consumer``.

        Declares the consumer's quorum queue, retry queues and dead-letter
        queue, binds each event type (topic patterns such as ``order.*`` work)
        and starts consuming with manual acks. Subscribing the same
        ``consumer`` twice, here or in another replica, adds a competing
        consumer on the same queue. Bindings are only ever added: an event type
        dropped from the list keeps arriving until its binding is removed.
        """
        await self._subscribe(consumer, event_types, handler, None)

    async def subscribe_batch(
        self,
        consumer: str,
        event_types: Iterable[str],
        handler: BatchDeliveryHandler,
        *,
        max_batch: int,
        linger: float = 0.0,
    ) -> None:
        """As ``subscribe``, handing ``handler`` what has arrived, up to ``max_batch`` at a time.

        One worker per subscription applies one batch after the other, each
        delivery acked, retried or dead-lettered on its own according to the
        outcome the handler gives for it. Deliveries arriving while a batch is
        applied (up to ``prefetch`` unacked) make up the next one. With
        ``linger`` (seconds) the worker, handed fewer than ``max_batch``, waits
        that long for more before it applies them.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if linger < 0:
            raise ValueError("linger must not be negative")
        await self._subscribe(
            consumer,
            event_types,
            None,
            _Batching(handler=handler, max_batch=max_batch, linger=linger),
        )

    async def _subscribe(
        self,
        consumer: str,
        event_types: Iterable[str],
        handler: DeliveryHandler | None,
        batching: _Batching | None,
    ) -> None:
        types = list(dict.fromkeys(event_types))
        if not consumer:
            raise ValueError("consumer name must not be empty")
        if not types:
            raise ValueError("subscribe needs at least one event type")
        connection = self._connection
        if connection is None or connection.is_closed:
            raise RuntimeError("RabbitMQ transport is not started; call start() first")

        # One channel per subscription so prefetch bounds each consumer on its
        # own and a channel-level error in one does not stall the others.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            await channel.set_qos(prefetch_count=self._prefetch)
            queue, dlx, retry_queues = await self._declare_consumer(channel, consumer, types)
            subscription = _Subscription(
                consumer=consumer,
                handler=handler,
                channel=channel,
                queue=queue,
                dead_letter_exchange=dlx,
                batching=batching,
            )
            subscription.retry_queues.update(retry_queues)

            async def on_message(message: AbstractIncomingMessage) -> None:
                await self._on_message(subscription, message)

            async def on_batched_message(message: AbstractIncomingMessage) -> None:
                assert batching is not None
                batching.waiting.append(message)
                batching.arrived.set()
                if len(batching.waiting) >= batching.max_batch:
                    batching.full.set()

            if batching is not None:
                batching.worker = asyncio.create_task(
                    self._batch_worker(subscription, batching),
                    name=f"rabbitmq-batches-{consumer}",
                )
            subscription.consumer_tag = await queue.consume(
                on_message if batching is None else on_batched_message, no_ack=False
            )
        except BaseException:
            if batching is not None and batching.worker is not None:
                batching.worker.cancel()
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        self._subscriptions.append(subscription)
        logger.info("consuming %s for event types %s", queue.name, ", ".join(types))

    async def declare(self, consumer: str, event_types: Iterable[str]) -> None:
        """Declare and bind ``consumer``'s queues without consuming from them.

        A one-shot command that publishes before the long-running processes
        ever started would otherwise find no queue bound for its events, and
        the broker would set them aside as unroutable.
        """
        types = list(dict.fromkeys(event_types))
        connection = self._connection
        if connection is None or connection.is_closed:
            raise RuntimeError("RabbitMQ transport is not started; call start() first")
        channel = await connection.channel(publisher_confirms=False)
        try:
            await self._declare_consumer(channel, consumer, types)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _declare_consumer(
        self, channel: AbstractRobustChannel, consumer: str, types: list[str]
    ) -> tuple[AbstractRobustQueue, AbstractRobustExchange, dict[int, str]]:
        """The consumer's queue (bound to ``types``), its dead-letter exchange and retry queues."""
        # Declared on this channel too so that after a reconnect it can
        # restore its bindings whichever channel aio-pika restores first.
        exchange, dlx = await self._declare_exchanges(channel)
        queue_name = self.queue_name(consumer, self._queue_prefix)
        dlq_name = self.dead_letter_queue_name(consumer, self._queue_prefix)

        dlq = await channel.declare_queue(
            dlq_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(dlx, routing_key=dlq_name)

        queue = await channel.declare_queue(
            queue_name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                # RabbitMQ 3.x has no default limit; without one a message
                # that kills the consumer would be redelivered forever.
                "x-delivery-limit": self._max_deliveries,
                "x-dead-letter-exchange": self._dlx_name,
                "x-dead-letter-routing-key": dlq_name,
                # At-most-once (the default) drops the message if the DLQ
                # is unavailable at that moment; at-least-once requires
                # reject-publish overflow, which is inert without a length limit.
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        for event_type in types:
            await queue.bind(exchange, routing_key=event_type)

        retry_queues: dict[int, str] = {}
        for delay_ms in dict.fromkeys(self._retry_delays_ms):
            retry_name = self.retry_queue_name(consumer, delay_ms, self._queue_prefix)
            await channel.declare_queue(
                retry_name,
                durable=True,
                arguments={
                    # Quorum so a waiting retry survives losing a node;
                    # one TTL per queue keeps expiry in FIFO order.
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay_ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": queue_name,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
            retry_queues[delay_ms] = retry_name
        return queue, dlx, retry_queues

    async def _on_message(self, sub: _Subscription, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self._process(sub, message)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _process(self, sub: _Subscription, message: AbstractIncomingMessage) -> None:
        try:
            envelope = Envelope.from_bytes(message.body)
        except ValueError as exc:
            # Retrying cannot fix a body that does not parse.
            logger.error(
                "malformed event on %s (message_id=%s): %s; dead-lettering",
                sub.queue.name,
                message.message_id,
                exc,
            )
            await self._dead_letter(sub, message, f"malformed envelope: {exc}")
            return

        assert sub.handler is not None
        try:
            await sub.handler(envelope)
        except Exception as exc:
            await self._failed(sub, message, envelope, exc)
            return
        await self._settle(message.ack(), sub, message, "ack")

    async def _batch_worker(self, sub: _Subscription, batching: _Batching) -> None:
        while not batching.stopping:
            await batching.arrived.wait()
            if batching.stopping:
                return
            if batching.linger and len(batching.waiting) < batching.max_batch:
                # A consumer off the critical path trades a little latency for
                # fewer, larger transactions: each costs a round trip per
                # statement and a commit, whatever the batch holds.
                batching.full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(batching.linger):
                        await batching.full.wait()
                if batching.stopping:
                    return
            batch = batching.waiting[: batching.max_batch]
            del batching.waiting[: batching.max_batch]
            if not batching.waiting:
                batching.arrived.clear()
            if not batch:
                continue
            try:
                await self._process_batch(sub, batching, batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Unsettled deliveries stay unacked and come back on the next
                # connection; the worker must go on with the others meanwhile.
                logger.exception("applying a batch from %s failed", sub.queue.name)
                for message in batch:
                    with contextlib.suppress(Exception):
                        if message.channel not in batching.stranded:
                            batching.stranded.append(message.channel)

    async def _process_batch(
        self,
        sub: _Subscription,
        batching: _Batching,
        batch: Sequence[AbstractIncomingMessage],
    ) -> None:
        parsed: list[tuple[AbstractIncomingMessage, Envelope]] = []
        for message in batch:
            try:
                parsed.append((message, Envelope.from_bytes(message.body)))
            except ValueError as exc:
                logger.error(
                    "malformed event on %s (message_id=%s): %s; dead-lettering",
                    sub.queue.name,
                    message.message_id,
                    exc,
                )
                await self._dead_letter(sub, message, f"malformed envelope: {exc}")
        if not parsed:
            return
        outcomes: Sequence[BaseException | None]
        try:
            outcomes = await batching.handler([envelope for _, envelope in parsed])
        except Exception as exc:
            outcomes = [exc] * len(parsed)
        if len(outcomes) != len(parsed):
            mismatch = RuntimeError(
                f"batch handler gave {len(outcomes)} outcomes for {len(parsed)} events"
            )
            outcomes = [mismatch] * len(parsed)
        if all(outcome is None for outcome in outcomes) and _one_channel(parsed, batching):
            # Every earlier delivery on this channel is settled already (batches
            # are taken and settled in delivery order), so one ack up to the
            # last covers the batch: one frame instead of one per event.
            last = parsed[-1][0]
            await self._settle(last.ack(multiple=True), sub, last, "ack")
            return
        for (message, envelope), outcome in zip(parsed, outcomes, strict=True):
            if outcome is None:
                await self._settle(message.ack(), sub, message, "ack")
            else:
                await self._failed(sub, message, envelope, outcome)

    async def _failed(
        self,
        sub: _Subscription,
        message: AbstractIncomingMessage,
        envelope: Envelope,
        exc: BaseException,
    ) -> None:
        """Retry the delivery later, or dead-letter it once it has had its attempts."""
        attempt = _attempt(message.headers)
        if attempt >= self._max_deliveries:
            logger.error(
                "handler %s failed on event %s (%s), attempt %d of %d; dead-lettering",
                sub.consumer,
                envelope.id,
                envelope.type,
                attempt,
                self._max_deliveries,
                exc_info=exc,
            )
            await self._dead_letter(sub, message, _describe(exc), attempt=attempt)
        else:
            delay_ms = self._retry_delays_ms[min(attempt, len(self._retry_delays_ms)) - 1]
            logger.warning(
                "handler %s failed on event %s (%s), attempt %d of %d; retrying in %d ms",
                sub.consumer,
                envelope.id,
                envelope.type,
                attempt,
                self._max_deliveries,
                delay_ms,
                exc_info=exc,
            )
            await self._retry(sub, message, attempt + 1, delay_ms)

    async def _retry(
        self, sub: _Subscription, message: AbstractIncomingMessage, next_attempt: int, delay: int
    ) -> None:
        # A copy plus an ack rather than nack-with-requeue: requeueing would
        # redeliver immediately with no backoff and burn the broker's
        # delivery limit, which is reserved for consumers that crash.
        headers = _copy_headers(message.headers)
        headers[ATTEMPT_HEADER] = next_attempt
        try:
            await sub.channel.default_exchange.publish(
                _copy_message(message, headers),
                routing_key=sub.retry_queues[delay],
                mandatory=True,
                timeout=self._publish_timeout,
            )
        except Exception:
            logger.exception(
                "could not schedule retry of message %s on %s; requeueing",
                message.message_id,
                sub.queue.name,
            )
            await self._settle(message.nack(requeue=True), sub, message, "nack")
            return
        await self._settle(message.ack(), sub, message, "ack")

    async def _dead_letter(
        self,
        sub: _Subscription,
        message: AbstractIncomingMessage,
        reason: str,
        *,
        attempt: int | None = None,
    ) -> None:
        # Published explicitly, not rejected into the queue's dead-lettering,
        # so the DLQ copy says which consumer gave up and why, and lands
        # there under a publisher confirm.
        headers = _copy_headers(message.headers)
        headers[ERROR_HEADER] = reason[:_MAX_ERROR_HEADER_CHARS]
        headers[CONSUMER_HEADER] = sub.consumer
        if attempt is not None:
            headers[ATTEMPT_HEADER] = attempt
        try:
            await sub.dead_letter_exchange.publish(
                _copy_message(message, headers),
                routing_key=self.dead_letter_queue_name(sub.consumer, self._queue_prefix),
                mandatory=True,
                timeout=self._publish_timeout,
            )
        except Exception:
            # Requeued, so the message is not lost; should this keep failing,
            # the queue's delivery limit dead-letters it through the broker.
            logger.exception(
                "could not dead-letter message %s from %s; requeueing",
                message.message_id,
                sub.queue.name,
            )
            await self._settle(message.nack(requeue=True), sub, message, "nack")
            return
        await self._settle(message.ack(), sub, message, "ack")

    @staticmethod
    async def _settle(
        action: Awaitable[None], sub: _Subscription, message: AbstractIncomingMessage, verb: str
    ) -> None:
        try:
            await action
        except Exception:
            # The channel this delivery came on is gone (reconnect, close):
            # the broker already put the message back, so it is redelivered.
            logger.warning(
                "could not %s message %s on %s; the broker will redeliver it",
                verb,
                message.message_id,
                sub.queue.name,
                exc_info=True,
            )

    # -- metrics --------------------------------------------------------------

    async def queue_depths(self) -> dict[str, int]:
        """Ready-message counts of each subscribed consumer queue and its DLQ.

        Uses passive declares on a short-lived channel; a queue that has
        disappeared is left out of the result rather than failing the scrape.
        Raises ``TimeoutError`` if the broker does not answer within
        ``publish_timeout`` (for instance while reconnecting).
        """
        connection = self._connection
        if connection is None or connection.is_closed:
            raise RuntimeError("RabbitMQ transport is not started; call start() first")
        names: list[str] = []
        for consumer in dict.fromkeys(sub.consumer for sub in self._subscriptions):
            names += [
                self.queue_name(consumer, self._queue_prefix),
                self.dead_letter_queue_name(consumer, self._queue_prefix),
            ]
        if not names:
            return {}
        async with asyncio.timeout(self._publish_timeout):
            return await self._passive_counts(connection, names)

    @staticmethod
    async def _passive_counts(
        connection: AbstractRobustConnection, names: list[str]
    ) -> dict[str, int]:
        depths: dict[str, int] = {}
        channel = await connection.channel(publisher_confirms=False)
        try:
            for name in names:
                # The aiormq channel directly: aio-pika's passive declare_queue
                # returns its cached queue object with a stale count.
                underlay = await channel.get_underlay_channel()
                try:
                    declared = await underlay.queue_declare(name, passive=True)
                except ChannelNotFoundEntity:
                    logger.warning("queue %s does not exist", name)
                    # A failed passive declare closes the channel.
                    await channel.close()
                    channel = await connection.channel(publisher_confirms=False)
                    continue
                depths[name] = int(declared.message_count or 0)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return depths

    # -- helpers --------------------------------------------------------------

    async def _declare_unrouted(self, channel: AbstractRobustChannel) -> None:
        # An event type nobody consumes yet is normal, yet the publish is
        # mandatory so a broken topology is not silently swallowed. The
        # alternate exchange reconciles the two: unbound events land in a
        # bounded queue (oldest dropped first) and the publish succeeds, so a
        # Basic.Return means the alternate exchange or its queue is missing.
        unrouted_exchange = await channel.declare_exchange(
            self._unrouted_name, aio_pika.ExchangeType.FANOUT, durable=True
        )
        unrouted_queue = await channel.declare_queue(
            self._unrouted_name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-max-length": self._unrouted_max_length,
                "x-overflow": "drop-head",
            },
        )
        await unrouted_queue.bind(unrouted_exchange)

    async def _declare_exchanges(
        self, channel: AbstractRobustChannel
    ) -> tuple[AbstractRobustExchange, AbstractRobustExchange]:
        exchange = await channel.declare_exchange(
            self._exchange_name,
            aio_pika.ExchangeType.TOPIC,
            durable=True,
            arguments={"alternate-exchange": self._unrouted_name},
        )
        dlx = await channel.declare_exchange(
            self._dlx_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        return exchange, dlx


def _attempt(headers: HeadersType) -> int:
    """Which delivery of the event this is, counting from 1."""
    attempt = _int_header(headers, ATTEMPT_HEADER, default=1)
    # Redeliveries after a consumer died mid-handler count as attempts too.
    redeliveries = _int_header(headers, _BROKER_DELIVERY_COUNT, default=0)
    return max(attempt, 1) + max(redeliveries, 0)


def _int_header(headers: HeadersType, name: str, *, default: int) -> int:
    value = headers.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str | bytes):
        with contextlib.suppress(ValueError):
            return int(value)
    return default


def _copy_headers(headers: HeadersType) -> HeadersType:
    return {key: value for key, value in headers.items() if key != _BROKER_DELIVERY_COUNT}


def _copy_message(message: AbstractIncomingMessage, headers: HeadersType) -> aio_pika.Message:
    return aio_pika.Message(
        message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        headers=headers,
    )


def _one_channel(
    parsed: Sequence[tuple[AbstractIncomingMessage, Envelope]], batching: _Batching
) -> bool:
    """Whether one multiple ack of the last delivery settles exactly these deliveries.

    After a reconnect a batch may mix deliveries of the old channel (whose acks
    fail, and which the broker redelivers) with those of the new one.
    """
    try:
        first = parsed[0][0].channel
        if any(first is channel for channel in batching.stranded):
            return False
        return all(message.channel is first for message, _ in parsed)
    except Exception:
        # A closed channel raises on access: settle one by one, as before.
        return False


def _cause(error: PublishFailed, cause: BaseException) -> PublishFailed:
    error.__cause__ = cause
    return error


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


__all__ = ["EventNotRoutable", "PublishFailed", "RabbitMQTransport"]
