"""The port every event transport implements: embedded (in-process) or a broker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from panthera.kernel.events.envelope import Envelope

# Applies one delivered envelope. Raising means "not applied": the transport
# redelivers later (bounded), then dead-letters it.
DeliveryHandler = Callable[[Envelope], Awaitable[None]]

# Applies several delivered envelopes and says, for each in order, whether it
# was applied (None) or why not; the transport settles each on its own.
BatchDeliveryHandler = Callable[[Sequence[Envelope]], Awaitable[Sequence[BaseException | None]]]


class EventTransport(Protocol):
    """Moves envelopes from a service's relay to other services' consumers."""

    async def start(self) -> None:
        """Connect and declare what the transport needs; idempotent."""

    async def close(self) -> None:
        """Stop consuming and release connections."""

    async def publish(self, envelope: Envelope) -> None:
        """Hand one envelope over; return only once the transport has taken it durably.

        Raises on failure, so the caller's outbox row stays pending.
        """

    async def publish_many(self, envelopes: Sequence[Envelope]) -> Sequence[BaseException | None]:
        """Hand several envelopes over, in order; for each, None once taken durably, else why not.

        Returns only once every one has its outcome, as ``publish`` would.
        """

    async def subscribe(
        self, consumer: str, event_types: Iterable[str], handler: DeliveryHandler
    ) -> None:
        """Deliver every future envelope of ``event_types`` to ``handler`` as ``consumer``.

        One ``consumer`` name is one durable queue: replicas of a service share it.
        """

    async def subscribe_batch(
        self,
        consumer: str,
        event_types: Iterable[str],
        handler: BatchDeliveryHandler,
        *,
        max_batch: int,
        linger: float = 0.0,
    ) -> None:
        """As ``subscribe``, handing ``handler`` up to ``max_batch`` envelopes at a time.

        An envelope is settled only after the handler has returned its outcome.
        ``linger`` is how long, in seconds, a transport that batches may wait for
        a fuller batch before handing over what it has.
        """

    async def ready(self) -> bool:
        """Whether the transport can publish now (for ``/readyz``)."""
