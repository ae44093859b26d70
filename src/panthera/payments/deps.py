"""FastAPI dependency aliases of the payments service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.db import Database, UnitOfWork
from panthera.kernel.idempotency import IdempotencyKeys
from panthera.kernel.sql import Transaction
from panthera.payments.providers import PaymentProvider
from panthera.payments.service import WrittenPayments


@dataclass
class PaymentsDeps:
    uow: Callable[[], UnitOfWork]
    # Reads that never write: on SQLite they do not queue behind the writer.
    read_session: Callable[[], AsyncSession]
    provider: PaymentProvider
    idempotency: IdempotencyKeys
    # The database whose writes of one statement that publish nothing commit on
    # their own, on the driver (PostgreSQL); None on SQLite, where every writer
    # queues on the unit of work's connection.
    alone: Database | None = None
    # The hot writes' transactions (a webhook's outcome): on the driver on PostgreSQL.
    transaction: Callable[[], Transaction] | None = None
    # Payments waiting for their webhook as this process wrote them (PostgreSQL).
    written: WrittenPayments | None = None


# async: FastAPI would run a plain function in its thread pool on every request.
async def _payments(request: Request) -> PaymentsDeps:
    deps: PaymentsDeps = request.app.state.payments_deps
    return deps


Payments = Annotated[PaymentsDeps, Depends(_payments)]
