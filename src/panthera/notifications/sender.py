"""The sender loop: hands queued deliveries to their channels and retries failures.

A message queued by this process's consumer is queued already leased to it (its
``next_attempt_at`` past the sends' timeout) and is taken up as soon as that
transaction commits. Others (retries, resends, leases a dead sender left) fall
due: a batch of them is leased by one ``UPDATE ... RETURNING``. Either way the
batch is sent outside any transaction, then recorded together in one
transaction. Replicas lease with ``FOR UPDATE SKIP LOCKED`` so each message goes
to one sender; a sender that dies before recording leaves the lease to expire
and the batch it held is sent again later: at least once, with the same
``Message-ID``, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any, cast

from prometheus_client import Counter
from sqlalchemy import Table, bindparam, select, update

from panthera.kernel.sql import Sql, Transaction, among, json_column
from panthera.notifications.channels import PermanentFailure, build_message
from panthera.notifications.models import Channel, Delivery, DeliveryStatus
from panthera.notifications.service import NotificationsDeps

log = logging.getLogger("panthera.notifications")

# A message the batch's joint hand-over left to be sent on its own.
_NOT_SENT: Any = object()

MESSAGES = Counter(
    "panthera_notifications_messages_total",
    "Attempts to send a message, by channel and outcome (sent, retry, failed).",
    ["channel", "outcome"],
)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 5.0
    max_seconds: float = 3600.0
    # How long a leased message is left to its sender before another may take it.
    lease_seconds: float = 120.0

    def delay(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        # Not a secret: spreading retries needs no cryptographic randomness.
        return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))


@dataclass(frozen=True)
class Outgoing:
    """What sending one leased message and recording its outcome take."""

    id: uuid.UUID
    channel: str
    recipient: str
    subject: str
    content: dict[str, Any]
    attempts: int
    created_at: datetime
    # Past it another sender may take the message up: this one must not send it.
    lease_until: datetime

    @classmethod
    def of(cls, row: Any, lease_until: datetime) -> Outgoing:
        """From a delivery's row: a mapping, or a row of the statements below (SQLAlchemy's,
        by name through its mapping, or the driver's)."""
        get = getattr(row, "_mapping", row).__getitem__
        return cls(
            id=get("id"),
            channel=get("channel"),
            recipient=get("recipient"),
            subject=get("subject"),
            content=json_column(get("content")),
            attempts=get("attempts"),
            created_at=get("created_at"),
            lease_until=lease_until,
        )


_DELIVERIES = cast(Table, Delivery.__table__)
_c = _DELIVERIES.c
# By whether the statements run on PostgreSQL.
_RECORD_SENT = {
    postgres: update(_DELIVERIES)
    .where(among(_c.id, "ids", postgres))
    .values(
        status=DeliveryStatus.SENT.value,
        attempts=_c.attempts + 1,
        sent_at=bindparam("at", type_=_c.sent_at.type),
        next_attempt_at=None,
        last_error=None,
    )
    for postgres in (True, False)
}
_RECORD_FAILED = (
    update(_DELIVERIES)
    .where(_c.id == bindparam("delivery_id"))
    .values(
        status=bindparam("new_status"),
        attempts=bindparam("new_attempts"),
        next_attempt_at=bindparam("due", type_=_c.next_attempt_at.type),
        last_error=bindparam("error"),
    )
)


