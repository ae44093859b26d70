"""Fixtures shared by every test: settings, the embedded platform, HTTP clients, accounts."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from panthera.kernel.events import Envelope
from panthera.kernel.events.embedded import EmbeddedTransport
from panthera.kernel.events.outbox import envelope_of
from panthera.kernel.service import ServiceRuntime
from panthera.kernel.settings import Settings
from panthera.runtime.apps import embedded_app

# CI must prove the integration tests ran: there a missing server fails the run.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PASSWORD = "correct horse battery staple"

# Every event an embedded transport was given during the test, in order.
_PUBLISHED: list[Envelope] = []


@pytest.fixture(autouse=True)
def _record_published(monkeypatch: pytest.MonkeyPatch) -> None:
    _PUBLISHED.clear()
    publish = EmbeddedTransport.publish

    async def recorded(self: EmbeddedTransport, envelope: Envelope) -> None:
        _PUBLISHED.append(envelope)
        await publish(self, envelope)

    monkeypatch.setattr(EmbeddedTransport, "publish", recorded)


async def written_events(runtime: ServiceRuntime, event_type: str | None = None) -> list[Envelope]:
    """Every event ``runtime``'s service wrote (of one type), oldest first: those its relay
    sent, which have left the outbox, then those still in it."""
    outbox = runtime.definition.tables.outbox
    query = select(outbox).order_by(outbox.c.seq)
    async with runtime.database.read_sessions() as session:
        pending = [envelope_of(row, runtime.name) for row in (await session.execute(query)).all()]
    found: dict[uuid.UUID, Envelope] = {}
    for envelope in [*_PUBLISHED, *pending]:
        if envelope.source == runtime.name and event_type in (None, envelope.type):
            found.setdefault(envelope.id, envelope)
    return list(found.values())


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for an embedded platform in a scratch directory, limits raised for tests."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "environment": "test",
        "log_json": False,
        "rate_limit_per_ip_per_minute": 100_000,
        "rate_limit_per_ip_burst": 10_000,
        "rate_limit_per_user_per_minute": 100_000,
        "rate_limit_per_user_burst": 10_000,
        "login_attempts_per_address": 1_000,
        "relay_poll_seconds": 0.2,
        # A checkout's own web/dist must not answer the tests' unknown paths.
        "web_dir": data_dir / "web",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Platform:
    """An embedded platform under test and a client that talks to its gateway."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    @property
    def outbox_dir(self) -> Path:
        return self.settings.data_dir / "outbox"

    async def settle(self) -> None:
        """Let every pending event reach its consumers, and the messages they queued go out."""
        platform = self.app.state.platform
        await platform.drain_outboxes()
        for runtime in platform.runtimes.values():
            drain = runtime.components.get("drain")
            if drain is not None:
                await drain()


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    return lambda **overrides: make_settings(tmp_path, **overrides)


async def start_platform(settings: Settings) -> tuple[FastAPI, httpx.AsyncClient]:
    app = embedded_app(settings)
    await app.state.platform.start()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.10", 50000)),
        base_url="http://testserver",
        timeout=30,
    )
    return app, client


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = make_settings(tmp_path)
    app, client = await start_platform(settings)
    try:
        yield Platform(app=app, client=client, settings=settings)
    finally:
        await client.aclose()
        await app.state.platform.stop()


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


@dataclass
class Account:
    id: uuid.UUID
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def register_and_login(
    client: httpx.AsyncClient, *, email: str | None = None, password: str = PASSWORD
) -> Account:
    email = email or unique_email()
    response = await client.post(
        "/api/v1/users/register",
        json={"email": email, "password": password, "firstName": "Test", "lastName": "User"},
    )
    assert response.status_code == 201, response.text
    user_id = uuid.UUID(response.json()["id"])
    tokens = await login(client, email, password)
    return Account(user_id, email, password, tokens["accessToken"], tokens["refreshToken"])


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    response = await client.post("/api/v1/users/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def make_admin(platform: Platform, email: str | None = None) -> Account:
    """An administrator, made the way ``panthera create-admin`` makes one."""
    from panthera.kernel.security.principal import Role
    from panthera.users import service as users

    account = await register_and_login(platform.client, email=email)
    deps = platform.app.state.platform.apps["users"].state.users_deps
    await users.assign_roles(deps, account.id, [Role.USER, Role.ADMIN])
    await platform.settle()
    tokens = await login(platform.client, account.email, account.password)
    account.access_token = tokens["accessToken"]
    account.refresh_token = tokens["refreshToken"]
    return account
