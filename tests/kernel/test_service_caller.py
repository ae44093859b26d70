"""Service-to-service calls: over aiohttp to replicas in turn, with breakers, timeouts and
rules on what is sent again, against real sockets; and straight into an app in process.

The rules the gateway's hop shares with these calls are tested on both."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import orjson
import pytest
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Scope

from panthera.gateway.upstreams import HttpUpstream, UpstreamTimeout, UpstreamUnreachable
from panthera.kernel.errors import ServiceUnavailable
from panthera.kernel.http.app import create_app
from panthera.kernel.http.breaker import CircuitOpen, CircuitState
from panthera.kernel.http.client import (
    Answer,
    CallFailed,
    InProcessCaller,
    ReplicaCaller,
    ServiceCaller,
    ServiceDirectory,
)
from panthera.kernel.observability import (
    current_request_id,
    current_traceparent,
    set_request_id,
    set_traceparent,
)
from panthera.kernel.security.permissions import INTERNAL_TOKEN_HEADER

NAME = web.AppKey("name", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[str, Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(name: str, handler: Handler) -> str:
        application = web.Application()
        application[NAME] = name
        application.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(application)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _caller(urls: list[str], **overrides: float | int) -> ReplicaCaller:
    options: dict[str, float | int] = {
        "timeout_seconds": 5.0,
        "retries": 0,
        "retry_after_seconds": 60.0,
        **overrides,
    }
    return ReplicaCaller(
        urls,
        headers={INTERNAL_TOKEN_HEADER: "secret"},
        timeout_seconds=float(options["timeout_seconds"]),
        retries=int(options["retries"]),
        retry_after_seconds=float(options["retry_after_seconds"]),
        failure_threshold=int(options.get("failure_threshold", 5)),
        open_seconds=float(options.get("open_seconds", 10.0)),
        service="catalog",
    )


async def _post_while_serving(caller: ServiceCaller, path: str) -> Answer:
    """A POST made while serving request req-1 of trace TRACEPARENT."""
    set_request_id("req-1")
    set_traceparent(TRACEPARENT)
    try:
        return await caller.request(
            "POST",
            path,
            json={"a": 1},
            params={"reason": "expired"},
            headers={"Idempotency-Key": "k"},
        )
    finally:
        set_request_id(None)
        set_traceparent(None)


def _carried(headers: Mapping[str, str]) -> dict[str, object]:
    return {
        "token": headers.get(INTERNAL_TOKEN_HEADER),
        "request_id": headers.get("x-request-id"),
        "traceparent": headers.get("traceparent"),
        "key": headers.get("Idempotency-Key"),
    }


async def test_calls_take_turns_skip_a_dead_replica_and_carry_what_they_must(
    serve: Callable[[str, Handler], Awaitable[str]],
) -> None:
    seen: list[dict[str, object]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(
            {
                "name": request.app[NAME],
                "path": request.path,
                "query": dict(request.query),
                "body": await request.json() if request.can_read_body else None,
                **_carried(request.headers),
            }
        )
        return web.json_response(
            {"name": request.app[NAME]}, status=201, headers={"Retry-After": "3"}
        )

    urls = [await serve("one", answer), await serve("two", answer)]
    caller = _caller([*urls, f"http://127.0.0.1:{_closed_port()}"])
    try:
        first = await _post_while_serving(caller, "/internal/things")
        assert first.status == 201
        assert first.headers["retry-after"] == "3"
        names = [(await caller.request("GET", "/x")).body for _ in range(5)]
    finally:
        await caller.aclose()
    assert seen[0] == {
        "name": "one",
        "path": "/internal/things",
        "query": {"reason": "expired"},
        "body": {"a": 1},
        "token": "secret",
        "request_id": "req-1",
        "traceparent": TRACEPARENT,
        "key": "k",
    }
    # The closed port was tried once, then set aside; the two live ones share the rest.
    assert {b'{"name": "one"}', b'{"name": "two"}'} == set(names)
    assert len(seen) == 6


async def test_calls_fail_fast_once_the_breaker_opens_then_recover(
    serve: Callable[[str, Handler], Awaitable[str]],
) -> None:
    calls: list[str] = []
    healthy = False

    async def answer(request: web.Request) -> web.Response:
        calls.append(request.method)
        return web.Response(status=200 if healthy else 503)

    url = await serve("flaky", answer)
    caller = _caller([url], retry_after_seconds=0, failure_threshold=2, open_seconds=0.2)
    try:
        for _ in range(2):
            assert (await caller.request("GET", "/x")).status == 503
        with pytest.raises(CircuitOpen):
            await caller.request("POST", "/x")
        assert calls == ["GET", "GET"]  # the open breaker sent nothing
        healthy = True
        await asyncio.sleep(0.25)
        assert (await caller.request("GET", "/x")).status == 200
        assert (await caller.request("POST", "/x")).status == 200
        assert caller._replicas.breakers[url].state is CircuitState.CLOSED
    finally:
        await caller.aclose()


async def test_refused_connections_open_the_breaker_until_the_replica_is_back() -> None:
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    calls: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        calls.append(request.method)
        return web.Response(status=200)

    caller = _caller([url], retry_after_seconds=0, failure_threshold=2, open_seconds=0.2)
    runner: web.AppRunner | None = None
    try:
        for _ in range(2):
            with pytest.raises(CallFailed):
                await caller.request("GET", "/x")
        with pytest.raises(CircuitOpen):
            await caller.request("POST", "/x")
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(application)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        # Still open: nothing is sent to the replica that is back until the rest is over.
        with pytest.raises(CircuitOpen):
            await caller.request("GET", "/x")
        assert calls == []
        await asyncio.sleep(0.25)
        assert (await caller.request("GET", "/x")).status == 200
        assert (await caller.request("POST", "/x")).status == 200
        assert calls == ["GET", "POST"]
        assert caller._replicas.breakers[url].state is CircuitState.CLOSED
    finally:
        await caller.aclose()
        if runner is not None:
            await runner.cleanup()


async def test_an_unsafe_request_answered_5xx_is_not_sent_again(
    serve: Callable[[str, Handler], Awaitable[str]],
) -> None:
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.app[NAME])
        return web.Response(status=500 if request.app[NAME] == "bad" else 200)

    urls = [await serve("bad", answer), await serve("good", answer)]
    caller = _caller(urls, retries=2, retry_after_seconds=0, failure_threshold=2, open_seconds=60)
    try:
        statuses = [(await caller.request("POST", "/x")).status for _ in range(8)]
    finally:
        await caller.aclose()
    # Each POST went to exactly one replica; after two 500s the bad one gets nothing.
    assert len(seen) == 8
    assert seen.count("bad") == 2
    assert statuses.count(500) == 2


# These calls and the gateway's hop share one loop (ReplicaSet.call); the same
# failures, for both: what reached a dying replica goes on only if it is safe, a
# timeout is not sent anywhere else. ``send`` answers a status or the name
# of what the caller raised.
Send = Callable[[str], Awaitable[int | str]]


def _service_caller(urls: list[str], timeout: float) -> tuple[Send, Callable[[], Awaitable[None]]]:
    caller = ReplicaCaller(
        urls,
        headers={},
        timeout_seconds=timeout,
        retries=0,
        retry_after_seconds=60,
    )

    async def send(method: str) -> int | str:
        try:
            return (await caller.request(method, "/x")).status
        except CallFailed:
            return "CallFailed"

    return send, caller.aclose


def _gateway_hop(urls: list[str], timeout: float) -> tuple[Send, Callable[[], Awaitable[None]]]:
    upstream = HttpUpstream(urls, timeout_seconds=timeout, retries=0, retry_after_seconds=60)

    async def send(method: str) -> int | str:
        status = 0

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def reply(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope: Scope = {"type": "http", "method": method, "query_string": b""}
        try:
            await upstream.forward(scope, receive, reply, path="/x", headers=[])
        except (UpstreamTimeout, UpstreamUnreachable) as exc:
            return type(exc).__name__
        return status

    return send, upstream.close


async def _two_replicas(
    serve: Callable[[str, Handler], Awaitable[str]], first: Handler
) -> tuple[list[str], list[str]]:
    """Two replicas, the first behaving as told: their URLs, and who saw each request."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append(request.app[NAME])
        if request.app[NAME] == "first":
            return await first(request)
        return web.Response(status=200)

    return [await serve("first", answer), await serve("second", answer)], seen


