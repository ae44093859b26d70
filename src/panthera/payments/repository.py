"""Every query of the payments service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.payments.models import LIVE_STATUSES, Payment, Refund, RefundStatus


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
