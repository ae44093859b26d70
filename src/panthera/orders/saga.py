"""The order saga's orchestrator: it performs each order's next step with the catalog
and the payments service, and records what came of it.

A step runs outside any database transaction (it is a call to another service);
its outcome is applied in a short transaction afterwards, and only if the order
is still at that step, since an event (the payment's outcome, an expired
reservation) or a person (a cancellation) may have moved it on meanwhile. Each
call is idempotent on the other side, keyed by the order id, so when a process
dies between the call and the record, the next worker that takes the order over
(its lease ran out) makes the same call again and gets the same answer.

Orders are taken up as soon as something makes a step due (``kick``) and, for
retries, timeouts and work a stopped process left, by a poller.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.db import Database
from panthera.kernel.money import Money
from panthera.kernel.observability import SAGA_OLDEST_DUE, SAGA_STEPS
from panthera.kernel.recent import Recent
from panthera.kernel.sql import SessionSql, Transaction
from panthera.orders import service
from panthera.orders.clients import (
    CatalogClient,
    PaymentsClient,
    PaymentState,
    Refused,
    Unavailable,
)
from panthera.orders.models import Order, OrderItem
from panthera.orders.states import (
    FORWARD_STEPS,
    CancelReason,
    OrderStatus,
    SagaStep,
    reason_for_payment_failure,
    reason_for_rejected_stock,
    retry_delay_seconds,
)

log = logging.getLogger("panthera.orders.saga")

Change = Callable[[Transaction, Order], Awaitable[None]]
# Lines of this many orders at most are kept between steps; an order past them reads its own.
LINES_KEPT = 10_000
PAID = frozenset({"succeeded", "partially_refunded", "refunded"})
UNPAID = frozenset({"failed", "canceled"})

_CLAIM = (
    update(Order)
    .where(
        Order.id == bindparam("order_id"),
        Order.saga_step != SagaStep.DONE,
        or_(Order.saga_lease_until.is_(None), Order.saga_lease_until < bindparam("at")),
    )
    .values(saga_lease_until=bindparam("until"))
)
_LET_GO = update(Order).where(Order.id == bindparam("order_id")).values(saga_lease_until=None)


class Saga:
    def __init__(
        self,
        *,
        database: Database,
        transaction: Callable[[], Transaction],
        read_session: Callable[[], AsyncSession],
        catalog: CatalogClient,
        payments: PaymentsClient,
        reservation_ttl_seconds: int,
        lease_seconds: float,
        step_attempts: int,
        payment_timeout_seconds: float,
        poll_seconds: float,
    ) -> None:
        self._database = database
        self._transaction = transaction
        self._read = read_session
        # PostgreSQL: a step's outcome is written without the row lock's read, by an
        # UPDATE that holds only if the order is still as the step found it (else the
        # locked way), and an outcome that publishes nothing is that one statement,
        # committed on its own. Not on SQLite: there every writer queues on one
        # connection, and the lock costs nothing more.
        self._unlocked_writes = not database.is_sqlite
        self._catalog = catalog
        self._payments = payments
        self._reservation_ttl = reservation_ttl_seconds
        self._lease = timedelta(seconds=lease_seconds)
        self._step_attempts = step_attempts
        self._payment_timeout = timedelta(seconds=payment_timeout_seconds)
        self._poll_seconds = poll_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[uuid.UUID] = set()
        # Orders made due again while their task was at work: whether the lease is held.
        self._again: dict[uuid.UUID, bool] = {}
        # The lines of orders this process placed and has not finished: an order's lines
        # never change, so the commit step's order.confirmed needs no read of them, also
        # when the payment's event (not this process's run) takes the order up again.
        self._lines: Recent[uuid.UUID, list[OrderItem]] = Recent(LINES_KEPT)
        # Each unfinished order as this process last wrote it: an event about it can
        # be applied without the locked read, by a write that holds only if the row
        # is still exactly this (see ``last_written``).
        self._written: Recent[uuid.UUID, Order] = Recent(LINES_KEPT)
        self._closed = False

    @property
    def reservation_ttl(self) -> int:
        """Seconds stock is held for an order before the payment must have come."""
        return self._reservation_ttl

    # ------------------------------------------------------------- scheduling

    def last_written(self, order_id: uuid.UUID) -> Order | None:
        """The order as this process last committed it, if it kept it (PostgreSQL only).

        A guess, never trusted alone: a write based on it must hold only while the row
        is unchanged (``service.save(..., unchanged=...)``).
        """
        return self._written.get(order_id) if self._unlocked_writes else None

    def note_written(self, order: Order) -> None:
        """Keep ``order`` as committed by this process, for ``last_written``."""
        if not self._unlocked_writes:
            return
        if order.saga_step == SagaStep.DONE:
            self._written.pop(order.id)
            return
        self._written.put(order.id, order)

    def take_up_after_commit(
        self, tx: Transaction, order: Order, items: list[OrderItem] | None = None
    ) -> None:
        """Hold the order's saga in the caller's transaction and take it up once that commits.

        The lease is taken with the change that makes a step due, so this process
        needs no separate claim; if it dies before the step runs, the lease runs out
        and any instance's poller takes the order over. The order as the caller
        committed it (and its ``items``, when the caller has them) starts the step, so
        the step does not read again what the lease already keeps unchanged.
        """
        self.hold(order)
        self.kick_after_commit(tx, order, items)

    def hold(self, order: Order) -> None:
        """Give ``order`` this process's lease, written with the order by the caller."""
        order.saga_lease_until = service.now() + self._lease

    def kick_after_commit(
        self, tx: Transaction, order: Order, items: list[OrderItem] | None = None
    ) -> None:
        """Take up an order whose lease the caller's transaction holds, once it commits."""
        order_id = order.id

        def taken_up() -> None:
            self.note_written(order)
            self.kick(order_id, held=True, known=order, items=items)

        tx.on_commit(taken_up)

    def kick(
        self,
        order_id: uuid.UUID,
        *,
        held: bool = False,
        known: Order | None = None,
        items: list[OrderItem] | None = None,
    ) -> None:
        """Take the order up now, in the background; ``held``: its lease is this process's.

        ``known`` (with ``items``) is the order as a committed transaction of this
        process left it, while holding its lease; the first step starts from it.
        """
        if self._closed:
            return
        if items:
            self._remember(order_id, items)
        if order_id in self._running:
            # The task at work on it goes round once more, from a fresh read.
            self._again[order_id] = held or self._again.get(order_id, False)
            return
        task = asyncio.get_running_loop().create_task(
            self.run(order_id, held=held, known=known if held else None, items=items)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(
        self,
        order_id: uuid.UUID,
        *,
        held: bool = False,
        known: Order | None = None,
        items: list[OrderItem] | None = None,
    ) -> None:
        """Perform the order's due steps while it holds the lease; never raises."""
        if order_id in self._running:
            self._again[order_id] = held or self._again.get(order_id, False)
            return
        self._running.add(order_id)
        try:
            if not held and not await self._claim(order_id):
                return
            released = False
            try:
                # The order as this task's last step (or the transaction that took the
                # lease for it) left it: the next step needs no read.
                while True:
                    self._again.pop(order_id, None)
                    more, released, known = await self._advance(order_id, known, items)
                    if more:
                        continue
                    if order_id not in self._again:
                        break
                    # Something made a step due while this task was at work.
                    held_again = self._again[order_id]
                    if released and not held_again and not await self._claim(order_id):
                        break
                    released = False
                    known = None
            finally:
                if not released:
                    await self._let_go(order_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("order saga step failed", extra={"order_id": str(order_id)})
        finally:
            self._running.discard(order_id)
            self._again.pop(order_id, None)

    def _remember(self, order_id: uuid.UUID, items: list[OrderItem]) -> None:
        self._lines.put(order_id, items)

    async def poll_forever(self) -> None:
        """Take up every order with a step due, now and every ``poll_seconds``."""
        while not self._closed:
            try:
                for order_id in await self.due():
                    self.kick(order_id)
            except Exception:
                log.exception("looking for due saga steps failed")
            await asyncio.sleep(self._poll_seconds)

    async def due(self, limit: int = 200) -> list[uuid.UUID]:
        at = service.now()
        async with self._read() as session:
            return list(
                (
                    await session.execute(
                        select(Order.id)
                        .where(
                            Order.saga_step != SagaStep.DONE,
                            Order.saga_next_at <= at,
                            or_(Order.saga_lease_until.is_(None), Order.saga_lease_until < at),
                        )
                        .order_by(Order.saga_next_at)
                        .limit(limit)
                    )
                ).scalars()
            )

    async def pending_by_step(self) -> dict[str, int]:
        async with self._read() as session:
            rows = await session.execute(
                select(Order.saga_step, func.count())
                .where(Order.saga_step != SagaStep.DONE)
                .group_by(Order.saga_step)
            )
            return {step: count for step, count in rows.all()}

    async def measure_overdue(self) -> None:
        """How late the most overdue step is: a saga that stopped moving shows here."""
        at = service.now()
        async with self._read() as session:
            oldest = await session.scalar(
                select(func.min(Order.saga_next_at)).where(Order.saga_step != SagaStep.DONE)
            )
        SAGA_OLDEST_DUE.set(max(0.0, (at - oldest).total_seconds()) if oldest else 0.0)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        if tasks:
            # In-flight steps finish (their outcome is recorded); a step cut off
            # here is taken over by another worker once its lease runs out.
            await asyncio.wait(tasks, timeout=self._lease.total_seconds())

    async def _claim(self, order_id: uuid.UUID) -> bool:
        at = service.now()
        claimed = await self._database.execute_alone(
            _CLAIM, {"order_id": order_id, "at": at, "until": at + self._lease}
        )
        return bool(claimed)

    async def _let_go(self, order_id: uuid.UUID) -> None:
        await self._database.execute_alone(_LET_GO, {"order_id": order_id})

    # ---------------------------------------------------------------- steps

    async def _advance(
        self,
        order_id: uuid.UUID,
        known: Order | None = None,
        known_items: list[OrderItem] | None = None,
    ) -> tuple[bool, bool, Order | None]:
        """Perform the order's step if it is due.

        Answers whether another step is due right away, whether the lease was let go,
        and the order as the step left it.
        """
        order = known
        items: list[OrderItem] = known_items or self._lines.get(order_id) or []
        if order is None or (order.saga_step == SagaStep.RESERVE and not items):
            async with self._read() as session:
                order = await service.find(session, order_id)
                if order is not None and order.saga_step == SagaStep.RESERVE:
                    items = await service.items_of(SessionSql(session), order_id)
        if order is None or order.saga_step == SagaStep.DONE:
            self._lines.pop(order_id)
            return False, False, None
        if order.saga_next_at > service.now():
            return False, False, None
        step = SagaStep(order.saga_step)
        try:
            change = await self._perform(step, order, items)
            outcome = "done"
        except (Unavailable, Refused) as exc:
            change = self._retry(step, str(exc))
            outcome = "retry"
        SAGA_STEPS.labels(step.value, outcome).inc()
        if isinstance(change, _Processing) and known is not None and self._unlocked_writes:
            # The payment is under way and its event will say how it ended: nothing to
            # record until then. The lease this run started with (taken as the order was
            # placed) is kept: the event's write takes the order on, and should none
            # come, the lease's end lets a poller ask again, which records the wait.
            return False, True, order
        async with self._transaction() as tx:
            saved = None
            if self._unlocked_writes:
                saved = await self._save_unless_changed(tx, order, change)
            if saved is None:
                locked = await service.lock(tx.sql, order_id)
                if locked is None or locked.saga_step != step:
                    # Moved on meanwhile (an event, a person): this outcome is stale.
                    return True, False, None
                await change(tx, locked)
                more = self._hold_or_let_go(locked)
                await service.save_and_commit(tx, locked)
            else:
                locked, more = saved
        self.note_written(locked)
        if locked.saga_step == SagaStep.DONE or locked.status != OrderStatus.PENDING:
            # Past the step that needs them (order.confirmed, or cancelled).
            self._lines.pop(order_id)
        return more, not more, locked

    def _hold_or_let_go(self, order: Order) -> bool:
        """Whether another step is due at once; the lease is kept for it, else let go.

        Let go in the same write as the outcome, so that the event that makes the
        next step due can take the order up.
        """
        at = service.now()
        more = due_now(order, at)
        order.saga_lease_until = at + self._lease if more else None
        return more

    async def _save_unless_changed(
        self, tx: Transaction, order: Order, change: Change
    ) -> tuple[Order, bool] | None:
        """Apply ``change`` to a copy of ``order`` (as the step found it) and write it,
        if the row is still exactly ``order``; None when it is not (nothing written).

        The row lock's read is not needed then: the write's condition stands in for it.
        A change that publishes nothing grows no revision (every event of an order
        carries a new one) and has no history line: it is one statement, committed
        on its own.
        """
        draft = service.detached_copy(order)
        await change(tx, draft)
        more = self._hold_or_let_go(draft)
        if draft.revision == order.revision:
            async with self._database.alone() as sql:
                written = await service.save(sql, draft, unchanged=order)
        else:
            written = await service.save_and_commit(tx, draft, unchanged=order)
        return (draft, more) if written else None

    def _retry(self, step: SagaStep, error: str) -> Change:
        async def change(tx: Transaction, order: Order) -> None:
            order.saga_attempts += 1
            order.saga_last_error = error[:500]
            if (
                step in FORWARD_STEPS
                and order.saga_attempts >= self._step_attempts
                and order.status == OrderStatus.PENDING
            ):
                log.warning(
                    "order saga gave up a step",
                    extra={"order_id": str(order.id), "step": step.value, "error": error},
                )
                await service.cancel(tx, order, CancelReason.TIMED_OUT, message=error[:500])
                return
            order.saga_next_at = service.now() + timedelta(
                seconds=retry_delay_seconds(order.saga_attempts)
            )

        return change

    async def _perform(self, step: SagaStep, order: Order, items: list[OrderItem]) -> Change:
        if step == SagaStep.RESERVE:
            return await self._reserve(order, items)
        if step == SagaStep.PAY:
            return await self._pay(order)
        if step == SagaStep.AWAIT_PAYMENT:
            return await self._check_payment(order)
        if step == SagaStep.COMMIT:
            return await self._commit(order, items)
        if step == SagaStep.RELEASE:
            return await self._release(order)
        if step == SagaStep.REFUND:
            return await self._refund(order)
        raise AssertionError(f"no such saga step {step}")

    async def _reserve(self, order: Order, items: list[OrderItem]) -> Change:
        held = await self._catalog.reserve(
            str(order.id),
            [(None, item.variant_id, item.quantity) for item in items],
            self._reservation_ttl,
        )
        if not held.held:

            async def rejected(tx: Transaction, locked: Order) -> None:
                # Nothing is held and nothing was charged: nothing to give back.
                await service.cancel(
                    tx, locked, reason_for_rejected_stock(held.reason), compensate=False
                )

            return rejected

        # The payment is asked for at once and both outcomes are recorded together:
        # one transaction fewer on the way to CONFIRMED. A worker that dies in between
        # records neither, and the next one makes both calls again (both idempotent).
        try:
            paid = await self._pay(order)
            outcome = "done"
        except (Unavailable, Refused) as exc:
            paid = self._retry(SagaStep.PAY, str(exc))
            outcome = "retry"
        SAGA_STEPS.labels(SagaStep.PAY.value, outcome).inc()

        async def reserved(tx: Transaction, locked: Order) -> None:
            locked.reservation_expires_at = held.expires_at
            service.schedule(locked, SagaStep.PAY)
            await paid(tx, locked)

        return reserved

    async def _pay(self, order: Order) -> Change:
        token = order.payment_method
        if token is None:
            return self._payment_outcome(await self._payments.payment_of(order.id))
        try:
            payment: PaymentState | None = await self._payments.pay(
                order_id=order.id,
                user_id=order.user_id,
                amount=Money(order.total_amount, order.currency).format(),
                currency=order.currency,
                token=token,
            )
        except Refused as exc:
            if exc.code == "order_already_paid":
                payment = await self._payments.payment_of(order.id)
            elif exc.status in (400, 422) and exc.code != "idempotency_in_flight":
                return self._cancel_for(CancelReason.INVALID_PAYMENT_METHOD, exc.detail)
            else:
                raise
        return self._payment_outcome(payment)

    async def _check_payment(self, order: Order) -> Change:
        payment = await self._payments.payment_of(order.id)
        if payment is not None and (payment.status in PAID or payment.status in UNPAID):
            return self._payment_outcome(payment)

        async def change(tx: Transaction, locked: Order) -> None:
            if locked.payment_deadline is not None and locked.payment_deadline > service.now():
                locked.saga_next_at = locked.payment_deadline
                return
            # No outcome in time: call it off; a payment that succeeds later is refunded.
            await service.cancel(
                tx, locked, CancelReason.TIMED_OUT, message="The payment had no outcome in time."
            )

        return change

    def _payment_outcome(self, payment: PaymentState | None) -> Change:
        async def change(tx: Transaction, locked: Order) -> None:
            if payment is None:
                await service.cancel(
                    tx, locked, CancelReason.PAYMENT_ERROR, message="No payment was made."
                )
                return
            record_payment(locked, payment)
            if locked.payment_revision > payment.revision:
                # Newer word came as an event while the order was not yet waiting for it
                # (the payment was asked for in the reserve step): it decides.
                if locked.payment_status in PAID:
                    service.schedule(locked, SagaStep.COMMIT)
                else:
                    # Ask the payments service at once; its answer carries the failure code.
                    locked.payment_deadline = service.now() + self._payment_timeout
                    service.schedule(locked, SagaStep.AWAIT_PAYMENT)
                return
            if payment.status in PAID:
                service.schedule(locked, SagaStep.COMMIT)
            elif payment.status in UNPAID:
                await service.cancel(tx, locked, reason_for_payment_failure(payment.failure_code))
            else:
                deadline = service.now() + self._payment_timeout
                locked.payment_deadline = deadline
                service.schedule(locked, SagaStep.AWAIT_PAYMENT, at=deadline)

        if payment is not None and payment.status not in PAID and payment.status not in UNPAID:
            return _Processing(change)
        return change

    def _cancel_for(self, reason: CancelReason, message: str | None) -> Change:
        async def change(tx: Transaction, locked: Order) -> None:
            await service.cancel(tx, locked, reason, message=message)

        return change

    async def _commit(self, order: Order, items: list[OrderItem]) -> Change:
        try:
            await self._catalog.commit(str(order.id))
        except Refused as exc:
            if exc.status not in (404, 409):
                raise
            # The reservation ran out (or was released) before the sale was final.
            return self._cancel_for(CancelReason.RESERVATION_EXPIRED, exc.detail)

        async def change(tx: Transaction, locked: Order) -> None:
            locked.payment_method = None
            service.schedule(locked, SagaStep.DONE)
            # The lines this run placed or reserved are the event's: they never change.
            await service.move(tx, locked, OrderStatus.CONFIRMED, items=items or None)

        return change

    async def _release(self, order: Order) -> Change:
        await self._catalog.call_off(str(order.id), order.cancel_reason or "order_cancelled")

        async def change(tx: Transaction, locked: Order) -> None:
            nothing_charged = locked.payment_status in UNPAID
            service.schedule(locked, SagaStep.DONE if nothing_charged else SagaStep.REFUND)

        return change

    async def _refund(self, order: Order) -> Change:
        try:
            payment = await self._payments.refund(
                order.id,
                key=f"order-cancelled:{order.id}:{order.revision}",
                reason=order.cancel_reason or "order_cancelled",
            )
        except Refused as exc:
            if exc.code == "payment_in_progress":
                # Its outcome is not known yet: ask again later, for as long as it takes.
                raise Unavailable(str(exc)) from exc
            if exc.code != "payment_not_refundable":
                raise
            payment = None

        async def change(tx: Transaction, locked: Order) -> None:
            if payment is not None:
                record_payment(locked, payment)
                await service.apply_refunded(
                    tx,
                    locked,
                    amount_refunded=Money.parse(payment.amount_refunded, locked.currency).amount,
                    reason=locked.cancel_reason or "order_cancelled",
                )
            service.schedule(locked, SagaStep.DONE)

        return change


class _Processing:
    """The change of a payment still under way (the order waits for its outcome): its
    own kind, so that the step which asked for the payment can tell it apart."""

    def __init__(self, change: Change) -> None:
        self._change = change

    async def __call__(self, tx: Transaction, locked: Order) -> None:
        await self._change(tx, locked)


def record_payment(order: Order, payment: PaymentState) -> None:
    service.note_payment(
        order, payment_id=payment.payment_id, status=payment.status, revision=payment.revision
    )


def due_now(order: Order, at: datetime | None = None) -> bool:
    return order.saga_step != SagaStep.DONE and order.saga_next_at <= (at or service.now())