CALLERS = {
    "service caller": (_service_caller, "CallFailed", "CallFailed"),
    "gateway hop": (_gateway_hop, "UpstreamUnreachable", "UpstreamTimeout"),
}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "moves_on"), [("GET", True), ("HEAD", True), ("POST", False)])
async def test_a_replica_dying_mid_request_is_gone_round_only_for_safe_requests(
    serve: Callable[[str, Handler], Awaitable[str]], caller: str, method: str, moves_on: bool
) -> None:
    async def die(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=200)

    urls, seen = await _two_replicas(serve, die)
    build, broken, _ = CALLERS[caller]
    send, close = build(urls, 5.0)
    try:
        assert await send(method) == (200 if moves_on else broken)
    finally:
        await close()
    # aiohttp itself may send a safe request again once on a new connection first.
    if moves_on:
        assert seen[-1] == "second"
        assert set(seen) == {"first", "second"}
    else:
        assert seen == ["first"]


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_call_that_times_out_is_not_sent_elsewhere(
    serve: Callable[[str, Handler], Awaitable[str]], caller: str, method: str
) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(status=200)

    urls, seen = await _two_replicas(serve, hang)
    build, _, timed_out = CALLERS[caller]
    send, close = build(urls, 0.3)
    started = time.monotonic()
    try:
        assert await send(method) == timed_out
    finally:
        await close()
    assert time.monotonic() - started < 2
    assert seen == ["first"]


