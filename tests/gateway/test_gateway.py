"""The gateway's own duties: limits, headers, request ids, health and routing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from panthera.kernel.settings import Settings
from tests.conftest import Platform, register_and_login, start_platform


async def test_rate_limit_per_address_answers_429_with_retry_after(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(rate_limit_per_ip_per_minute=60, rate_limit_per_ip_burst=5)
    app, client = await start_platform(settings)
    try:
        statuses = [(await client.get("/api/v1/users/me")).status_code for _ in range(5)]
        assert statuses == [401] * 5
        limited = await client.get("/api/v1/users/me")
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 2
        # Another address has its own budget.
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("198.51.100.7", 1)),
            base_url="http://testserver",
        )
        assert (await other.get("/api/v1/users/me")).status_code == 401
        await other.aclose()
    finally:
        await client.aclose()
        await app.state.platform.stop()


async def test_rate_limit_per_user_follows_the_token(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(rate_limit_per_user_per_minute=60, rate_limit_per_user_burst=3)
    app, client = await start_platform(settings)
    try:
        account = await register_and_login(client)
        statuses = []
        for index in range(4):
            # A new address each time: only the per-user budget can refuse.
            per_address = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=(f"192.0.2.{index + 1}", 1)),
                base_url="http://testserver",
            )
            statuses.append(
                (await per_address.get("/api/v1/users/me", headers=account.headers)).status_code
            )
            await per_address.aclose()
        assert statuses == [200, 200, 200, 429]
    finally:
        await client.aclose()
        await app.state.platform.stop()


async def test_oversized_bodies_are_refused_before_the_service(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(max_request_body_bytes=1024)
    app, client = await start_platform(settings)
    try:
        response = await client.post(
            "/api/v1/users/register",
            content=b'{"email": "' + b"a" * 2000 + b'"}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
    finally:
        await client.aclose()
        await app.state.platform.stop()


async def test_every_answer_carries_security_headers_and_a_request_id(platform: Platform) -> None:
    response = await platform.client.get(
        "/api/v1/users/profiles", headers={"X-Request-ID": "shop-trace-42"}
    )
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "shop-trace-42"
    assert response.json()["requestId"] == "shop-trace-42"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "max-age" in response.headers["strict-transport-security"]
    # Ids that could smuggle anything into logs are replaced.
    odd = await platform.client.get("/healthz", headers={"X-Request-ID": "a b\tc" * 50})
    assert odd.headers["x-request-id"] != "a b\tc" * 50
    assert len(odd.headers["x-request-id"]) == 32


async def test_unknown_paths_and_bad_input_answer_problem_json(platform: Platform) -> None:
    missing = await platform.client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    bad = await platform.client.post(
        "/api/v1/users/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_input"
    wrong_type = await platform.client.post("/api/v1/users/register", json=["a", "list"])
    assert wrong_type.status_code == 400


async def test_health_readiness_and_metrics(platform: Platform) -> None:
    assert (await platform.client.get("/healthz")).json() == {"status": "ok"}
    ready = await platform.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"services": True}
    await platform.client.get("/api/v1/users/me")
    metrics = (await platform.client.get("/metrics")).text
    assert "panthera_http_requests_total" in metrics
    assert 'service="gateway"' in metrics
    assert 'service="users"' in metrics


async def test_cors_preflight_for_configured_origins(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(cors_origins=["https://shop.example"])
    app, client = await start_platform(settings)
    try:
        allowed = await client.options(
            "/api/v1/users/login",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        refused = await client.options(
            "/api/v1/users/login",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in refused.headers
    finally:
        await client.aclose()
        await app.state.platform.stop()


async def test_an_unreachable_service_answers_502_not_500(
    settings_factory: Callable[..., Settings],
) -> None:
    from panthera.gateway import build_gateway
    from panthera.gateway.upstreams import HttpUpstream
    from panthera.runtime.platform import Platform as Runtime

    settings = settings_factory()
    runtime = Runtime(settings, ())
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    app = build_gateway(
        settings,
        upstreams={"users": HttpUpstream("http://127.0.0.1:9", timeout_seconds=2, retries=1)},
        authenticator=runtime.authenticator,
        rate_limiter=runtime.rate_limiter,
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    response = await client.post("/api/v1/users/register", json={})
    assert response.status_code == 502
    assert response.json()["code"] == "bad_gateway"
    await client.aclose()


async def test_a_streamed_body_over_the_limit_is_refused(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(max_request_body_bytes=1024)
    app, client = await start_platform(settings)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"a" * 512

    try:
        # No Content-Length: only counting what arrives can refuse it.
        response = await client.post(
            "/api/v1/users/register",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
        assert response.headers["x-content-type-options"] == "nosniff"
    finally:
        await client.aclose()
        await app.state.platform.stop()


async def test_an_unexpected_failure_still_answers_the_platform_error_shape(
    settings_factory: Callable[..., Settings],
) -> None:
    from panthera.gateway import build_gateway
    from panthera.runtime.platform import Platform as Runtime

    class Failing:
        async def forward(self, *_args: Any, **_kwargs: Any) -> None:
            raise RuntimeError("a bug")

        async def ready(self) -> bool:
            return True

        async def close(self) -> None:
            return None

    settings = settings_factory()
    runtime = Runtime(settings, ())
    app = build_gateway(
        settings,
        upstreams={"users": Failing()},
        authenticator=runtime.authenticator,
        rate_limiter=runtime.rate_limiter,
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    try:
        response = await client.get(
            "/api/v1/users/profiles/1", headers={"X-Request-ID": "broken-1"}
        )
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "internal_error"
        assert response.json()["requestId"] == "broken-1"
        assert response.headers["x-request-id"] == "broken-1"
        assert response.headers["x-frame-options"] == "DENY"
        # The gateway's own paths still answer.
        assert (await client.get("/healthz")).status_code == 200
    finally:
        await client.aclose()
