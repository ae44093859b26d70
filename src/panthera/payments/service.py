"""Taking payments: record, ask the provider, apply its answer (refunds.py, webhooks.py).

A call to the provider never happens inside a database transaction (it may take
seconds, and on SQLite the write lock would stop every other writer). So a
payment is recorded first (``requires_confirmation``), the provider is asked
with an idempotency key derived from the payment's id, and its answer is
applied in a second transaction. When the answer is lost, the payment waits:
the same request retried asks again under the same provider key (the money is
never taken twice), the provider's webhook settles it in any case, because it
carries our payment id in its metadata, and when neither comes the reconciler
(reconciler.py) asks the provider. Refunds work the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Table,
    Update,
    bindparam,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.db import Database, UnitOfWork
from panthera.kernel.money import Money
from panthera.kernel.recent import Recent
from panthera.kernel.sql import Row as SqlRow
from panthera.kernel.sql import Sql, Transaction, is_unique_violation
from panthera.payments import errors, repository
from panthera.payments.events import PaymentFailed, PaymentSucceeded
from panthera.payments.models import (
    OPEN_STATUSES,
    Payment,
    PaymentStatus,
    ProviderEventRecord,
    Refund,
)
from panthera.payments.providers import (
    PaymentOutcome,
    PaymentProvider,
    ProviderRejected,
    ProviderUnavailable,
)
from panthera.payments.providers.stripe_webhooks import PAYMENT_ID_KEY

log = logging.getLogger("panthera.payments")

UnitsOfWork = Callable[[], UnitOfWork]
# PostgreSQL's database, whose single statements commit on their own on the driver
# (``Database.alone``): a write of one statement that publishes nothing needs no
# BEGIN and COMMIT round trips around it. None where writers must queue on the unit
# of work (SQLite).
Alone = Database | None

_PAYMENTS = cast(Table, Payment.__table__)
# Core statements, built once: the ORM's flush and its identity map cost more
# than the statements themselves on a path every order takes.
_INSERT_PAYMENT = insert(_PAYMENTS)


def _now() -> datetime:
    return datetime.now(UTC)


def touch(payment: Payment) -> None:
    payment.revision += 1
    payment.updated_at = _now()


# ------------------------------------------------------------------ payments


@dataclass(frozen=True)
class PaymentRequest:
    order_reference: str
    user_id: uuid.UUID
    amount: Money
    # The provider's payment method token; never a card number.
    token: str
    # "<idempotency scope>:<key>" of the request.
    request_key: str


@dataclass(frozen=True)
class PaymentView:
    payment: Payment
    refunds: list[Refund]


class WrittenPayments:
    """Payments waiting for their provider's webhook, as this process last wrote them
    (PostgreSQL): the webhook that settles one is applied without a read first
    (:func:`settle_known_and_record`). A guess, never trusted alone: that write holds
    only while the row still has the revision it had here.

    A provider may send the webhook before its answer to the request is recorded (the
    test provider's come at once): a webhook for a payment this process is still
    confirming waits, up to ``wait_seconds``, for that answer to be written.
    """

    def __init__(self, wait_seconds: float = 2.0) -> None:
        self._payments: Recent[uuid.UUID, Payment] = Recent()
        self._confirming: dict[uuid.UUID, asyncio.Event] = {}
        self._wait = wait_seconds

    @contextlib.contextmanager
    def confirming(self, payment_id: uuid.UUID) -> Iterator[None]:
        """While the provider is asked for ``payment_id`` and its answer recorded."""
        done = self._confirming[payment_id] = asyncio.Event()
        try:
            yield
        finally:
            done.set()
            if self._confirming.get(payment_id) is done:
                del self._confirming[payment_id]

    def note(self, payment: Payment) -> None:
        self._payments.put(payment.id, payment)

    async def take(self, payment_id: uuid.UUID) -> Payment | None:
        """The payment as last written here, forgotten: a webhook settles it once."""
        done = self._confirming.get(payment_id)
        if done is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._wait):
                    await done.wait()
        return self._payments.pop(payment_id)


async def create_payment(
    uows: UnitsOfWork,
    provider: PaymentProvider,
    request: PaymentRequest,
    *,
    alone: Alone = None,
    written: WrittenPayments | None = None,
) -> Payment:
    """Take the money for an order once: record, ask the provider, apply its answer."""
    payment = await _record(uows, provider.name, request, alone)
    if payment.status != PaymentStatus.REQUIRES_CONFIRMATION:
        return payment
    return await confirm_payment(
        uows, provider, payment, request.token, alone=alone, written=written
    )


async def confirm_payment(
    uows: UnitsOfWork,
    provider: PaymentProvider,
    payment: Payment,
    token: str,
    *,
    alone: Alone = None,
    written: WrittenPayments | None = None,
) -> Payment:
    """Ask the provider to take a recorded payment, and apply its answer.

    Always the same request for a payment (its parameters and idempotency key
    come from the row), so asking again after a lost answer takes the money once.
    """
    confirming = contextlib.nullcontext() if written is None else written.confirming(payment.id)
    with confirming:
        return await _confirm(uows, provider, payment, token, alone, written)


async def _confirm(
    uows: UnitsOfWork,
    provider: PaymentProvider,
    payment: Payment,
    token: str,
    alone: Alone,
    written: WrittenPayments | None,
) -> Payment:
    try:
        answer = await provider.create_payment(
            amount=payment.amount,
            currency=payment.currency,
            token=token,
            idempotency_key=f"panthera-payment-{payment.id}",
            metadata={PAYMENT_ID_KEY: str(payment.id), "order_reference": payment.order_reference},
        )
    except ProviderUnavailable as exc:
        log.warning(
            "payment provider did not answer",
            extra={"payment_id": str(payment.id), "error": str(exc)},
        )
        raise errors.PaymentProviderUnavailable() from exc
    except ProviderRejected as exc:
        # Refused outright (an amount under the provider's minimum, a broken
        # configuration): nothing was taken, and asking again would not help.
        log.error(
            "payment provider refused the request",
            extra={"payment_id": str(payment.id), "code": exc.code},
        )
        return await settle_by_id(
            uows, payment.id, PaymentOutcome.FAILED, None, exc.code, exc.message or None
        )
    if answer.outcome is PaymentOutcome.PROCESSING and alone is not None:
        # Accepted, outcome to follow: the move to processing publishes nothing, so
        # it is one statement on its own. A payment no longer waiting for the answer
        # (its webhook came first) takes the general way below.
        async with alone.alone() as sql:
            row = await _settle_row(
                sql, payment.id, answer.outcome, answer.provider_payment_id, None, None, None
            )
        if row is not None:
            processing = Payment(**row._asdict())
            if written is not None:
                written.note(processing)
            return processing
    return await settle_by_id(
        uows,
        payment.id,
        answer.outcome,
        answer.provider_payment_id,
        answer.failure_code,
        answer.failure_message,
    )


async def _record(
    uows: UnitsOfWork, provider: str, request: PaymentRequest, alone: Alone
) -> Payment:
    """The payment row of this request: new, or the one an earlier run of it left.

    Inserted straight away: the unique constraints say whether this request (its
    order and key) already made a payment, or another payment of the order is
    live, and only then is anything read.
    """
    now = _now()
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "order_reference": request.order_reference,
        "user_id": request.user_id,
        "amount": request.amount.amount,
        "currency": request.amount.currency,
        "status": PaymentStatus.REQUIRES_CONFIRMATION,
        "provider": provider,
        "provider_payment_id": None,
        "payment_method": request.token,
        "failure_code": None,
        "failure_message": None,
        "amount_refunded": 0,
        "request_key": request.request_key,
        "created_at": now,
        "updated_at": now,
        "revision": 1,
        "checked_at": None,
    }
    if alone is not None:
        # One statement that publishes nothing: it commits on its own.
        try:
            await alone.execute_alone(_INSERT_PAYMENT, values)
        except Exception as exc:
            if not is_unique_violation(exc):
                raise
        else:
            return Payment(**values)
        return await _earlier_payment(uows, request)
    async with uows() as uow:
        try:
            await uow.session.execute(_INSERT_PAYMENT, values)
            await uow.commit()
        except IntegrityError:
            pass
        else:
            return Payment(**values)
    return await _earlier_payment(uows, request)


async def _earlier_payment(uows: UnitsOfWork, request: PaymentRequest) -> Payment:
    """Why a payment of this request could not be recorded: its own earlier one, or a rival."""
    async with uows() as uow:
        session = uow.session
        # The same request run again (its answer was lost): its payment, even a
        # failed one, is the answer; the token is not charged a second time.
        earlier = await repository.payment_of_request(
            session, request.order_reference, request.request_key
        )
        if earlier is not None:
            _refuse_another_request(earlier, request)
            return earlier
        existing = await repository.live_payment_of_order(session, request.order_reference)
    if existing is not None and existing.status not in OPEN_STATUSES:
        raise errors.OrderAlreadyPaid()
    # Under way for another request, or it was between our insert and this read.
    raise errors.PaymentInProgress()


def _refuse_another_request(payment: Payment, request: PaymentRequest) -> None:
    """A request sent again must ask for what it first asked for."""
    same = (
        payment.amount == request.amount.amount
        and payment.currency == request.amount.currency
        and payment.user_id == request.user_id
        # Kept only until the provider answered; resuming asks with the request's token.
        and (payment.payment_method is None or payment.payment_method == request.token)
    )
    if not same:
        raise errors.PaymentRequestMismatch()


async def settle_by_id(
    uows: UnitsOfWork,
    payment_id: uuid.UUID,
    outcome: PaymentOutcome,
    provider_payment_id: str | None,
    failure_code: str | None,
    failure_message: str | None,
) -> Payment:
    async with uows() as uow:
        payment = await settle_open_payment(
            uow,
            payment_id,
            outcome,
            provider_payment_id=provider_payment_id,
            failure_code=failure_code,
            failure_message=failure_message,
        )
        if payment is None:
            payment = await repository.payment(uow.session, payment_id, for_update=True)
            if payment is None:
                raise errors.PaymentNotFound()
            settle_payment(
                uow,
                payment,
                outcome,
                provider_payment_id=provider_payment_id,
                failure_code=failure_code,
                failure_message=failure_message,
            )
        await uow.commit()
    return payment


async def settle_open_payment(
    tx: Transaction,
    payment_id: uuid.UUID,
    outcome: PaymentOutcome,
    *,
    provider_payment_id: str | None = None,
    failure_code: str | None = None,
    failure_message: str | None = None,
    provider: str | None = None,
) -> Payment | None:
    """Move a payment still waiting for the provider in one UPDATE ... RETURNING.

    The common case of :func:`settle_payment`, without reading the row first. None
    when the payment is not waiting (not found, settled, already processing when
    told it is processing, or holding another provider id): the caller then takes
    the general way, a locked read and ``settle_payment``.
    """
    row = await _settle_row(
        tx.sql,
        payment_id,
        outcome,
        provider_payment_id,
        failure_code,
        failure_message,
        provider,
    )
    if row is None:
        return None
    payment = Payment(**row._asdict())
    _publish_outcome(tx, payment)
    return payment


def _settle_params(
    payment_id: uuid.UUID,
    outcome: PaymentOutcome,
    provider: str | None,
    provider_payment_id: str | None,
    failure_code: str | None,
    failure_message: str | None,
) -> dict[str, object]:
    """The values of a settling ``UPDATE`` (:func:`_settle_statement` and its kin)."""
    params: dict[str, object] = {
        "match_id": payment_id,
        "match_provider": provider,
        "new_provider_payment_id": provider_payment_id or None,
        "new_updated_at": _now(),
    }
    if outcome is PaymentOutcome.FAILED or outcome is PaymentOutcome.CANCELED:
        failed = outcome is PaymentOutcome.FAILED
        params["new_failure_code"] = (failure_code or ("payment_failed" if failed else "canceled"))[
            :60
        ]
        params["new_failure_message"] = failure_message[:500] if failure_message else None
    return params


async def _settle_row(
    sql: Sql,
    payment_id: uuid.UUID,
    outcome: PaymentOutcome,
    provider_payment_id: str | None,
    failure_code: str | None,
    failure_message: str | None,
    provider: str | None,
) -> SqlRow | None:
    """The payment's row after its ``UPDATE ... RETURNING``, or None if it was not waiting."""
    params = _settle_params(
        payment_id, outcome, provider, provider_payment_id, failure_code, failure_message
    )
    statement = _settle_statement(outcome, provider is not None, bool(provider_payment_id))
    return await sql.fetch_one(statement, params)


@dataclass(frozen=True)
class ProviderWord:
    """What a provider's webhook says of a payment, and the webhook's provider_events
    row (``record``, written with outcome "applied" by the one-statement ways)."""

    outcome: PaymentOutcome
    provider: str
    provider_payment_id: str | None
    failure_code: str | None
    failure_message: str | None
    record: dict[str, object]

    def params(self, payment_id: uuid.UUID, provider_payment_id: str | None) -> dict[str, object]:
        params = _settle_params(
            payment_id,
            self.outcome,
            self.provider,
            provider_payment_id,
            self.failure_code,
            self.failure_message,
        )
        params.update({f"event_{key}": value for key, value in self.record.items()})
        return params


async def settle_open_payment_and_record(
    tx: Transaction, payment_id: uuid.UUID, word: ProviderWord
) -> tuple[Payment, bool] | None:
    """PostgreSQL: :func:`settle_open_payment` for a webhook, with the webhook's record
    in the same statement.

    None when the payment is not waiting (nothing written); else the payment and
    whether the record was new. When it was not, the webhook is a copy already
    applied: the caller must not commit.
    """
    params = word.params(payment_id, word.provider_payment_id)
    statement = _settle_and_record_statement(word.outcome, bool(word.provider_payment_id))
    row = await tx.sql.fetch_one(statement, params)
    if row is None:
        return None
    mapping = row._asdict()
    payment = Payment(**{key: mapping[key] for key in _PAYMENT_KEYS})
    _publish_outcome(tx, payment)
    return payment, mapping["recorded_event_id"] is not None


async def settle_known_and_record(
    transaction: Callable[[], Transaction], known: Payment, word: ProviderWord
) -> bool:
    """PostgreSQL: settle a payment that waits for its webhook, as ``known`` (this
    process's last write of it) says it is, with the webhook's record and the
    payment's event: one statement, its own transaction.

    Whether it was applied. Not when the row is no longer ``known`` (another write
    came first) or the webhook was recorded before (its record's key refuses the
    whole statement): the caller then takes the general way, which tells them apart.
    """
    outcome, provider_payment_id = word.outcome, word.provider_payment_id
    if (
        known.status != PaymentStatus.PROCESSING
        or known.provider != word.provider
        or outcome is PaymentOutcome.PROCESSING
        or (
            provider_payment_id
            and known.provider_payment_id
            and provider_payment_id != known.provider_payment_id
        )
    ):
        return False
    params = word.params(known.id, provider_payment_id or known.provider_payment_id)
    settled = Payment(**{key: getattr(known, key) for key in _PAYMENT_KEYS})
    settled.status = _SETTLED_STATUS[outcome]
    settled.payment_method = None
    settled.revision = known.revision + 1
    settled.updated_at = cast(datetime, params["new_updated_at"])
    settled.provider_payment_id = cast(str | None, params["new_provider_payment_id"])
    failed = "new_failure_code" in params
    if failed:
        settled.failure_code = cast(str, params["new_failure_code"])
        settled.failure_message = cast(str | None, params["new_failure_message"])
    params.update(
        {
            "was_revision": known.revision,
            "new_revision": settled.revision,
            "new_status": settled.status,
        }
    )
    async with transaction() as tx:
        _publish_outcome(tx, settled)
        try:
            return bool(await tx.commit_with(_settle_known_statement(failed), params))
        except Exception as exc:
            if not is_unique_violation(exc):
                raise
            return False


_PAYMENT_KEYS = tuple(column.key for column in _PAYMENTS.columns)
_PROVIDER_EVENTS = cast(Table, ProviderEventRecord.__table__)
_EVENT_KEYS = ("provider", "event_id", "type", "payment_id", "received_at", "payload")
_settle_and_record_statements: dict[tuple[PaymentOutcome, bool], Any] = {}


def _settle_and_record_statement(outcome: PaymentOutcome, with_provider_id: bool) -> Any:
    """``WITH settled AS (UPDATE payments ... RETURNING *), recorded AS (INSERT INTO
    provider_events ... SELECT FROM settled ON CONFLICT DO NOTHING RETURNING event_id)
    SELECT settled.*, recorded.event_id``: one round trip for both, built once per shape.
    """
    key = (outcome, with_provider_id)
    statement = _settle_and_record_statements.get(key)
    if statement is not None:
        return statement
    events = _PROVIDER_EVENTS
    settled = _settle_statement(outcome, True, with_provider_id).cte("settled")
    values = _record_of(settled)
    recorded = (
        postgresql.insert(events)
        .from_select(list(values), select(*values.values()))
        .on_conflict_do_nothing(index_elements=[events.c.provider, events.c.event_id])
        .returning(events.c.event_id)
        .cte("recorded")
    )
    statement = select(*settled.c, recorded.c.event_id.label("recorded_event_id")).select_from(
        settled.outerjoin(recorded, true())
    )
    _settle_and_record_statements[key] = statement
    return statement


def _record_of(settled: Any) -> dict[str, Any]:
    """The provider_events row of a webhook applied to the payment ``settled`` (a CTE
    of its UPDATE ... RETURNING id), by column: parameters, the id, "applied"."""
    events = _PROVIDER_EVENTS
    values: dict[str, Any] = {
        name: bindparam(f"event_{name}", type_=events.c[name].type)
        for name in _EVENT_KEYS
        if name != "payment_id"
    }
    values["payment_id"] = settled.c.id
    values["outcome"] = literal("applied", type_=events.c.outcome.type)
    return values


_settle_known_statements: dict[bool, Any] = {}


def _settle_known_statement(failed: bool) -> Any:
    """``WITH settled AS (UPDATE payments .. WHERE revision = known RETURNING id)
    INSERT INTO provider_events SELECT .. FROM settled``, without ON CONFLICT: a
    webhook recorded before makes the statement fail, and so settle nothing. Its new
    status comes as a parameter, like every other value: two shapes in all.
    """
    statement = _settle_known_statements.get(failed)
    if statement is not None:
        return statement
    table, events = _PAYMENTS, _PROVIDER_EVENTS
    values: dict[str, Any] = {
        "status": bindparam("new_status", type_=table.c.status.type),
        "payment_method": None,
        "revision": bindparam("new_revision"),
        "updated_at": bindparam("new_updated_at"),
        "provider_payment_id": bindparam("new_provider_payment_id"),
    }
    if failed:
        values["failure_code"] = bindparam("new_failure_code")
        values["failure_message"] = bindparam("new_failure_message")
    settled = (
        update(table)
        .where(
            table.c.id == bindparam("match_id"),
            table.c.revision == bindparam("was_revision"),
            table.c.status == PaymentStatus.PROCESSING,
            table.c.provider == bindparam("match_provider"),
        )
        .values(values)
        .returning(table.c.id)
        .cte("settled")
    )
    recorded = _record_of(settled)
    statement = insert(events).from_select(list(recorded), select(*recorded.values()))
    _settle_known_statements[failed] = statement
    return statement


_SETTLED_STATUS = {
    PaymentOutcome.PROCESSING: PaymentStatus.PROCESSING,
    PaymentOutcome.SUCCEEDED: PaymentStatus.SUCCEEDED,
    PaymentOutcome.FAILED: PaymentStatus.FAILED,
    PaymentOutcome.CANCELED: PaymentStatus.CANCELED,
}
_settle_statements: dict[tuple[PaymentOutcome, bool, bool], Update] = {}


def _settle_statement(outcome: PaymentOutcome, by_provider: bool, with_provider_id: bool) -> Update:
    """The UPDATE ... RETURNING of one kind of answer, built on first use and kept.

    Few shapes (outcome, whether the provider and its payment id are checked), so
    each is built and compiled once, and every answer passes its values as parameters.
    """
    key = (outcome, by_provider, with_provider_id)
    statement = _settle_statements.get(key)
    if statement is not None:
        return statement
    table = _PAYMENTS
    conditions = [table.c.id == bindparam("match_id")]
    if outcome is PaymentOutcome.PROCESSING:
        conditions.append(table.c.status == PaymentStatus.REQUIRES_CONFIRMATION)
    else:
        conditions.append(table.c.status.in_(sorted(OPEN_STATUSES)))
    if by_provider:
        conditions.append(table.c.provider == bindparam("match_provider"))
    values: dict[str, object] = {
        "status": _SETTLED_STATUS[outcome],
        "payment_method": None,
        "revision": table.c.revision + 1,
        "updated_at": bindparam("new_updated_at"),
    }
    if with_provider_id:
        conditions.append(
            or_(
                table.c.provider_payment_id.is_(None),
                table.c.provider_payment_id == bindparam("new_provider_payment_id"),
            )
        )
        values["provider_payment_id"] = bindparam("new_provider_payment_id")
    if outcome is PaymentOutcome.FAILED or outcome is PaymentOutcome.CANCELED:
        values["failure_code"] = bindparam("new_failure_code")
        values["failure_message"] = bindparam("new_failure_message")
    statement = update(table).where(*conditions).values(values).returning(*table.c)
    _settle_statements[key] = statement
    return statement


def settle_payment(
    uow: UnitOfWork,
    payment: Payment,
    outcome: PaymentOutcome,
    *,
    provider_payment_id: str | None = None,
    failure_code: str | None = None,
    failure_message: str | None = None,
) -> bool:
    """Apply what the provider says about a payment; False when it changes nothing.

    Only a payment still waiting moves: the provider's immediate answer and its
    webhook may arrive in either order, and a settled payment stays settled.
    """
    changed = False
    if provider_payment_id and payment.provider_payment_id is None:
        payment.provider_payment_id = provider_payment_id
        changed = True
    if payment.status not in OPEN_STATUSES:
        if outcome is PaymentOutcome.SUCCEEDED and payment.status in (
            PaymentStatus.FAILED,
            PaymentStatus.CANCELED,
        ):
            log.error(
                "the provider took money for a payment recorded as failed: refund it there",
                extra={"payment_id": str(payment.id)},
            )
        if changed:
            touch(payment)
        return changed
    if outcome is PaymentOutcome.PROCESSING:
        if payment.status == PaymentStatus.REQUIRES_CONFIRMATION:
            payment.status = PaymentStatus.PROCESSING
            changed = True
    elif outcome is PaymentOutcome.SUCCEEDED:
        payment.status = PaymentStatus.SUCCEEDED
        changed = True
    else:
        failed = outcome is PaymentOutcome.FAILED
        payment.status = PaymentStatus.FAILED if failed else PaymentStatus.CANCELED
        payment.failure_code = (failure_code or ("payment_failed" if failed else "canceled"))[:60]
        payment.failure_message = failure_message[:500] if failure_message else None
        changed = True
    if not changed:
        return False
    # The provider has it now: the token is not needed to ask again.
    payment.payment_method = None
    touch(payment)
    _publish_outcome(uow, payment)
    return True


def _publish_outcome(tx: Transaction, payment: Payment) -> None:
    if payment.status == PaymentStatus.SUCCEEDED:
        tx.publish(
            PaymentSucceeded(
                **event_fields(payment), provider_payment_id=payment.provider_payment_id
            )
        )
    elif payment.status in (PaymentStatus.FAILED, PaymentStatus.CANCELED):
        tx.publish(
            PaymentFailed(
                **event_fields(payment),
                reason=payment.failure_code or "payment_failed",
                message=payment.failure_message,
            )
        )


def event_fields(payment: Payment) -> dict[str, object]:
    return {
        "payment_id": payment.id,
        "order_reference": payment.order_reference,
        "user_id": payment.user_id,
        "amount": payment.amount,
        "currency": payment.currency,
        "provider": payment.provider,
        "revision": payment.revision,
        "occurred_at": payment.updated_at,
    }


async def payment_view(session: AsyncSession, payment_id: uuid.UUID) -> PaymentView | None:
    payment = await repository.payment(session, payment_id)
    if payment is None:
        return None
    return PaymentView(payment, await repository.refunds_of(session, [payment.id]))
