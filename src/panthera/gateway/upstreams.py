"""How the gateway reaches a service: the service's ASGI app in-process, or HTTP."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol
from urllib.parse import quote

import aiohttp
import yarl
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from panthera.kernel.http.client import Pool
from panthera.kernel.http.middleware import IN_PROCESS
from panthera.kernel.http.replicas import SAFE_METHODS, ReplicaSet

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

# A response keeps its length; everything else hop-by-hop stays with the hop, and
# the gateway's own server sets Date.
RESPONSE_DROP = (HOP_BY_HOP - {b"content-length"}) | {b"date", b"server"}


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
        inner[IN_PROCESS] = True
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


class UpstreamUnreachable(Exception):
    """The service could not be reached, or failed before it began to answer."""


class UpstreamTimeout(UpstreamUnreachable):
    """The service did not answer in time."""


# RFC 3986 characters a path may carry as they are.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class HttpUpstream:
    """Calls the service over pooled keep-alive HTTP connections with timeouts.

    aiohttp rather than httpx here: the gateway makes this hop on every request,
    and aiohttp's connection pool costs a fraction of httpx's per request (see
    bench/RESULTS.md).
    """

    def __init__(
        self,
        base_urls: str | Sequence[str],
        *,
        timeout_seconds: float,
        retries: int,
        retry_after_seconds: float = 5.0,
        failure_threshold: int = 5,
        open_seconds: float = 10.0,
        service: str = "",
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self._replicas = ReplicaSet(
            urls,
            retry_after_seconds=retry_after_seconds,
            failure_threshold=failure_threshold,
            open_seconds=open_seconds,
            service=service,
        )
        self._retries = retries
        # The client's request and the service's answer pass through as they are:
        # nothing added, nothing decoded.
        self._pool = Pool(
            timeout_seconds,
            limit=256,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            auto_decompress=False,
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
        query = scope.get("query_string", b"").decode("latin-1")
        target = quote(path, safe=_PATH_SAFE) + ("?" + query if query else "")
        # The service's own host and the body's real length, not the client's.
        forwarded = [
            (key.decode("latin-1"), value.decode("latin-1"))
            for key, value in headers
            if key not in HOP_BY_HOP
        ]
        started = False
        try:
            async with await self._request(
                scope["method"], target, forwarded, bytes(body)
            ) as response:
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": [
                            (key.lower(), value)
                            for key, value in response.raw_headers
                            if key.lower() not in RESPONSE_DROP
                        ],
                    }
                )
                started = True
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, TimeoutError) as exc:
            if started:
                # Half an answer is already with the client: all that is left is to cut it.
                raise
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(str(exc)) from exc
            raise UpstreamUnreachable(str(exc)) from exc

    def _request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> Awaitable[aiohttp.ClientResponse]:
        # The response only: its body is streamed to the client by the caller.
        session = self._pool.session()
        return self._replicas.call(
            lambda base: session.request(
                method,
                yarl.URL(base + target, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ),
            safe=method in SAFE_METHODS,
            retries=self._retries,
        )

    async def ready(self) -> bool:
        """Ready when at least one replica says it is."""
        for base in self._replicas.urls:
            try:
                async with self._pool.session().get(base + "/readyz", allow_redirects=False) as r:
                    if r.status == 200:
                        return True
            except (aiohttp.ClientError, TimeoutError):
                continue
        return False

    async def close(self) -> None:
        await self._pool.close()
