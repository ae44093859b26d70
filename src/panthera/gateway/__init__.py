"""The gateway: the platform's one public entry point."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from panthera.gateway.cache import AddressLimit, ResponseCache, ResponseCaching
from panthera.gateway.proxy import Proxy, RateLimits
from panthera.gateway.routes import ROUTES
from panthera.gateway.upstreams import Upstream
from panthera.gateway.webapp import WebApp, content_security_policy
from panthera.kernel.http.app import create_app
from panthera.kernel.ratelimit import LeasedRateLimiter, RateLimiter, RedisRateLimiter
from panthera.kernel.security.permissions import Authenticator
from panthera.kernel.settings import Settings

log = logging.getLogger("panthera.gateway")

LOCAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})
# First path segments the web app never answers for, whether or not a route exists
# there today: the API's namespace stays the API's.
RESERVED_SEGMENTS = frozenset(
    {"api", "media", ".well-known"}
    | {path.lstrip("/").split("/", 1)[0] for path in LOCAL_PATHS}
    | {route.prefix.lstrip("/").split("/", 1)[0] for route in ROUTES}
)


def build_gateway(
    settings: Settings,
    *,
    upstreams: Mapping[str, Upstream],
    authenticator: Authenticator,
    rate_limiter: RateLimiter,
    on_start: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    response_cache: ResponseCache | None = None,
) -> FastAPI:
    """The gateway app: its own operational routes, and the proxy for everything else.

    ``response_cache`` answers anonymous reads of cacheable routes; whoever passes
    it must also deliver the invalidating events to it (``cache.invalidator``).
    """

    async def upstreams_ready() -> bool:
        results = [await upstream.ready() for upstream in upstreams.values()]
        return all(results)

    async def stop() -> None:
        for upstream in upstreams.values():
            await upstream.close()
        if on_stop is not None:
            await on_stop()
        if response_cache is not None:
            await response_cache.close()

    app = create_app(
        name="gateway",
        title="Panthera Gateway",
        description="The single entry point: routing, token checks, rate limits, request ids.",
        max_body_bytes=settings.max_request_body_bytes,
        body_limit_overrides=settings.body_limit_overrides(),
        checks={"services": upstreams_ready},
        on_start=on_start,
        on_stop=stop,
        app_class=_GatewayApp,
    )
    assert isinstance(app, _GatewayApp)
    proxy = Proxy(
        upstreams,
        authenticator=authenticator,
        rate_limits=RateLimits(
            (
                LeasedRateLimiter(rate_limiter, lease=settings.rate_limit_lease)
                if isinstance(rate_limiter, RedisRateLimiter) and settings.rate_limit_lease > 1
                else rate_limiter
            ),
            per_ip_per_minute=settings.rate_limit_per_ip_per_minute,
            per_ip_burst=settings.rate_limit_per_ip_burst,
            per_user_per_minute=settings.rate_limit_per_user_per_minute,
            per_user_burst=settings.rate_limit_per_user_burst,
        ),
        caching=(
            ResponseCaching(
                response_cache,
                ttl_seconds=settings.response_cache_ttl_seconds,
                address_limit=(
                    AddressLimit(
                        rate_limiter,
                        rate_per_minute=settings.rate_limit_per_ip_per_minute,
                        burst=settings.rate_limit_per_ip_burst,
                    )
                    if isinstance(rate_limiter, RedisRateLimiter)
                    else None
                ),
            )
            if response_cache is not None
            else None
        ),
    )
    app.state.response_cache = response_cache
    web_app = WebApp(
        settings.web_dir,
        reserved=RESERVED_SEGMENTS,
        csp=content_security_policy(settings.media_url_prefix),
    )
    if not web_app.available():
        log.info(
            "no web app built at %s: serving the API alone (scripts/web-build builds it)",
            settings.web_dir,
        )
    app.dispatch_to = (proxy, web_app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "If-None-Match"],
            expose_headers=[
                "X-Request-ID",
                "X-Total-Count",
                "Link",
                "Retry-After",
                "ETag",
                "X-Cache",
            ],
            max_age=600,
        )
    return app


class _GatewayApp(FastAPI):
    """FastAPI whose own layers serve only the gateway's local paths.

    The platform middleware (and CORS) wrap every request: the request has its id,
    metrics, body limit and security headers before it is dispatched. Proxied and
    web-app requests then go straight to the proxy, past FastAPI's error, telemetry
    and body-limit layers that they do not use and would pay for on every message:
    the proxy renders its own problem answers, and the platform middleware answers
    whatever escapes it.
    """

    dispatch_to: tuple[Proxy, WebApp] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        if self.dispatch_to is None:
            return super().build_middleware_stack()
        outer = self.user_middleware
        self.user_middleware = []
        try:
            local = super().build_middleware_stack()
        finally:
            self.user_middleware = outer
        proxy, web_app = self.dispatch_to
        app: ASGIApp = _Dispatch(local, proxy=proxy, web_app=web_app)
        for cls, args, kwargs in reversed(outer):
            app = cls(app, *args, **kwargs)
        return app


class _Dispatch:
    def __init__(self, app: ASGIApp, *, proxy: Proxy, web_app: WebApp) -> None:
        self.app = app
        self.proxy = proxy
        self.web_app = web_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in LOCAL_PATHS:
            if self.web_app.handles(scope):
                await self.web_app(scope, receive, send)
            else:
                await self.proxy(scope, receive, send)
            return
        await self.app(scope, receive, send)
