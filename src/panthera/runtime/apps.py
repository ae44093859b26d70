"""The ASGI apps the CLI serves: the whole platform in one process, or one service."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette

from panthera.gateway import build_gateway
from panthera.gateway.cache import (
    CONSUMER,
    INVALIDATED_BY,
    MemoryResponseCache,
    ResponseCache,
    connect_redis_cache,
    invalidator,
)
from panthera.gateway.upstreams import HttpUpstream, InProcessUpstream, Upstream
from panthera.kernel.settings import EventTransportKind, Settings
from panthera.runtime.platform import Platform
from panthera.runtime.registry import SERVICE_NAMES

log = logging.getLogger("panthera.runtime")


def _response_cache(settings: Settings, platform: Platform) -> ResponseCache | None:
    """The gateway's response cache, subscribed to its invalidating events; or none.

    None when this gateway could miss invalidations: with RabbitMQ, gateway replicas
    share one queue, so each sees only some events and only a generation in Redis
    reaches them all; with the embedded transport, events reach only the process
    that publishes them.
    """
    if not settings.response_cache_enabled:
        return None
    if settings.event_transport is EventTransportKind.RABBITMQ:
        if not settings.redis_url:
            log.warning(
                "response cache off: with the rabbitmq transport it needs PANTHERA_REDIS_URL"
            )
            return None
    elif not set(INVALIDATED_BY) <= set(platform.runtimes):
        log.warning(
            "response cache off: the embedded transport does not bring other processes' events"
        )
        return None
    cache: ResponseCache = (
        connect_redis_cache(settings.redis_url)
        if settings.redis_url
        else MemoryResponseCache(max_bytes=settings.response_cache_max_bytes)
    )
    event_types, handler = invalidator(cache)
    platform.add_consumer(CONSUMER, event_types, handler)
    return cache


def embedded_app(settings: Settings) -> FastAPI:
    """Every service and the gateway in one process, calling each other in-process."""
    platform = Platform(settings, SERVICE_NAMES)
    upstreams: dict[str, Upstream] = {
        name: InProcessUpstream(app) for name, app in platform.apps.items()
    }
    app = build_gateway(
        settings,
        upstreams=upstreams,
        authenticator=platform.authenticator,
        rate_limiter=platform.rate_limiter,
        on_start=platform.start,
        on_stop=platform.stop,
        response_cache=_response_cache(settings, platform),
    )
    app.state.platform = platform
    return app


def gateway_app(settings: Settings) -> FastAPI:
    """The gateway alone, reaching each service at its configured URL."""
    platform = Platform(settings, ())
    urls = settings.replica_urls()
    missing = [name for name in SERVICE_NAMES if name not in urls]
    if missing:
        raise ValueError(f"PANTHERA_SERVICE_URLS lacks {', '.join(missing)}")
    upstreams: dict[str, Upstream] = {
        name: HttpUpstream(
            urls[name],
            timeout_seconds=settings.http_timeout_seconds,
            retries=settings.http_retries,
            retry_after_seconds=settings.replica_retry_after_seconds,
            failure_threshold=settings.circuit_failure_threshold,
            open_seconds=settings.circuit_open_seconds,
            service=name,
        )
        for name in SERVICE_NAMES
    }
    app = build_gateway(
        settings,
        upstreams=upstreams,
        authenticator=platform.authenticator,
        rate_limiter=platform.rate_limiter,
        on_start=platform.start,
        on_stop=platform.stop,
        response_cache=_response_cache(settings, platform),
    )
    app.state.platform = platform
    return app


def service_app(settings: Settings, name: str) -> FastAPI:
    """One service as its own process."""
    if name == "gateway":
        return gateway_app(settings)
    platform = Platform(settings, (name,))
    return platform.standalone_app(name)


def heap_frozen_after_startup(app: Any) -> Any:
    """``app``, whose start-up ends by moving every object alive then out of the
    collector's sight (``gc.freeze``).

    What a process builds as it starts (modules, the routes, SQLAlchemy's and
    pydantic's models, the pools) lives as long as it does; left in the collector's
    oldest generation, each full collection walks all of it again, a pause of 100 ms
    and more in the middle of requests. Frozen, a collection walks only what was
    made since.
    """
    if not isinstance(app, Starlette):
        return app  # an ASGI app of another kind: served as it is
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Starlette) -> AsyncIterator[Any]:
        async with inner(application) as state:
            gc.collect()
            gc.freeze()
            yield state

    app.router.lifespan_context = lifespan
    return app
