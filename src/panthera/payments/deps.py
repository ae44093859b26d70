"""FastAPI dependency aliases of the payments service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.db import UnitOfWork
from panthera.kernel.idempotency import IdempotencyKeys
from panthera.payments.providers import PaymentProvider


@dataclass
class PaymentsDeps:
    uow: Callable[[], UnitOfWork]
    # Reads that never write: on SQLite they do not queue behind the writer.
    read_session: Callable[[], AsyncSession]
    provider: PaymentProvider
    idempotency: IdempotencyKeys
    # Writes of one statement that publish nothing, committed on their own; None on
    # SQLite, where every writer queues on the unit of work's connection.
    autocommit: Callable[[], AsyncSession] | None = None


# async: FastAPI would run a plain function in its thread pool on every request.
async def _payments(request: Request) -> PaymentsDeps:
    deps: PaymentsDeps = request.app.state.payments_deps
    return deps


Payments = Annotated[PaymentsDeps, Depends(_payments)]
