"""The one bootstrap every service calls: errors, middleware, health, readiness and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute

from panthera import __version__
from panthera.kernel.http.middleware import PlatformMiddleware
from panthera.kernel.http.problems import install_problem_handlers, problem_schema

ReadinessCheck = Callable[[], Awaitable[bool]]


def add_operational_routes(app: FastAPI, checks: Mapping[str, ReadinessCheck]) -> None:
    """``/healthz`` (the process answers), ``/readyz`` (its dependencies answer), ``/metrics``."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        results = {name: await check() for name, check in checks.items()}
        ready = all(results.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": results},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Add ``router``'s routes to ``app`` as they are.

    FastAPI keeps an included router as a branch of its own that it walks on every
    request (working out the branch's routes version and each route's effective
    context again); a service's routes carry their paths, tags and dependencies
    already, so they go straight into the app's list and matching is one loop.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute | Route | Mount | WebSocketRoute):
            raise TypeError(
                f"{route!r}: a router included in a service's router would be walked on "
                "every request; add its routes instead"
            )
        app.router.routes.append(route)


def create_app(
    *,
    name: str,
    title: str,
    description: str,
    max_body_bytes: int,
    checks: Mapping[str, ReadinessCheck],
    body_limit_overrides: Sequence[tuple[str, int]] = (),
    on_start: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    server_url: str | None = None,
    app_class: type[FastAPI] = FastAPI,
) -> FastAPI:
    """A FastAPI app with the platform's error shape, middleware and operational routes."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if on_start is not None:
            await on_start()
        try:
            yield
        finally:
            if on_stop is not None:
                await on_stop()

    app = app_class(
        title=title,
        description=description,
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        servers=[{"url": server_url}] if server_url else None,
        # The platform middleware makes each request's span and metrics; FastAPI's own
        # would record every request twice once a tracer provider is configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service_name = name
    install_problem_handlers(app)
    add_operational_routes(app, checks)
    app.add_middleware(
        PlatformMiddleware,
        service=name,
        max_bytes=max_body_bytes,
        overrides=body_limit_overrides,
    )
    _use_problem_schema_in_openapi(app)
    return app


def _use_problem_schema_in_openapi(app: FastAPI) -> None:
    """Document every error answer as ``ErrorResponse`` (problem+json), and 400 not 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            servers=app.servers,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["ErrorResponse"] = problem_schema()
        error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.get("responses", {})
                validation = responses.pop("422", None)
                if validation is not None and "400" not in responses:
                    responses["400"] = {"description": "Invalid input"}
                for status, response in responses.items():
                    if status.startswith(("4", "5")):
                        # Keep a non-JSON answer a route declares itself (an HTML page).
                        declared = {
                            media: body
                            for media, body in response.get("content", {}).items()
                            if "json" not in media
                        }
                        response["content"] = {
                            "application/problem+json": {"schema": error_ref},
                            **declared,
                        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def request_client_address(request: Request) -> str:
    """The caller's address: the gateway's ``X-Client-IP`` when present, else the peer."""
    forwarded = request.headers.get("x-client-ip")
    if forwarded:
        return forwarded
    return request.client.host if request.client else "unknown"
