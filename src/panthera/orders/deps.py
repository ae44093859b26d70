"""FastAPI dependency aliases of the orders service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.db import Database, UnitOfWork
from panthera.kernel.idempotency import IdempotencyKeys
from panthera.kernel.sql import Transaction
from panthera.orders.clients import CatalogClient, PaymentsClient
from panthera.orders.saga import Saga


@dataclass
class OrdersDeps:
    uow: Callable[[], UnitOfWork]
    # The hot writes' transactions: on the driver on PostgreSQL (kernel/sql.py).
    transaction: Callable[[], Transaction]
    database: Database
    # Reads that never write: on SQLite they do not queue behind the writer.
    read_session: Callable[[], AsyncSession]
    catalog: CatalogClient
    payments: PaymentsClient
    saga: Saga
    idempotency: IdempotencyKeys


# async: FastAPI would run a plain function in its thread pool on every request.
async def _orders(request: Request) -> OrdersDeps:
    deps: OrdersDeps = request.app.state.orders_deps
    return deps


Orders = Annotated[OrdersDeps, Depends(_orders)]
