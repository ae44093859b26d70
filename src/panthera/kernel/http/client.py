"""Service-to-service HTTP: in-process ASGI calls when embedded, pooled HTTP when distributed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import httpx
from starlette.types import ASGIApp

from panthera.kernel.errors import ServiceUnavailable
from panthera.kernel.http.replicas import ReplicaSet
from panthera.kernel.observability import current_request_id, current_traceparent
from panthera.kernel.security.permissions import INTERNAL_TOKEN_HEADER


async def _propagate_context(request: httpx.Request) -> None:
    request_id = current_request_id()
    if request_id:
        request.headers["x-request-id"] = request_id
    traceparent = current_traceparent()
    if traceparent:
        request.headers["traceparent"] = traceparent


# Requests that change nothing (RFC 9110, 9.2.1): sending one twice is harmless.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ReplicaTransport(httpx.AsyncBaseTransport):
    """Sends each request to one of a service's replicas, the next one when it cannot connect.

    A request that could not be connected moves on; one that reached a replica is
    sent again only if it is safe (GET, HEAD, OPTIONS), so nothing is done twice.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        retries: int,
        retry_after_seconds: float,
        failure_threshold: int = 5,
        open_seconds: float = 10.0,
        service: str = "",
        limits: httpx.Limits | None = None,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._replicas = ReplicaSet(
            urls,
            retry_after_seconds=retry_after_seconds,
            failure_threshold=failure_threshold,
            open_seconds=open_seconds,
            service=service,
        )
        self._retries = retries
        self._inner = inner or httpx.AsyncHTTPTransport(limits=limits or httpx.Limits())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        rounds = 0
        failure: httpx.TransportError | None = None
        while True:
            for base in self._replicas.order():
                if not self._replicas.claim(base):
                    continue
                replica = httpx.URL(base)
                request.url = request.url.copy_with(
                    scheme=replica.scheme, host=replica.host, port=replica.port
                )
                try:
                    response = await self._inner.handle_async_request(request)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    # Nothing reached that replica: another may take the request.
                    self._replicas.refused(base)
                    failure = exc
                    continue
                except (httpx.ReadTimeout, httpx.WriteTimeout):
                    # The request may be in hand there, so it is not sent again.
                    self._replicas.failed(base)
                    raise
                except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    # A replica that died with the request in hand: a safe request may
                    # go to another, anything else might already have been done.
                    if request.method not in SAFE_METHODS:
                        self._replicas.failed(base)
                        raise
                    self._replicas.refused(base)
                    failure = exc
                    continue
                self._replicas.answered(base, response.status_code)
                return response
            rounds += 1
            if rounds > self._retries:
                if failure is None:
                    # Every replica was taken by an open or half-open breaker.
                    raise self._replicas.unavailable()
                raise failure
            await asyncio.sleep(0.05 * rounds)

    async def aclose(self) -> None:
        await self._inner.aclose()


class ServiceDirectory:
    """Finds the other services: by in-process app or by URL, one pooled client each."""

    def __init__(
        self,
        *,
        internal_token: str,
        urls: dict[str, list[str]],
        timeout_seconds: float,
        retries: int,
        retry_after_seconds: float = 5.0,
        failure_threshold: int = 5,
        open_seconds: float = 10.0,
        local_app: Callable[[str], ASGIApp | None] | None = None,
    ) -> None:
        self._internal_token = internal_token
        self._urls = urls
        self._timeout = httpx.Timeout(timeout_seconds, connect=min(2.0, timeout_seconds))
        self._retries = retries
        self._retry_after = retry_after_seconds
        self._failure_threshold = failure_threshold
        self._open_seconds = open_seconds
        self._local_app = local_app
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client(self, service: str) -> httpx.AsyncClient:
        """The client for one service, created on first use."""
        client = self._clients.get(service)
        if client is None:
            client = self._build(service)
            self._clients[service] = client
        return client

    def _build(self, service: str) -> httpx.AsyncClient:
        headers = {INTERNAL_TOKEN_HEADER: self._internal_token}
        hooks = {"request": [_propagate_context]}
        app = self._local_app(service) if self._local_app else None
        if app is not None:
            return httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url=f"http://{service}.internal",
                headers=headers,
                event_hooks=hooks,
                timeout=self._timeout,
            )
        urls = self._urls.get(service)
        if not urls:
            raise ServiceUnavailable(f"No address is configured for the {service} service.")
        return httpx.AsyncClient(
            transport=ReplicaTransport(
                urls,
                retries=self._retries,
                retry_after_seconds=self._retry_after,
                failure_threshold=self._failure_threshold,
                open_seconds=self._open_seconds,
                service=service,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            ),
            base_url=urls[0],
            headers=headers,
            event_hooks=hooks,
            timeout=self._timeout,
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
