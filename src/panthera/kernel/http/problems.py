"""RFC 9457 problem+json responses and the exception handlers that produce them."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from asyncpg.exceptions import (  # type: ignore[import-untyped]
    CannotConnectNowError,
    TooManyConnectionsError,
)
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from panthera.kernel.errors import PantheraError
from panthera.kernel.observability import current_request_id

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://panthera.dev/problems/"
log = logging.getLogger("panthera.http")

_CODES_BY_STATUS = {
    400: "invalid_input",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def problem_response(
    status: int,
    code: str,
    title: str,
    *,
    detail: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem+json response in the platform's one error shape."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    request_id = current_request_id()
    if request_id:
        body["requestId"] = request_id
    body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        errors.append(
            {
                "location": location[0] if location else "body",
                "field": ".".join(location[1:]),
                "message": error.get("msg", "invalid"),
                "type": error.get("type", "invalid"),
            }
        )
    return errors


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, expected or not, in problem+json."""

    async def on_panthera_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PantheraError)
        return problem_response(
            exc.status,
            exc.code,
            exc.title,
            detail=exc.detail,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extra,
        )

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # The seed's contract answers invalid input with 400, not FastAPI's 422.
        return problem_response(
            400,
            "invalid_input",
            "Invalid input",
            detail="The request does not match the schema.",
            instance=request.url.path,
            errors=_validation_errors(exc),
        )

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        code = _CODES_BY_STATUS.get(status, "error")
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Error"
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return problem_response(
            status,
            code,
            title,
            detail=detail,
            instance=request.url.path,
            headers=dict(exc.headers) if exc.headers else None,
        )

    async def on_database_unavailable(request: Request, exc: Exception) -> Response:
        # A database that is down, or a SQLite file busy past its timeout under
        # load, is a passing condition the client can retry, not a bug.
        log.warning("database unavailable", exc_info=exc, extra={"path": request.url.path})
        return problem_response(
            503,
            "service_unavailable",
            "Service unavailable",
            detail="The database is busy or unreachable; try again shortly.",
            instance=request.url.path,
            headers={"Retry-After": "1"},
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(
            500, "internal_error", "Internal server error", instance=request.url.path
        )

    app.add_exception_handler(PantheraError, on_panthera_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(OperationalError, on_database_unavailable)
    app.add_exception_handler(InterfaceError, on_database_unavailable)
    # Every pooled connection stayed busy for the whole pool timeout: overload.
    app.add_exception_handler(PoolTimeoutError, on_database_unavailable)
    # Refused before SQLAlchemy wraps anything: the server is full or starting up.
    app.add_exception_handler(TooManyConnectionsError, on_database_unavailable)
    app.add_exception_handler(CannotConnectNowError, on_database_unavailable)
    app.add_exception_handler(ConnectionRefusedError, on_database_unavailable)
    app.add_exception_handler(Exception, on_unexpected)


def problem_schema() -> dict[str, Any]:
    """The OpenAPI schema of the error shape (``ErrorResponse``)."""
    return {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "code": {"type": "string", "description": "Stable machine-readable error code"},
            "requestId": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
    }
