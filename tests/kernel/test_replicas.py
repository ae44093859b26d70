"""Calls spread over a service's replicas and go round one that cannot be reached.

``ReplicaSet.call`` is the one loop behind both the gateway's hop and the services'
calls to each other. Both run through the same dying and hanging replicas, and the
service-to-service calls' other rules: tests/kernel/test_service_caller.py."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from panthera.gateway.upstreams import HttpUpstream
from panthera.kernel.http.breaker import CircuitOpen
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
