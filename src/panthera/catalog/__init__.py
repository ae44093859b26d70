"""The catalog service: categories, products and variants, prices, stock and images."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from panthera.kernel.service import ServiceDefinition, ServiceRuntime
from panthera.kernel.settings import Settings
from panthera.kernel.storage import ObjectStorage

log = logging.getLogger("panthera.catalog")


def _router() -> APIRouter:
    from panthera.catalog.endpoints import router
    from panthera.catalog.media import router as media_router

    combined = APIRouter()
    combined.include_router(router)
    combined.include_router(media_router)
    return combined


def _storage(settings: Settings) -> ObjectStorage:
    """An S3 bucket when one is named, else files under the data directory."""
    from panthera.kernel.storage import LocalStorage, S3Storage

    if settings.s3_bucket:
        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            access_key=settings.s3_access_key_id or None,
            secret_key=settings.s3_secret_access_key.get_secret_value() or None,
        )
    return LocalStorage(settings.data_dir / "media")


def _state(runtime: ServiceRuntime) -> dict[str, Any]:
    from panthera.catalog.deps import CatalogDeps
    from panthera.catalog.listing import ProductPages
    from panthera.catalog.search import search_for

    settings = runtime.settings
    storage = _storage(settings)
    search = search_for("sqlite" if runtime.database.is_sqlite else "postgresql")
    search.configure(runtime.database)
    deps = CatalogDeps(
        uow=runtime.uow,
        read_session=runtime.database.read_sessions,
        search=search,
        pages=ProductPages(runtime.database, search, settings.media_url_prefix),
        default_currency=settings.currency,
        reservation_ttl=timedelta(seconds=settings.reservation_ttl_seconds),
        media_prefix=settings.media_url_prefix,
        storage=storage,
        max_image_bytes=settings.max_image_bytes,
    )
    runtime.components["catalog_deps"] = deps
    runtime.components["storage"] = storage
    runtime.components.setdefault("readiness_checks", {})["storage"] = storage.ready
    return {"catalog_deps": deps}


async def _expire_reservations(runtime: ServiceRuntime, every_seconds: float = 5.0) -> None:
    """Give back stock whose reservation ran out (a buyer who never paid)."""
    from panthera.catalog import inventory

    while True:
        try:
            async with runtime.database.read_sessions() as session:
                due = await inventory.due_for_expiry(session, datetime.now(UTC))
            for reference in due:
                async with runtime.uow() as uow:
                    await inventory.release(uow, reference, reason="expired")
                    await uow.commit()
        except Exception:
            log.exception("expiring reservations failed")
        await asyncio.sleep(every_seconds)


async def _start(runtime: ServiceRuntime) -> None:
    storage: ObjectStorage | None = runtime.components.get("storage")
    if storage is not None:
        await storage.start()
    runtime.components["expiry_task"] = asyncio.create_task(
        _expire_reservations(runtime), name="catalog-reservation-expiry"
    )


async def _stop(runtime: ServiceRuntime) -> None:
    task = runtime.components.pop("expiry_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    storage: ObjectStorage | None = runtime.components.get("storage")
    if storage is not None:
        await storage.close()


def _definition() -> ServiceDefinition:
    from panthera.catalog.models import EVENT_TABLES, Base

    return ServiceDefinition(
        name="catalog",
        title="Catalog Service API",
        description="Products, categories, prices, stock, reservations and images.",
        metadata=Base.metadata,
        tables=EVENT_TABLES,
        migrations_dir=Path(__file__).parent / "migrations",
        router=_router,
        state=_state,
        on_start=_start,
        on_stop=_stop,
        public_prefix="/api/v1",
    )


definition = _definition()

__all__ = ["definition"]
