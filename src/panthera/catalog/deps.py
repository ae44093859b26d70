"""FastAPI dependency aliases of the catalog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.catalog.inventory import HeldReferences
from panthera.catalog.listing import ProductPages
from panthera.catalog.search import SearchIndex
from panthera.catalog.views import ProductViews
from panthera.kernel.db import Database, UnitOfWork
from panthera.kernel.sql import Transaction
from panthera.kernel.storage import ObjectStorage


@dataclass
class CatalogDeps:
    uow: Callable[[], UnitOfWork]
    # The hot writes' transactions (reservations): on the driver on PostgreSQL.
    transaction: Callable[[], Transaction]
    database: Database
    # Reads that never write: on SQLite they do not queue behind the writer.
    read_session: Callable[[], AsyncSession]
    search: SearchIndex
    # List pages, each one read that returns the body ready to send.
    pages: ProductPages
    default_currency: str
    reservation_ttl: timedelta
    media_prefix: str
    # Where image files are kept: a directory (embedded) or an S3 bucket.
    storage: ObjectStorage
    max_image_bytes: int
    # Product page views, published in batches (see panthera.catalog.views).
    views: ProductViews = field(default_factory=ProductViews)
    # Reservations this process made, for their sale in one statement (PostgreSQL).
    held_here: HeldReferences | None = None


# async: FastAPI would run a plain function in its thread pool on every request.
async def _catalog(request: Request) -> CatalogDeps:
    deps: CatalogDeps = request.app.state.catalog_deps
    return deps


Catalog = Annotated[CatalogDeps, Depends(_catalog)]
