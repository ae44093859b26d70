"""A payments service of its own, built without the registry: the runtime platform with
only payments added, tokens signed by a key made here, and a client for the service app.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from panthera.kernel.events import Envelope
from panthera.kernel.security.permissions import INTERNAL_TOKEN_HEADER
from panthera.kernel.security.tokens import SigningKey, TokenIssuer, jwks_document
from panthera.kernel.service import ServiceRuntime
from panthera.kernel.settings import Settings
from panthera.payments import definition
from panthera.payments.deps import PaymentsDeps
from panthera.payments.models import Payment
from panthera.payments.providers import TestProvider
from panthera.runtime.platform import Platform
from tests.conftest import make_settings, written_events


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID
    headers: dict[str, str]

    def with_key(self, key: str) -> dict[str, str]:
        return {**self.headers, "Idempotency-Key": key}


@dataclass
class PaymentsService:
    """The payments app under test and what the tests need around it."""

    platform: Platform
    settings: Settings
    client: httpx.AsyncClient
    issuer: TokenIssuer
    test_provider: TestProvider

    @property
    def app(self) -> FastAPI:
        return self.platform.apps["payments"]

    @property
    def runtime(self) -> ServiceRuntime:
        return self.platform.runtimes["payments"]

    @property
    def deps(self) -> PaymentsDeps:
        deps: PaymentsDeps = self.app.state.payments_deps
        return deps

    @property
    def provider(self) -> TestProvider:
        """The test provider the service was built with (tests may wrap it in deps)."""
        return self.test_provider

    @property
    def internal_headers(self) -> dict[str, str]:
        return {INTERNAL_TOKEN_HEADER: self.settings.internal_token.get_secret_value()}

    def caller(self, *roles: str) -> Caller:
        user_id = uuid.uuid4()
        token = self.issuer.issue_access_token(
            str(user_id), roles=list(roles or ("USER",)), ttl_seconds=900
        )
        return Caller(user_id, {"Authorization": f"Bearer {token}"})

    def admin(self) -> Caller:
        return self.caller("USER", "ADMIN")

    async def settle(self) -> None:
        """Let the test provider's webhooks arrive."""
        await self.provider.drain()

    async def pay(
        self,
        caller: Caller,
        *,
        order: str | None = None,
        amount: str = "10.00",
        currency: str = "USD",
        token: str = "tok_visa",
        key: str | None = None,
        settle: bool = True,
    ) -> dict[str, Any]:
        """A payment made through the API; settled (webhook applied) unless told otherwise."""
        response = await self.client.post(
            "/payments",
            json={
                "orderId": order or f"order-{uuid.uuid4()}",
                "amount": amount,
                "currency": currency,
                "paymentMethod": token,
            },
            headers=caller.with_key(key or str(uuid.uuid4())),
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        if settle:
            await self.settle()
            return await self.get(caller, body["paymentId"])
        return body

    async def get(self, caller: Caller, payment_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/payments/{payment_id}", headers=caller.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def events(self, event_type: str | None = None) -> list[Envelope]:
        """The events the service wrote (of one type), sent or not, oldest first."""
        return await written_events(self.runtime, event_type)

    async def payment_count(self, **filters: Any) -> int:
        async with self.runtime.database.read_sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(Payment).filter_by(**filters)
            )
        return int(count or 0)


async def start_payments(settings: Settings) -> PaymentsService:
    platform = Platform(settings, ())
    platform._add(definition)
    key = SigningKey.generate()
    platform._use_local_jwks(lambda: jwks_document([key]))
    issuer = TokenIssuer([key], issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    await platform.start()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=platform.apps["payments"]),
        base_url="http://payments.test",
        timeout=30,
    )
    provider = platform.apps["payments"].state.payments_deps.provider
    assert isinstance(provider, TestProvider)
    return PaymentsService(platform, settings, client, issuer, provider)


@pytest.fixture
async def payments(tmp_path: Path) -> AsyncIterator[PaymentsService]:
    service = await start_payments(make_settings(tmp_path))
    try:
        yield service
    finally:
        await service.client.aclose()
        await service.platform.stop()
