"""The in-process transport of the embedded shape."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

from panthera.kernel.events.envelope import Envelope
from panthera.kernel.events.transport import BatchDeliveryHandler, DeliveryHandler

log = logging.getLogger("panthera.events")


class ConsumerFailed(Exception):
    """One or more consumers could not apply an event; the outbox row is retried."""


class EmbeddedTransport:
    """Delivers each envelope straight to the subscribed consumers in this process.

    Durability comes from the publisher's outbox: ``publish`` returns only after
    every consumer has applied the event (each in its own transaction, recorded in
    its inbox), so a crash before that leaves the outbox row pending and the relay
    delivers it again; inboxes turn the repeat into a no-op.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[str, DeliveryHandler]]] = defaultdict(list)
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def close(self) -> None:
        self._started = False

    async def ready(self) -> bool:
        return self._started

    async def subscribe(
        self, consumer: str, event_types: Iterable[str], handler: DeliveryHandler
    ) -> None:
        for event_type in event_types:
            self._handlers[event_type].append((consumer, handler))

    async def subscribe_batch(
        self,
        consumer: str,
        event_types: Iterable[str],
        handler: BatchDeliveryHandler,
        *,
        max_batch: int,
        linger: float = 0.0,
    ) -> None:
        # The publisher hands over one envelope at a time and waits for it to be
        # applied, so there is never more than one to give a consumer (nor
        # anything to linger for).
        async def one(envelope: Envelope) -> None:
            (outcome,) = await handler([envelope])
            if outcome is not None:
                raise outcome

        await self.subscribe(consumer, event_types, one)

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        # One after the other: each is applied by its consumers before it returns.
        outcomes: list[BaseException | None] = []
        for envelope in envelopes:
            try:
                await self.publish(envelope)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

    async def publish(self, envelope: Envelope) -> None:
        subscribers = self._handlers.get(envelope.type, [])
        if not subscribers:
            return
        results = await asyncio.gather(
            *(handler(envelope) for _, handler in subscribers), return_exceptions=True
        )
        failed: list[str] = []
        for (consumer, _), result in zip(subscribers, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(f"{consumer}: {result!r}")
                log.warning(
                    "consumer failed to apply event",
                    exc_info=result,
                    extra={"consumer": consumer, "event_id": str(envelope.id)},
                )
        if failed:
            raise ConsumerFailed(
                f"{envelope.type} {envelope.id} not applied by " + "; ".join(failed)
            )
