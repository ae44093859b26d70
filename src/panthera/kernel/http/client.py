"""Service-to-service calls: into the ASGI app when embedded, pooled HTTP when distributed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlencode

import aiohttp
import orjson
import yarl
from starlette.types import ASGIApp, Message, Scope

from panthera.kernel.errors import ServiceUnavailable
from panthera.kernel.http.replicas import SAFE_METHODS, ReplicaSet
from panthera.kernel.observability import (
    current_request_id,
    current_traceparent,
    set_request_id,
    set_traceparent,
)
from panthera.kernel.security.permissions import INTERNAL_TOKEN_HEADER


@dataclass(frozen=True, slots=True)
class Answer:
    """Another service's answer: its status, body (read in full) and headers.

    Look headers up by their lower-case names: that is how an ASGI app gives them.
    """

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class CallFailed(Exception):
    """No answer came back: nothing could be connected, it timed out, or the connection broke."""


class ServiceCaller(Protocol):
    """Calls to one service, by path; answers whatever status it gets."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer: ...

    async def aclose(self) -> None: ...


def _call_headers(
    base: Mapping[str, str], extra: Mapping[str, str] | None, *, has_body: bool
) -> dict[str, str]:
    """A call's headers, lower-cased: the caller's own, the request being served's id
    and trace (one request id, one trace across the call), then the call's extras."""
    headers = dict(base)
    if has_body:
        headers["content-type"] = "application/json"
    request_id = current_request_id()
    if request_id:
        headers["x-request-id"] = request_id
    traceparent = current_traceparent()
    if traceparent:
        headers["traceparent"] = traceparent
    if extra:
        headers.update((k.lower(), v) for k, v in extra.items())
    return headers


class InProcessCaller:
    """Calls to a service in the same process, straight into its ASGI app.

    The app sees what it would over HTTP (the internal token, the request id and
    trace context as headers), so it serves the call as it would a remote one.
    There is no timeout: cancelling the app mid-call would abandon its work half
    done, where a remote service that timed out goes on to the end.
    """

    def __init__(self, app: ASGIApp, *, service: str, headers: Mapping[str, str]) -> None:
        self._app = app
        self._server = (f"{service}.internal", 80)
        self._headers = {"host": f"{service}.internal"}
        self._headers.update((k.lower(), v) for k, v in headers.items())

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        body = b"" if json is None else orjson.dumps(json)
        # Put back after the call: the app runs in this task and binds its own.
        request_id, traceparent = current_request_id(), current_traceparent()
        sent_headers = _call_headers(self._headers, headers, has_body=json is not None)
        sent_headers["content-length"] = str(len(body))
        path, _, query = path.partition("?")
        if params:
            query = f"{query}&{urlencode(params)}" if query else urlencode(params)
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in sent_headers.items()
            ],
            "client": ("127.0.0.1", 0),
            "server": self._server,
            "state": {},
        }
        status = 0
        answer_headers: dict[str, str] = {}
        chunks: list[bytes] = []
        sent = answered = False
        done: asyncio.Event | None = None

        async def receive() -> Message:
            nonlocal sent, done
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            # Asked again, the app is listening for a disconnect: there is none
            # until it has answered.
            if not answered:
                if done is None:
                    done = asyncio.Event()
                await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", ()):
                    answer_headers[key.decode("latin-1").lower()] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    answered = True
                    if done is not None:
                        done.set()

        try:
            await self._app(scope, receive, send)
        except Exception as exc:
            # What a remote service's server would do: the connection breaks.
            raise CallFailed(type(exc).__name__) from exc
        finally:
            if done is not None:
                done.set()
            # The app ran in this task, and its middleware bound its own request id
            # and trace (new ones when the call carried none): the caller's go on.
            set_request_id(request_id)
            set_traceparent(traceparent)
        if not status:
            raise CallFailed("no answer")
        return Answer(status, b"".join(chunks), answer_headers)

    async def aclose(self) -> None:
        return None