class DeliverySender:
    """Sends due deliveries in the background; ``send_due`` does one batch on demand."""

    def __init__(
        self,
        *,
        transactions: Callable[[], Transaction],
        deps: NotificationsDeps,
        policy: RetryPolicy,
        skip_locked: bool,
        poll_seconds: float = 1.0,
        # As many as one consuming transaction queues (its batch of 32 events).
        batch_size: int = 32,
    ) -> None:
        self._transactions = transactions
        self._deps = deps
        self._policy = policy
        self._skip_locked = skip_locked
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # One batch at a time in this process: ``drain`` then also waits for the
        # batch the loop holds, rather than finding its leased rows not due.
        self._sending = asyncio.Lock()
        # Queued here, leased to this process, and not sent yet.
        self._taken_up: list[Outgoing] = []
        self._polled_at = -float("inf")
        # Built once: the due messages, oldest first, leased and read in one statement;
        # replicas skip each other's locked rows, so each message goes to one sender.
        due = (
            select(_c.id)
            .where(
                _c.status == DeliveryStatus.QUEUED.value,
                _c.next_attempt_at <= bindparam("now", type_=_c.next_attempt_at.type),
            )
            .order_by(_c.next_attempt_at)
            .limit(batch_size)
        )
        if skip_locked:
            due = due.with_for_update(skip_locked=True)
        self._lease_due = (
            update(_DELIVERIES)
            .where(_c.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=bindparam("until", type_=_c.next_attempt_at.type))
            .returning(
                _c.id, _c.channel, _c.recipient, _c.subject, _c.content, _c.attempts, _c.created_at
            )
        )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self._policy.lease_seconds)

    def wake(self) -> None:
        """Messages were queued: send them now rather than at the next poll."""
        self._wakeup.set()

    def take_up(self, deliveries: Sequence[Mapping[str, Any]]) -> None:
        """Send these messages (their rows), queued leased to this process by a committed
        transaction."""
        for delivery in deliveries:
            if delivery["next_attempt_at"] is not None:
                self._taken_up.append(Outgoing.of(delivery, delivery["next_attempt_at"]))
        self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="notifications-sender")

    async def stop(self) -> None:
        if self._task is not None:
            # The flag ends the loop even if the cancellation is lost in a race
            # with a wake-up, which would otherwise leave this await hanging.
            self._stopping = True
            self._wakeup.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                busy = await self.send_due() >= self._batch_size or bool(self._taken_up)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sending notifications failed")
                busy = False
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wakeup.wait()
            self._wakeup.clear()

    async def drain(self, rounds: int = 50) -> None:
        """Send everything due now (for tests and one-shot commands)."""
        for _ in range(rounds):
            if not await self.send_due():
                return

    async def send_due(self) -> int:
        """Lease, send and record one batch of due messages; how many were tried."""
        async with self._sending:
            return await self._send_batch()

    async def _send_batch(self) -> int:
        leased = self._next_taken_up()
        # Messages taken up leave the poll for due ones to its interval, so
        # retries are not starved by a steady stream of new messages.
        if not leased or time.monotonic() - self._polled_at >= self._poll_seconds:
            self._polled_at = time.monotonic()
            leased += await self._lease()
            # In the order they fell due, oldest first.
            leased.sort(key=lambda row: row.created_at)
        if not leased:
            return 0
        sent: list[Outgoing] = []
        failed: list[tuple[Outgoing, Exception]] = []
        emailed = await self._email_together(leased)
        for delivery in leased:
            outcome = emailed.get(delivery.id, _NOT_SENT)
            if outcome is _NOT_SENT:
                try:
                    await self._hand_over(delivery)
                except Exception as exc:
                    outcome = exc
                else:
                    outcome = None
            if outcome is None:
                sent.append(delivery)
            else:
                failed.append((delivery, outcome))
        await self._record(sent, failed)
        return len(leased)

    async def _email_together(self, leased: list[Outgoing]) -> dict[uuid.UUID, Exception | None]:
        """The batch's mail handed over at once, where the channel takes several together.

        Each message keeps its own outcome; those not sent here are left out.
        """
        send_many = getattr(self._deps.email, "send_many", None)
        emails = [delivery for delivery in leased if delivery.channel == Channel.EMAIL.value]
        if send_many is None or len(emails) < 2:
            return {}
        outcomes: dict[uuid.UUID, Exception | None] = {}
        built: list[tuple[Outgoing, Message]] = []
        for delivery in emails:
            try:
                built.append((delivery, self._email(delivery)))
            except Exception as exc:
                outcomes[delivery.id] = exc
        if built:
            try:
                results = await send_many([message for _, message in built])
            except Exception as exc:
                results = [exc] * len(built)
            for (delivery, _), result in zip(built, results, strict=True):
                outcomes[delivery.id] = result
        return outcomes

    def _email(self, delivery: Outgoing) -> Message:
        content = delivery.content
        return build_message(
            sender=self._deps.sender,
            to=delivery.recipient,
            subject=delivery.subject,
            text=content["text"],
            html=content["html"],
            message_id=str(delivery.id),
            unsubscribe_url=content.get("unsubscribe_url"),
        )

    def _next_taken_up(self) -> list[Outgoing]:
        """Up to a batch of the messages taken up, those whose lease is half gone left out.

        A message held here too long (sends slower than the queueing) is left to
        the poll once its lease expires rather than risk two senders at once.
        """
        batch, self._taken_up = (
            self._taken_up[: self._batch_size],
            self._taken_up[self._batch_size :],
        )
        now = datetime.now(UTC)
        return [
            message
            for message in batch
            # Queued at ``created_at``, leased from then until ``lease_until``.
            if now < message.created_at + (message.lease_until - message.created_at) / 2
        ]

    async def _lease(self) -> list[Outgoing]:
        now = datetime.now(UTC)
        lease_until = now + self.lease
        async with self._transactions() as tx:
            rows = await tx.sql.fetch(self._lease_due, {"now": now, "until": lease_until})
            await tx.commit()
        return [Outgoing.of(row, lease_until) for row in rows]

    async def _record(self, sent: list[Outgoing], failed: list[tuple[Outgoing, Exception]]) -> None:
        async with self._transactions() as tx:
            if sent:
                await tx.sql.execute(
                    _RECORD_SENT[tx.sql.postgres],
                    {"ids": [delivery.id for delivery in sent], "at": datetime.now(UTC)},
                )
            for delivery, exc in failed:
                await self._failure(tx.sql, delivery, exc)
            await tx.commit()
        for delivery in sent:
            MESSAGES.labels(delivery.channel, "sent").inc()

    async def _hand_over(self, delivery: Outgoing) -> None:
        deps = self._deps
        content = delivery.content
        if delivery.channel == Channel.EMAIL.value:
            await deps.email.send(self._email(delivery))
        elif delivery.channel == Channel.SMS.value:
            await deps.sms.send_sms(
                to=delivery.recipient, body=content["text"], message_id=str(delivery.id)
            )
        elif delivery.channel == Channel.PUSH.value:
            await deps.push.send_push(
                token=delivery.recipient,
                title=delivery.subject,
                body=content["text"],
                data=dict(content.get("data") or {}),
                message_id=str(delivery.id),
            )
        else:
            raise PermanentFailure(f"unknown channel {delivery.channel!r}")

    async def _failure(self, sql: Sql, delivery: Outgoing, exc: Exception) -> None:
        attempts = delivery.attempts + 1
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if isinstance(exc, PermanentFailure) or attempts >= self._policy.max_attempts:
            outcome, status, due = "failed", DeliveryStatus.FAILED, None
            log.error(
                "notification failed for good",
                extra={
                    "delivery_id": str(delivery.id),
                    "channel": delivery.channel,
                    "error": error,
                },
            )
        else:
            outcome, status = "retry", DeliveryStatus.QUEUED
            due = datetime.now(UTC) + self._policy.delay(attempts)
            log.warning(
                "notification not sent; will retry",
                extra={
                    "delivery_id": str(delivery.id),
                    "channel": delivery.channel,
                    "error": error,
                },
            )
        await sql.execute(
            _RECORD_FAILED,
            {
                "delivery_id": delivery.id,
                "new_status": status.value,
                "new_attempts": attempts,
                "due": due,
                "error": error,
            },
        )
        MESSAGES.labels(delivery.channel, outcome).inc()
