"""Every query of the payments service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, case, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.payments.models import (
    LIVE_STATUSES,
    OPEN_STATUSES,
    Payment,
    ProviderEventRecord,
    Refund,
    RefundStatus,
)


async def payment(
    session: AsyncSession, payment_id: uuid.UUID, *, for_update: bool = False
) -> Payment | None:
    query = select(Payment).where(Payment.id == payment_id)
    if for_update:
        query = query.with_for_update()
    found: Payment | None = (
        await session.execute(query.execution_options(populate_existing=True))
    ).scalar_one_or_none()
    return found


async def live_payment_of_order(
    session: AsyncSession, order_reference: str, *, for_update: bool = False
) -> Payment | None:
    """The order's payment that went through or is under way (at most one)."""
    query = select(Payment).where(
        Payment.order_reference == order_reference, Payment.status.in_(LIVE_STATUSES)
    )
    if for_update:
        query = query.with_for_update()
    found: Payment | None = (
        await session.execute(query.execution_options(populate_existing=True))
    ).scalar_one_or_none()
    return found


async def payment_of_request(
    session: AsyncSession, order_reference: str, request_key: str
) -> Payment | None:
    """The payment an earlier run of the same request made, in whatever state."""
    found: Payment | None = (
        await session.execute(
            select(Payment)
            .where(Payment.order_reference == order_reference, Payment.request_key == request_key)
            .order_by(Payment.created_at.desc())
            .limit(1)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return found


async def payment_of_order(session: AsyncSession, order_reference: str) -> Payment | None:
    """The order's payment that went through or is under way, else its latest attempt."""
    found: Payment | None = (
        await session.execute(
            select(Payment)
            .where(Payment.order_reference == order_reference)
            .order_by(
                case((Payment.status.in_(LIVE_STATUSES), 0), else_=1), Payment.created_at.desc()
            )
            .limit(1)
        )
    ).scalar_one_or_none()
    return found


async def latest_payment_of_order(session: AsyncSession, order_reference: str) -> Payment | None:
    found: Payment | None = (
        await session.execute(
            select(Payment)
            .where(Payment.order_reference == order_reference)
            .order_by(Payment.created_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return found


async def payment_by_provider_id(
    session: AsyncSession, provider: str, provider_payment_id: str
) -> Payment | None:
    found: Payment | None = (
        await session.execute(
            select(Payment)
            .where(Payment.provider == provider, Payment.provider_payment_id == provider_payment_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return found


_PROVIDER_EVENTS = cast(Table, ProviderEventRecord.__table__)
# Built once per dialect: ON CONFLICT is spelled by the dialect's own insert.
_RECORD_PROVIDER_EVENT = {
    name: insert_(_PROVIDER_EVENTS)
    .on_conflict_do_nothing(
        index_elements=[_PROVIDER_EVENTS.c.provider, _PROVIDER_EVENTS.c.event_id]
    )
    .returning(_PROVIDER_EVENTS.c.event_id)
    for name, insert_ in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


async def record_provider_event(
    session: AsyncSession,
    *,
    provider: str,
    event_id: str,
    type: str,
    outcome: str,
    payment_id: uuid.UUID | None,
    received_at: datetime,
    payload: dict[str, Any],
) -> bool:
    """Insert a webhook's record; False when its event id is already recorded.

    ON CONFLICT DO NOTHING rather than a savepoint around the insert: one statement,
    and a copy being recorded at this moment is waited for, then found.
    """
    statement = _RECORD_PROVIDER_EVENT[session.get_bind().dialect.name]
    found = await session.execute(
        statement,
        {
            "provider": provider,
            "event_id": event_id,
            "type": type,
            "outcome": outcome,
            "payment_id": payment_id,
            "received_at": received_at,
            "payload": payload,
        },
    )
    return found.first() is not None


async def refunds_of(session: AsyncSession, payment_ids: Sequence[uuid.UUID]) -> list[Refund]:
    if not payment_ids:
        return []
    return list(
        (
            await session.execute(
                select(Refund)
                .where(Refund.payment_id.in_(payment_ids))
                .order_by(Refund.created_at, Refund.id)
            )
        ).scalars()
    )


async def refund(
    session: AsyncSession, refund_id: uuid.UUID, *, for_update: bool = False
) -> Refund | None:
    query = select(Refund).where(Refund.id == refund_id)
    if for_update:
        query = query.with_for_update()
    found: Refund | None = (
        await session.execute(query.execution_options(populate_existing=True))
    ).scalar_one_or_none()
    return found


async def refund_by_provider_id(session: AsyncSession, provider_refund_id: str) -> Refund | None:
    found: Refund | None = (
        await session.execute(
            select(Refund)
            .where(Refund.provider_refund_id == provider_refund_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return found


async def refund_by_request_key(
    session: AsyncSession, payment_id: uuid.UUID, request_key: str
) -> Refund | None:
    found: Refund | None = (
        await session.execute(
            select(Refund)
            .where(Refund.payment_id == payment_id, Refund.request_key == request_key)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return found


async def committed_refunds(session: AsyncSession, payment_id: uuid.UUID) -> int:
    """What is refunded or on its way back: succeeded and pending refunds."""
    total = await session.scalar(
        select(func.coalesce(func.sum(Refund.amount), 0)).where(
            Refund.payment_id == payment_id,
            Refund.status.in_((RefundStatus.PENDING, RefundStatus.SUCCEEDED)),
        )
    )
    return int(total or 0)


def _due(model: type[Payment] | type[Refund], waiting_since: datetime) -> ColumnElement[bool]:
    """Unchanged since ``waiting_since``, and not taken by a reconciler since then either."""
    return or_(
        model.checked_at <= waiting_since,
        and_(model.checked_at.is_(None), model.updated_at <= waiting_since),
    )


async def claim_waiting_payments(
    session: AsyncSession,
    provider: str,
    *,
    waiting_since: datetime,
    now: datetime,
    skip_locked: bool,
    limit: int,
) -> list[Payment]:
    """Payments still waiting for the provider since ``waiting_since``, marked as taken now.

    With ``skip_locked`` (PostgreSQL), rows another replica is claiming are passed
    over rather than waited for; once committed, its mark keeps them apart.
    """
    query = (
        select(Payment)
        .where(
            Payment.provider == provider,
            Payment.status.in_(OPEN_STATUSES),
            _due(Payment, waiting_since),
        )
        .order_by(Payment.updated_at)
        .limit(limit)
    )
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    found = list((await session.execute(query.execution_options(populate_existing=True))).scalars())
    for payment in found:
        payment.checked_at = now
    return found


async def claim_pending_refunds(
    session: AsyncSession,
    provider: str,
    *,
    waiting_since: datetime,
    now: datetime,
    skip_locked: bool,
    limit: int,
) -> list[tuple[Refund, Payment]]:
    """Refunds still pending since ``waiting_since``, with their payments; as above."""
    query = (
        select(Refund, Payment)
        .join(Payment, Payment.id == Refund.payment_id)
        .where(
            Payment.provider == provider,
            Refund.status == RefundStatus.PENDING,
            _due(Refund, waiting_since),
        )
        .order_by(Refund.updated_at)
        .limit(limit)
    )
    if skip_locked:
        query = query.with_for_update(of=Refund, skip_locked=True)
    rows = (await session.execute(query.execution_options(populate_existing=True))).all()
    found = [(refund, payment) for refund, payment in rows]
    for refund, _ in found:
        refund.checked_at = now
    return found