class Pool:
    """One pooled aiohttp session for calls to a service's replicas, with one timeout.

    The session is opened on first use: it belongs to the event loop it is opened
    in, the server's, which is not running yet when callers are built.
    """

    def __init__(
        self,
        timeout_seconds: float,
        *,
        limit: int,
        skip_auto_headers: Sequence[str] = ("User-Agent",),
        auto_decompress: bool = True,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, connect=min(2.0, timeout_seconds)
        )
        self._limit = limit
        self._skip_auto_headers = tuple(skip_auto_headers)
        self._auto_decompress = auto_decompress
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # Idle connections are dropped well before the services' uvicorn drops
                # them (75 s), so a request is not written on one being closed.
                connector=aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30),
                timeout=self._timeout,
                auto_decompress=self._auto_decompress,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=self._skip_auto_headers,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ReplicaCaller:
    """Calls to a service's replicas over pooled HTTP: round-robin, breakers, one timeout.

    aiohttp rather than httpx: the saga makes several of these calls per order, and
    aiohttp's client costs a fraction of httpx's CPU per request. A request that
    could not be connected moves on to the next replica; one that reached a
    replica is sent again only if it is safe (GET, HEAD, OPTIONS), so nothing is
    done twice.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        headers: Mapping[str, str],
        timeout_seconds: float,
        retries: int,
        retry_after_seconds: float,
        failure_threshold: int = 5,
        open_seconds: float = 10.0,
        service: str = "",
    ) -> None:
        self._replicas = ReplicaSet(
            urls,
            retry_after_seconds=retry_after_seconds,
            failure_threshold=failure_threshold,
            open_seconds=open_seconds,
            service=service,
        )
        self._headers = {k.lower(): v for k, v in headers.items()}
        self._retries = retries
        self._pool = Pool(timeout_seconds, limit=200)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        body = None if json is None else orjson.dumps(json)
        sent = _call_headers(self._headers, headers, has_body=body is not None)
        session = self._pool.session()

        async def attempt(base: str) -> Answer:
            # The answer is read here, so a connection that breaks while it comes
            # counts as that replica failing.
            async with session.request(
                method,
                yarl.URL(base + path),
                params=params,
                data=body,
                headers=sent,
                allow_redirects=False,
            ) as response:
                return Answer(response.status, await response.read(), response.headers)

        try:
            return await self._replicas.call(
                attempt, safe=method in SAFE_METHODS, retries=self._retries
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            # One that could not connect in time reached nothing: it did not time out
            # on the request.
            slow = isinstance(exc, TimeoutError) and not isinstance(
                exc, aiohttp.ConnectionTimeoutError
            )
            raise CallFailed(("timed out: " if slow else "") + type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._pool.close()


class ServiceDirectory:
    """Finds the other services: by in-process app or by URL, one caller each."""

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
        self._headers = {INTERNAL_TOKEN_HEADER: internal_token}
        self._urls = urls
        self._timeout_seconds = timeout_seconds
        self._retries = retries
        self._retry_after = retry_after_seconds
        self._failure_threshold = failure_threshold
        self._open_seconds = open_seconds
        self._local_app = local_app
        self._callers: dict[str, ServiceCaller] = {}

    def caller(self, service: str) -> ServiceCaller:
        """The caller for one service, created on first use: in process when the
        service is, else over HTTP to its replicas."""
        caller = self._callers.get(service)
        if caller is None:
            caller = self._build(service)
            self._callers[service] = caller
        return caller

    def _build(self, service: str) -> ServiceCaller:
        app = self._local_app(service) if self._local_app is not None else None
        if app is not None:
            return InProcessCaller(app, service=service, headers=self._headers)
        urls = self._urls.get(service)
        if not urls:
            raise ServiceUnavailable(f"No address is configured for the {service} service.")
        return ReplicaCaller(
            urls,
            headers=self._headers,
            timeout_seconds=self._timeout_seconds,
            retries=self._retries,
            retry_after_seconds=self._retry_after,
            failure_threshold=self._failure_threshold,
            open_seconds=self._open_seconds,
            service=service,
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        for caller in self._callers.values():
            await caller.aclose()
        self._callers.clear()
