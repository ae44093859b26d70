"""The ASGI apps the CLI serves: the whole platform in one process, or one service."""

from __future__ import annotations

from fastapi import FastAPI

from panthera.gateway import build_gateway
from panthera.gateway.upstreams import HttpUpstream, InProcessUpstream, Upstream
from panthera.kernel.settings import Settings
from panthera.runtime.platform import Platform
from panthera.runtime.registry import SERVICE_NAMES


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
    )
    app.state.platform = platform
    return app


def gateway_app(settings: Settings) -> FastAPI:
    """The gateway alone, reaching each service at its configured URL."""
    platform = Platform(settings, ())
    missing = [name for name in SERVICE_NAMES if name not in settings.service_urls]
    if missing:
        raise ValueError(f"PANTHERA_SERVICE_URLS lacks {', '.join(missing)}")
    upstreams: dict[str, Upstream] = {
        name: HttpUpstream(
            settings.service_urls[name],
            timeout_seconds=settings.http_timeout_seconds,
            retries=settings.http_retries,
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
    )
    app.state.platform = platform
    return app


def service_app(settings: Settings, name: str) -> FastAPI:
    """One service as its own process."""
    if name == "gateway":
        return gateway_app(settings)
    platform = Platform(settings, (name,))
    return platform.standalone_app(name)
