"""Calls spread over a service's replicas and go round one that cannot be reached.

Service-to-service calls over replicas: tests/kernel/test_service_caller.py."""

from __future__ import annotations

import socket

from aiohttp import web

from panthera.gateway.upstreams import HttpUpstream
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
