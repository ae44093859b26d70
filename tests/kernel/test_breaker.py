"""Circuit breakers: open after failures in a row, fail fast, let one trial through after a rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from panthera.gateway.upstreams import HttpUpstream
from panthera.kernel.http.breaker import CircuitBreaker, CircuitOpen, CircuitState
from panthera.kernel.http.replicas import ReplicaSet
from panthera.kernel.settings import Settings

NAME = web.AppKey("name", str)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, threshold: int = 3, open_seconds: float = 10) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, open_seconds=open_seconds, clock=clock)


def test_it_opens_after_the_threshold_of_failures_in_a_row() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # a success in between starts the count again
    breaker.failure()
    breaker.failure()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()
    breaker.failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()
    assert breaker.retry_after() == 10


def test_after_the_rest_one_trial_closes_it_on_success() -> None:
    clock = Clock()
    breaker = _breaker(clock, threshold=1)
    breaker.failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert breaker.state is CircuitState.HALF_OPEN
    # Only the one trial: others still fail fast while it is out.
    assert not breaker.allow()
    breaker.success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()
    assert breaker.allow()


def test_a_failed_trial_opens_it_again_for_a_whole_rest() -> None:
    clock = Clock()
    breaker = _breaker(clock, threshold=3)
    for _ in range(3):
        breaker.failure()
    clock.now += 10
    assert breaker.allow()
    breaker.failure()  # one failure is enough in half-open
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after() == 10
    clock.now += 5
    assert not breaker.allow()


def test_a_trial_that_never_reports_does_not_hold_it_half_open() -> None:
    clock = Clock()
    breaker = _breaker(clock, threshold=1)
    breaker.failure()
    clock.now += 10
    assert breaker.allow()
    assert not breaker.allow()
    clock.now += 10
    assert breaker.allow()


def test_the_gauge_follows_the_state() -> None:
    clock = Clock()
    replicas = ReplicaSet(
        ["http://gauge-a:1"], retry_after_seconds=1, failure_threshold=1, service="s", clock=clock
    )

    def value() -> float | None:
        return REGISTRY.get_sample_value(
            "panthera_circuit_state", {"service": "s", "address": "http://gauge-a:1"}
        )

    assert value() == 0
    replicas.failed("http://gauge-a:1")
    assert value() == 2
    clock.now += 10
    assert replicas.claim("http://gauge-a:1")
    assert value() == 1
    replicas.answered("http://gauge-a:1", 200)
    assert value() == 0


def test_4xx_answers_do_not_count_5xx_do() -> None:
    replicas = ReplicaSet(["http://a"], retry_after_seconds=1, failure_threshold=2)
    for _ in range(5):
        replicas.answered("http://a", 404)
    assert replicas.breakers["http://a"].state is CircuitState.CLOSED
    replicas.answered("http://a", 502)
    replicas.answered("http://a", 503)
    assert replicas.breakers["http://a"].state is CircuitState.OPEN
    with pytest.raises(CircuitOpen) as raised:
        list(replicas.order())
    assert raised.value.status == 503
    assert raised.value.code == "service_unavailable"
    assert raised.value.headers["Retry-After"] == "10"


events = st.lists(
    st.one_of(
        st.just("success"),
        st.just("failure"),
        st.just("allow"),
        st.floats(min_value=0, max_value=20).map(lambda s: ("wait", s)),
    ),
    max_size=60,
)


@given(threshold=st.integers(min_value=1, max_value=5), script=events)
def test_it_follows_the_model(threshold: int, script: list[object]) -> None:
    """Against a plain restatement of the rules, for any order of events and waits."""
    clock = Clock()
    breaker = _breaker(clock, threshold=threshold, open_seconds=10)
    state, failures, since, trial = "closed", 0, 0.0, None
    for event in script:
        if isinstance(event, tuple):
            clock.now += event[1]
        elif event == "success":
            breaker.success()
            state, failures, trial = "closed", 0, None
        elif event == "failure":
            breaker.failure()
            failures += 1
            if state == "half_open" or failures >= threshold:
                state, since, trial = "open", clock.now, None
        else:
            if state == "closed":
                expected = True
            elif state == "open":
                expected = clock.now >= since + 10
            else:
                expected = trial is None or clock.now >= trial + 10
            assert breaker.allow() is expected
            if expected and state != "closed":
                state, trial = "half_open", clock.now
        assert breaker.state.name.lower() == state


# Service to service calls: tests/kernel/test_service_caller.py.


# The gateway's upstreams (aiohttp), against real sockets.


async def _serve(name: str, handler: Callable[[web.Request], object]) -> tuple[web.AppRunner, str]:
    application = web.Application()
    application[NAME] = name
    application.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def servers() -> AsyncIterator[list[web.AppRunner]]:
    runners: list[web.AppRunner] = []
    yield runners
    for runner in runners:
        await runner.cleanup()


async def test_the_gateway_answers_503_fast_once_open_then_recovers(
    settings_factory: Callable[..., Settings], servers: list[web.AppRunner]
) -> None:
    from panthera.gateway import build_gateway
    from panthera.runtime.platform import Platform as Runtime

    hanging = True

    async def answer(request: web.Request) -> web.Response:
        if hanging:
            await asyncio.sleep(5)
        return web.json_response({"ok": True})

    runner, url = await _serve("slow", answer)
    servers.append(runner)
    upstream = HttpUpstream(
        url, timeout_seconds=0.3, retries=0, failure_threshold=2, open_seconds=0.5, service="users"
    )
    settings = settings_factory()
    runtime = Runtime(settings, ())
    app = build_gateway(
        settings,
        upstreams={"users": upstream},
        authenticator=runtime.authenticator,
        rate_limiter=runtime.rate_limiter,
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    try:
        for _ in range(2):
            assert (await client.post("/api/v1/users/register", json={})).status_code == 504
        started = time.monotonic()
        response = await client.post("/api/v1/users/register", json={})
        assert time.monotonic() - started < 0.2  # no wait on the timeout
        assert response.status_code == 503
        assert response.json()["code"] == "service_unavailable"
        assert response.headers["retry-after"] == "1"
        hanging = False
        await asyncio.sleep(0.55)
        assert (await client.post("/api/v1/users/register", json={})).status_code == 200
        assert (await client.post("/api/v1/users/register", json={})).status_code == 200
    finally:
        await client.aclose()
        await upstream.close()


async def test_with_two_replicas_an_open_breaker_sends_everything_to_the_other(
    servers: list[web.AppRunner],
) -> None:
    hits: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        name = request.app[NAME]
        hits.append(name)
        return web.Response(status=500 if name == "broken" else 200, text=name)

    for name in ("broken", "healthy"):
        runner, _ = await _serve(name, answer)
        servers.append(runner)
    urls = [
        f"http://127.0.0.1:{r.addresses[0][1]}"  # type: ignore[index]
        for r in servers
    ]
    upstream = HttpUpstream(
        urls, timeout_seconds=5, retries=0, failure_threshold=2, open_seconds=60
    )
    try:
        texts = []
        for _ in range(12):
            async with await upstream._request("GET", "/thing", [], b"") as response:
                texts.append(await response.text())
        assert hits.count("broken") == 2
        assert texts[-8:] == ["healthy"] * 8
    finally:
        await upstream.close()
