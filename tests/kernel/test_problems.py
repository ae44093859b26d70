"""A database that is full, starting, unreachable or saturated answers 503, never 500."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from panthera.kernel.http.problems import PROBLEM_CONTENT_TYPE, install_problem_handlers

FAILURES: dict[str, Exception] = {
    "pool_exhausted": PoolTimeoutError("QueuePool limit of size 2 overflow 0 reached"),
    "server_full": asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    "server_starting": asyncpg.CannotConnectNowError("the database system is starting up"),
    "refused": ConnectionRefusedError(111, "Connection refused"),
    "lost": OperationalError("SELECT 1", {}, ConnectionResetError()),
}


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/fail/{name}")
    async def fail(name: str) -> None:
        raise FAILURES[name]

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    return app


@pytest.mark.parametrize("name", sorted(FAILURES))
async def test_database_trouble_is_a_503_problem_with_retry_after(name: str) -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(f"/fail/{name}")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM_CONTENT_TYPE)
    assert response.headers["retry-after"] == "1"
    assert response.json()["code"] == "service_unavailable"


async def test_anything_else_is_a_500_problem() -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/bug")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
