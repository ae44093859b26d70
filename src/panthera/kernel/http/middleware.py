"""ASGI middleware every service and the gateway run: request ids, metrics, body limits."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from panthera.kernel.http.problems import problem_response
from panthera.kernel.observability import (
    HTTP_LATENCY,
    HTTP_REQUESTS,
    set_request_id,
    set_traceparent,
)
from panthera.kernel.tracing import continue_trace

access_log = logging.getLogger("panthera.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_UNTRACKED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _new_traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


class RequestContextMiddleware:
    """Binds a request id and trace context, times the request, logs it and counts it.

    A client's ``X-Request-ID`` is kept when it is short and plain, so a shop can
    follow its own ids through our logs; anything else is replaced.
    """

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = _header(scope, b"x-request-id")
        request_id = supplied if supplied and _SAFE_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        traceparent = _header(scope, b"traceparent")
        if not traceparent or not _TRACEPARENT.match(traceparent):
            traceparent = _new_traceparent()
        set_request_id(request_id)
        path = scope["path"]
        method = scope["method"]
        tracing: AbstractContextManager[tuple[Span | None, str | None]] = (
            nullcontext((None, traceparent))
            if path in _UNTRACKED_PATHS
            else continue_trace(
                f"{method} unmatched",
                kind=SpanKind.SERVER,
                traceparent=traceparent,
                attributes={"http.request.method": method, "panthera.service": self.service},
            )
        )
        with tracing as (span, passed_on):
            # Calls and events made while serving carry this request's span on.
            set_traceparent(passed_on)
            await self._serve(scope, receive, send, request_id, span)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, span: Span | None
    ) -> None:
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        encoded_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(key == b"x-request-id" for key, _ in headers):
                    headers.append((b"x-request-id", encoded_id))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope["path"]
            if path not in _UNTRACKED_PATHS:
                elapsed = time.perf_counter() - started
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                method = scope["method"]
                HTTP_REQUESTS.labels(self.service, method, template, str(status)).inc()
                HTTP_LATENCY.labels(self.service, method, template).observe(elapsed)
                if span is not None:
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
                if access_log.isEnabledFor(logging.INFO):
                    access_log.info(
                        "request",
                        extra={
                            "service": self.service,
                            "method": method,
                            "path": path,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 2),
                        },
                    )


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413, declared or streamed.

    ``overrides`` are ``(path suffix, max bytes)`` pairs: a request whose path ends
    with the suffix gets that limit instead (image uploads). The gateway and the
    services are given the same pairs, so both ends agree on every path.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        overrides: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = tuple(overrides)

    def limit_for(self, path: str) -> int:
        """The largest body accepted on ``path``."""
        for suffix, max_bytes in self.overrides:
            if path.endswith(suffix):
                return max_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = False
            if too_large:
                await self._refuse(scope, receive, send, limit)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem_response(
            413,
            "payload_too_large",
            "Request body too large",
            detail=f"The body may be at most {limit} bytes.",
            instance=scope["path"],
        )
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def security_headers() -> list[tuple[bytes, bytes]]:
    """Headers every response of the platform carries."""
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    ]


class SecurityHeadersMiddleware:
    """Adds the platform's security headers unless a response set its own."""

    def __init__(self, app: ASGIApp, *, extra: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = security_headers() + [
            (k.lower().encode(), v.encode()) for k, v in (extra or {}).items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                headers.extend(h for h in self.headers if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
