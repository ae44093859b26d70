"""The ASGI middleware every service and the gateway run: request ids, trace context,
metrics, access logs, body limits and security headers.

All of it is one layer with one ``send`` wrapper: every response of the platform
passes through here, and each extra layer costs a call per message on every one.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client.metrics import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from panthera.kernel.http.problems import problem_response
from panthera.kernel.observability import (
    HTTP_LATENCY,
    HTTP_REQUESTS,
    current_request_id,
    set_request_id,
    set_traceparent,
)
from panthera.kernel.tracing import continue_trace, recording

access_log = logging.getLogger("panthera.access")
error_log = logging.getLogger("panthera.http")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_UNTRACKED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
# Set in the scope of a request the gateway passes to a service's app in its own
# process (the embedded shape): the gateway's platform middleware has already bound
# the request id and trace context, enforces the same body limits, and adds the
# headers to the answer, so the service's only counts, times and logs it.
IN_PROCESS = "panthera.in_process"


def _new_traceparent() -> str:
    # Trace and span id from one read of the system's random source.
    ids = os.urandom(24).hex()
    return f"00-{ids[:32]}-{ids[32:]}-01"


def security_headers() -> list[tuple[bytes, bytes]]:
    """Headers every response of the platform carries."""
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    ]


class PlatformMiddleware:
    """Request id, trace context, timing, metrics, access log, body limit, security headers.

    A client's ``X-Request-ID`` is kept when it is short and plain, so a shop can
    follow its own ids through our logs; anything else is replaced. Bodies over
    ``max_bytes`` are refused with 413, declared or streamed; ``overrides`` are
    ``(path suffix, max bytes)`` pairs giving a path another limit (image uploads),
    and the gateway and the services are given the same pairs, so both ends agree.
    The security headers are added unless a response set its own.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        max_bytes: int,
        overrides: Sequence[tuple[str, int]] = (),
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.max_bytes = max_bytes
        self.overrides = tuple(overrides)
        self.security_headers = security_headers() + [
            (k.lower().encode(), v.encode()) for k, v in (extra_headers or {}).items()
        ]
        # Looking a labelled child up in prometheus_client builds and locks on every
        # call; the label values repeat, so the children are kept here.
        self._metrics: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

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
        if scope.get(IN_PROCESS) and not recording():
            await self._observe(scope, receive, send)
            return
        supplied: str | None = None
        traceparent: str | None = None
        declared: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                supplied = value.decode("latin-1")
            elif key == b"traceparent":
                traceparent = value.decode("latin-1")
            elif key == b"content-length":
                declared = value
        request_id = (
            supplied if supplied and _SAFE_REQUEST_ID.match(supplied) else os.urandom(16).hex()
        )
        if not traceparent or not _TRACEPARENT.match(traceparent):
            traceparent = _new_traceparent()
        set_request_id(request_id)
        path = scope["path"]
        if path in _UNTRACKED_PATHS or not recording():
            # Without a span the incoming trace is passed on as it came.
            set_traceparent(traceparent)
            await self._serve(scope, receive, send, request_id, declared, None)
            return
        method = scope["method"]
        with continue_trace(
            f"{method} unmatched",
            kind=SpanKind.SERVER,
            traceparent=traceparent,
            attributes={"http.request.method": method, "panthera.service": self.service},
        ) as (span, passed_on):
            # Calls and events made while serving carry this request's span on.
            set_traceparent(passed_on)
            await self._serve(scope, receive, send, request_id, declared, span)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        declared: bytes | None,
        span: Span | None,
    ) -> None:
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        # 0 until the answer starts.
        status = 0
        encoded_id = request_id.encode()
        extra = self.security_headers

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers: list[Any] = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                if b"x-request-id" not in present:
                    headers.append((b"x-request-id", encoded_id))
                headers.extend(h for h in extra if h[0] not in present)
                message["headers"] = headers
            await send(message)

        try:
            # Most requests carry no body: the limit is looked up when one comes.
            limit = 0
            if declared is not None:
                limit = self.limit_for(scope["path"])
                try:
                    too_large = int(declared) > limit
                except ValueError:
                    too_large = False
                if too_large:
                    await _refuse(scope, receive, send_with_headers, limit)
                    return
            received = 0

            async def counting_receive() -> Message:
                nonlocal received, limit
                message = await receive()
                if message["type"] == "http.request":
                    chunk = message.get("body", b"")
                    if chunk:
                        received += len(chunk)
                        if not limit:
                            limit = self.limit_for(scope["path"])
                        if received > limit:
                            raise _BodyTooLarge(limit)
                return message

            try:
                await self.app(scope, counting_receive, send_with_headers)
            except _BodyTooLarge:
                await _refuse(scope, receive, send_with_headers, limit)
            except Exception:
                # Whatever the app below did not answer still gets the platform's
                # error shape; once an answer has started, the server must cut it.
                if status != 0:
                    raise
                error_log.exception("unhandled error", extra={"path": scope["path"]})
                await problem_response(
                    500, "internal_error", "Internal server error", instance=scope["path"]
                )(scope, receive, send_with_headers)
        finally:
            path = scope["path"]
            if path not in _UNTRACKED_PATHS:
                self._record(scope, path, status or 500, time.perf_counter() - started, span)

    async def _observe(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["request_id"] = current_request_id()
        started = time.perf_counter()
        status = 0

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            path = scope["path"]
            if path not in _UNTRACKED_PATHS:
                self._record(scope, path, status or 500, time.perf_counter() - started, None)

    def _record(
        self, scope: Scope, path: str, status: int, elapsed: float, span: Span | None
    ) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        key = (method, template, status)
        children = self._metrics.get(key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(self.service, method, template, str(status)),
                HTTP_LATENCY.labels(self.service, method, template),
            )
            self._metrics[key] = children
        children[0].inc()
        children[1].observe(elapsed)
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


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = problem_response(
        413,
        "payload_too_large",
        "Request body too large",
        detail=f"The body may be at most {limit} bytes.",
        instance=scope["path"],
    )
    await response(scope, receive, send)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit.

    An HTTP error, so that an app reading the body (FastAPI parsing JSON turns any
    other failure into 400) answers 413 with its own handler; raised outside one,
    the middleware answers it.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The body may be at most {limit} bytes.")
