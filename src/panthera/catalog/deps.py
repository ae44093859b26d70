"""FastAPI dependency aliases of the catalog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.catalog.listing import ProductPages
from panthera.catalog.search import SearchIndex
from panthera.kernel.db import UnitOfWork
from panthera.kernel.storage import ObjectStorage


@dataclass
class CatalogDeps:
    uow: Callable[[], UnitOfWork]
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


# async: FastAPI would run a plain function in its thread pool on every request.
async def _catalog(request: Request) -> CatalogDeps:
    deps: CatalogDeps = request.app.state.catalog_deps
    return deps


Catalog = Annotated[CatalogDeps, Depends(_catalog)]
