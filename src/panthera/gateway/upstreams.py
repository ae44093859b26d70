"""How the gateway reaches a service: the service's ASGI app in-process, or HTTP."""

from __future__ import annotations

from typing import Protocol

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)

# A response keeps its length; everything else hop-by-hop stays with the hop.
RESPONSE_DROP = HOP_BY_HOP - {b"content-length"}


class Upstream(Protocol):
    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        path: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Send the request on to the service and its answer back to the client."""

    async def ready(self) -> bool:
        """Whether the service says it is ready."""

    async def close(self) -> None:
        """Release connections."""


class InProcessUpstream:
    """Calls the service's ASGI app directly: no sockets, no serialisation in between."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        path: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        inner = dict(scope)
        inner["path"] = path
        inner["raw_path"] = path.encode()
        inner["root_path"] = ""
        inner["headers"] = headers
        inner.pop("route", None)
        inner.pop("endpoint", None)
        inner.pop("path_params", None)
        inner["state"] = {}
        await self.app(inner, receive, send)

    async def ready(self) -> bool:
        status = 0

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/readyz",
            "raw_path": b"/readyz",
            "root_path": "",
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 0),
            "server": ("gateway", 0),
            "state": {},
        }
        await self.app(scope, receive, send)
        return status == 200

    async def close(self) -> None:
        return None


class HttpUpstream:
    """Calls the service over pooled HTTP connections with timeouts."""

    def __init__(self, base_url: str, *, timeout_seconds: float, retries: int) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_seconds, connect=min(2.0, timeout_seconds)),
            # Only failures to connect are retried: a request that reached the
            # service may have changed something and is not sent twice.
            transport=httpx.AsyncHTTPTransport(
                retries=retries,
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
            ),
            follow_redirects=False,
        )

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        path: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                break
        query = scope.get("query_string", b"")
        url = path + ("?" + query.decode("latin-1") if query else "")
        # The service's own host and the body's real length, not the client's.
        forwarded = [(key, value) for key, value in headers if key not in HOP_BY_HOP]
        request = self._client.build_request(
            scope["method"], url, headers=forwarded, content=bytes(body) if body else None
        )
        response = await self._client.send(request, stream=True)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.lower(), v)
                        for k, v in response.headers.raw
                        if k.lower() not in RESPONSE_DROP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def ready(self) -> bool:
        try:
            response = await self._client.get("/readyz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def close(self) -> None:
        await self._client.aclose()
