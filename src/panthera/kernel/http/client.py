"""Service-to-service HTTP: in-process ASGI calls when embedded, pooled HTTP when distributed."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from starlette.types import ASGIApp

from panthera.kernel.errors import ServiceUnavailable
from panthera.kernel.observability import current_request_id, current_traceparent
from panthera.kernel.security.permissions import INTERNAL_TOKEN_HEADER


async def _propagate_context(request: httpx.Request) -> None:
    request_id = current_request_id()
    if request_id:
        request.headers["x-request-id"] = request_id
    traceparent = current_traceparent()
    if traceparent:
        request.headers["traceparent"] = traceparent


class ServiceDirectory:
    """Finds the other services: by in-process app or by URL, one pooled client each."""

    def __init__(
        self,
        *,
        internal_token: str,
        urls: dict[str, str],
        timeout_seconds: float,
        retries: int,
        local_app: Callable[[str], ASGIApp | None] | None = None,
    ) -> None:
        self._internal_token = internal_token
        self._urls = urls
        self._timeout = httpx.Timeout(timeout_seconds, connect=min(2.0, timeout_seconds))
        self._retries = retries
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
        url = self._urls.get(service)
        if not url:
            raise ServiceUnavailable(f"No address is configured for the {service} service.")
        return httpx.AsyncClient(
            # Connection-level retries only: a request that reached the peer is not resent.
            transport=httpx.AsyncHTTPTransport(
                retries=self._retries,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            ),
            base_url=url,
            headers=headers,
            event_hooks=hooks,
            timeout=self._timeout,
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
