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

    # One list of routes: an included router is walked again on every request.
    return APIRouter(routes=[*router.routes, *media_router.routes])


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
    from panthera.catalog.inventory import HeldReferences
    from panthera.catalog.listing import ProductPages
    from panthera.catalog.search import search_for

    settings = runtime.settings
    storage = _storage(settings)
    search = search_for("sqlite" if runtime.database.is_sqlite else "postgresql")
    search.configure(runtime.database)
    deps = CatalogDeps(
        uow=runtime.uow,
        transaction=runtime.transaction,
        database=runtime.database,
        read_session=runtime.database.read_sessions,
        search=search,
        pages=ProductPages(runtime.database, search, settings.media_url_prefix),
        default_currency=settings.currency,
        reservation_ttl=timedelta(seconds=settings.reservation_ttl_seconds),
        media_prefix=settings.media_url_prefix,
        storage=storage,
        max_image_bytes=settings.max_image_bytes,
        held_here=None if runtime.database.is_sqlite else HeldReferences(),
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
                async with runtime.transaction() as tx:
                    await inventory.release(tx, reference, reason="expired")
                    await tx.commit()
        except Exception:
            log.exception("expiring reservations failed")
        await asyncio.sleep(every_seconds)


async def _publish_views(runtime: ServiceRuntime, every_seconds: float = 10.0) -> None:
    """Publish product page views in batches: one event per window, not one per view."""
    from panthera.catalog.views import publish_views

    deps = runtime.components["catalog_deps"]
    while True:
        await asyncio.sleep(every_seconds)
        try:
            await publish_views(deps.views, runtime.uow)
        except Exception:
            log.exception("publishing product views failed")


async def _start(runtime: ServiceRuntime) -> None:
    storage: ObjectStorage | None = runtime.components.get("storage")
    if storage is not None:
        await storage.start()
    runtime.components["expiry_task"] = asyncio.create_task(
        _expire_reservations(runtime), name="catalog-reservation-expiry"
    )
    runtime.components["views_task"] = asyncio.create_task(
        _publish_views(runtime), name="catalog-product-views"
    )


async def _stop(runtime: ServiceRuntime) -> None:
    from panthera.catalog.views import publish_views

    for name in ("expiry_task", "views_task"):
        task = runtime.components.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    try:
        # The last window's counts wait in the outbox for the next start.
        await publish_views(runtime.components["catalog_deps"].views, runtime.uow)
    except Exception:
        log.exception("publishing the last product views failed")
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