async def test_the_directory_calls_a_service_without_an_address_unavailable() -> None:
    directory = ServiceDirectory(
        internal_token="secret", urls={}, timeout_seconds=1.0, retries=0, local_app=None
    )
    with pytest.raises(ServiceUnavailable):
        directory.caller("catalog")
    await directory.close()


def _app_seeing(seen: list[dict[str, object]]) -> Starlette:
    async def things(request: Request) -> Response:
        seen.append(
            {
                "method": request.method,
                "path": request.url.path,
                "host": request.url.hostname,
                "query": dict(request.query_params),
                "body": await request.json() if await request.body() else None,
                **_carried(request.headers),
            }
        )
        return JSONResponse({"ok": True}, status_code=201, headers={"Retry-After": "3"})

    async def stream(_request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for chunk in (b"one ", b"two ", b"three"):
                await asyncio.sleep(0)
                yield chunk

        return StreamingResponse(chunks(), media_type="text/plain")

    async def broken(_request: Request) -> Response:
        raise RuntimeError("broken")

    return Starlette(
        routes=[
            Route("/internal/things/{ref}", things, methods=["GET", "POST"]),
            Route("/stream", stream),
            Route("/broken", broken),
        ]
    )


async def test_in_process_calls_carry_what_remote_ones_do() -> None:
    seen: list[dict[str, object]] = []
    caller = InProcessCaller(
        _app_seeing(seen), service="catalog", headers={INTERNAL_TOKEN_HEADER: "secret"}
    )
    answer = await _post_while_serving(caller, "/internal/things/order%201")
    plain = await caller.request("GET", "/internal/things/x?y=1")
    assert answer.status == 201
    assert answer.body == b'{"ok":true}'
    assert answer.headers["retry-after"] == "3"
    assert answer.headers["content-type"] == "application/json"
    assert seen[0] == {
        "method": "POST",
        "path": "/internal/things/order 1",
        "host": "catalog.internal",
        "query": {"reason": "expired"},
        "body": {"a": 1},
        "token": "secret",
        "request_id": "req-1",
        "traceparent": TRACEPARENT,
        "key": "k",
    }
    assert plain.status == 201
    assert seen[1]["query"] == {"y": "1"}
    assert seen[1]["body"] is None


async def test_an_in_process_answer_is_read_to_its_end_and_a_crash_is_a_failed_call() -> None:
    caller = InProcessCaller(_app_seeing([]), service="catalog", headers={})
    # A streamed answer listens for the caller going away meanwhile: it must not.
    streamed = await asyncio.wait_for(caller.request("GET", "/stream"), 2)
    assert (streamed.status, streamed.body) == (200, b"one two three")
    with pytest.raises(CallFailed):
        await caller.request("GET", "/broken")


async def test_the_directory_calls_a_service_in_process_when_it_is_there() -> None:
    seen: list[dict[str, object]] = []
    app = _app_seeing(seen)
    directory = ServiceDirectory(
        internal_token="secret",
        urls={"catalog": ["http://127.0.0.1:1"]},
        timeout_seconds=1.0,
        retries=0,
        local_app={"catalog": app}.get,
    )
    caller = directory.caller("catalog")
    assert directory.caller("catalog") is caller
    assert (await caller.request("GET", "/internal/things/x")).status == 201
    assert seen[0]["token"] == "secret"
    await directory.close()


async def test_an_in_process_call_leaves_the_callers_request_id_and_trace_as_they_were() -> None:
    # The app's middleware binds a request id and trace of its own when the call
    # carries none (a saga step run from an event): the caller must not take them on.
    app = create_app(
        name="catalog", title="Catalog", description="", max_body_bytes=1024, checks={}
    )

    @app.get("/internal/things")
    async def things() -> dict[str, str | None]:
        return {"requestId": current_request_id(), "traceparent": current_traceparent()}

    caller = InProcessCaller(app, service="catalog", headers={})
    inside = orjson.loads((await caller.request("GET", "/internal/things")).body)
    assert inside["requestId"]
    assert inside["traceparent"]
    assert (current_request_id(), current_traceparent()) == (None, None)
    set_request_id("req-1")
    set_traceparent(TRACEPARENT)
    try:
        await caller.request("GET", "/internal/things")
        assert (current_request_id(), current_traceparent()) == ("req-1", TRACEPARENT)
    finally:
        set_request_id(None)
        set_traceparent(None)
