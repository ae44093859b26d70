"""Calls spread over a service's replicas and go round one that cannot be reached.

``ReplicaSet.call`` is the one loop behind both the gateway's hop and the services'
calls to each other; the last tests here run both through the same failures.
Service-to-service calls over replicas: tests/kernel/test_service_caller.py."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from starlette.types import Message, Scope

from panthera.gateway.upstreams import HttpUpstream, UpstreamTimeout, UpstreamUnreachable
from panthera.kernel.http.breaker import CircuitOpen
from panthera.kernel.http.client import CallFailed, ReplicaCaller
from panthera.kernel.http.replicas import ReplicaSet

NAME = web.AppKey("name", str)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_replicas_take_turns() -> None:
    replicas = ReplicaSet(["http://a", "http://b/"], retry_after_seconds=5)
    firsts = [next(replicas.order()) for _ in range(4)]
    assert firsts == ["http://a", "http://b", "http://a", "http://b"]


def test_a_refusing_replica_is_passed_over_for_a_while() -> None:
    clock = Clock()
    replicas = ReplicaSet(["http://a", "http://b"], retry_after_seconds=5, clock=clock)
    replicas.refused("http://a")
    assert [next(replicas.order()) for _ in range(4)] == ["http://b"] * 4
    # Every replica is still offered, the resting one last.
    assert list(replicas.order()) == ["http://b", "http://a"]
    clock.now += 5
    assert {next(replicas.order()) for _ in range(2)} == {"http://a", "http://b"}


def test_when_all_rest_all_are_tried() -> None:
    replicas = ReplicaSet(["http://a", "http://b"], retry_after_seconds=5)
    replicas.refused("http://a")
    replicas.refused("http://b")
    assert sorted(replicas.order()) == ["http://a", "http://b"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_the_gateway_spreads_requests_and_skips_a_dead_replica() -> None:
    hits: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        hits.append(request.app[NAME])
        return web.Response(text=request.app[NAME])

    runners = []
    urls = []
    for name in ("one", "two"):
        application = web.Application()
        application[NAME] = name
        application.router.add_get("/thing", answer)
        runner = web.AppRunner(application)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        urls.append(f"http://127.0.0.1:{port}")
    upstream = HttpUpstream(
        [*urls, f"http://127.0.0.1:{_closed_port()}"], timeout_seconds=5, retries=0
    )
    try:
        for _ in range(6):
            async with await upstream._request("GET", "/thing", [], b"") as response:
                assert response.status == 200
        assert sorted(set(hits)) == ["one", "two"]
        assert await upstream.ready() is False  # no /readyz on these stand-ins
        await runners[0].cleanup()
        for _ in range(4):
            async with await upstream._request("GET", "/thing", [], b"") as response:
                assert await response.text() == "two"
    finally:
        await upstream.close()
        for runner in runners:
            await runner.cleanup()


@dataclass
class Reply:
    status: int = 200
    replica: str = ""


# What each failure of an attempt means: ``refused`` (nothing reached the replica,
# set it aside and go on), ``again`` (it broke with the request in hand: go on
# only if the request is safe) or ``stop`` (timed out: never sent again).
FAILURES: list[tuple[Callable[[], BaseException], str]] = [
    (lambda: aiohttp.ClientConnectorError(None, OSError(111, "refused")), "refused"),  # type: ignore[arg-type]
    (lambda: aiohttp.ConnectionTimeoutError("connect"), "refused"),
    (lambda: aiohttp.ServerDisconnectedError(), "again"),
    (lambda: aiohttp.ClientOSError(104, "reset"), "again"),
    (lambda: aiohttp.ClientPayloadError("cut short"), "again"),
    (lambda: aiohttp.SocketTimeoutError("read"), "stop"),
    (lambda: TimeoutError(), "stop"),
]


@pytest.mark.parametrize("safe", [True, False])
@pytest.mark.parametrize(("failure", "kind"), FAILURES)
async def test_each_failure_of_an_attempt_is_classified_once_for_every_caller(
    failure: Callable[[], BaseException], kind: str, safe: bool
) -> None:
    replicas = ReplicaSet(["http://a", "http://b"], retry_after_seconds=60)
    tried: list[str] = []

    async def attempt(base: str) -> Reply:
        tried.append(base)
        if base == "http://a":
            raise failure()
        return Reply(replica=base)

    moves_on = kind == "refused" or (kind == "again" and safe)
    if moves_on:
        assert (await replicas.call(attempt, safe=safe, retries=0)).replica == "http://b"
        assert tried == ["http://a", "http://b"]
    else:
        with pytest.raises(type(failure())):
            await replicas.call(attempt, safe=safe, retries=0)
        assert tried == ["http://a"]
    # Every failure counts against the breaker; only a refusal sets the replica aside.
    assert replicas.breakers["http://a"]._failures == 1
    next(replicas.order())  # b's turn
    assert list(replicas.order()) == (
        ["http://b", "http://a"] if kind == "refused" else ["http://a", "http://b"]
    )


async def test_when_every_round_fails_the_last_failure_is_raised() -> None:
    replicas = ReplicaSet(["http://a", "http://b"], retry_after_seconds=0)
    tried: list[str] = []

    async def attempt(base: str) -> Reply:
        tried.append(base)
        raise aiohttp.ServerDisconnectedError(base)

    with pytest.raises(aiohttp.ServerDisconnectedError) as raised:
        await replicas.call(attempt, safe=True, retries=2)
    assert len(tried) == 6
    assert raised.value.message == tried[-1]


async def test_answers_count_for_the_breaker_and_open_breakers_fail_at_once() -> None:
    replicas = ReplicaSet(["http://a"], retry_after_seconds=0, failure_threshold=2)

    async def attempt(base: str) -> Reply:
        return Reply(503)

    for _ in range(2):
        assert (await replicas.call(attempt, safe=False, retries=3)).status == 503
    with pytest.raises(CircuitOpen):
        await replicas.call(attempt, safe=True, retries=3)


# Both callers, the same failures: what reached a dying replica goes on only if it is
# safe, a timeout is not sent anywhere else. ``send`` answers a status or the name
# of what the caller raised.
Send = Callable[[str], Awaitable[int | str]]


def _service_caller(urls: list[str], timeout: float) -> tuple[Send, Callable[[], Any]]:
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


def _gateway_hop(urls: list[str], timeout: float) -> tuple[Send, Callable[[], Any]]:
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


Behave = Callable[[web.Request], Awaitable[web.StreamResponse]]
Start = Callable[[Behave], Awaitable[tuple[list[str], list[str]]]]


@pytest.fixture
async def two_replicas() -> AsyncIterator[Start]:
    """Starts two replicas, the first behaving as told: their URLs and who saw what."""
    runners: list[web.AppRunner] = []

    async def start(behave: Behave) -> tuple[list[str], list[str]]:
        urls: list[str] = []
        seen: list[str] = []
        for name in ("first", "second"):

            async def answer(request: web.Request) -> web.StreamResponse:
                seen.append(request.app[NAME])
                if request.app[NAME] == "first":
                    return await behave(request)
                return web.Response(status=200)

            application = web.Application()
            application[NAME] = name
            application.router.add_route("*", "/{tail:.*}", answer)
            runner = web.AppRunner(application)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            urls.append(f"http://127.0.0.1:{port}")
        return urls, seen

    yield start
    for runner in runners:
        await runner.cleanup()


CALLERS = {
    "service caller": (_service_caller, "CallFailed", "CallFailed"),
    "gateway hop": (_gateway_hop, "UpstreamUnreachable", "UpstreamTimeout"),
}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "moves_on"), [("GET", True), ("HEAD", True), ("POST", False)])
async def test_a_replica_dying_mid_request_is_gone_round_only_for_safe_requests(
    two_replicas: Start, caller: str, method: str, moves_on: bool
) -> None:
    async def die(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=200)

    urls, seen = await two_replicas(die)
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
    two_replicas: Start, caller: str, method: str
) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(status=200)

    urls, seen = await two_replicas(hang)
    build, _, timed_out = CALLERS[caller]
    send, close = build(urls, 0.3)
    started = time.monotonic()
    try:
        assert await send(method) == timed_out
    finally:
        await close()
    assert time.monotonic() - started < 2
    assert seen == ["first"]
