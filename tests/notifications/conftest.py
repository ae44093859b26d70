"""A real SMTP server (aiosmtpd) and a real HTTP provider endpoint (aiohttp) for the channels."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from panthera.kernel.events import Envelope as EventEnvelope
from panthera.kernel.events import EventContract
from panthera.orders.events import OrderLine
from tests.conftest import Platform, make_settings, start_platform


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class MailServer:
    """What a local SMTP server received, and how it misbehaves on purpose."""

    port: int
    received: list[EmailMessage] = field(default_factory=list)
    # Each DATA consumes one failure: "refuse" answers 451, "drop" hangs up.
    failures: list[str] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.received if message["To"] == address]


class _Handler:
    def __init__(self, server: MailServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        if self.server.failures:
            failure = self.server.failures.pop(0)
            if failure == "drop":
                assert smtp.transport is not None
                smtp.transport.abort()
                return "250 OK"
            return "451 4.3.0 Try again later"
        content = envelope.original_content or b""
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.server.received.append(parsed)
        return "250 OK"


def _authenticator(server: MailServer) -> Callable[..., AuthResult]:
    def authenticate(
        smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        login, password = data.login.decode(), data.password.decode()
        if (login, password) != ("shop", "s3cret-password"):
            return AuthResult(success=False, handled=False)
        server.logins.append(login)
        return AuthResult(success=True)

    return authenticate


@pytest.fixture
def smtp_server() -> Iterator[MailServer]:
    """An SMTP server on localhost that takes AUTH LOGIN/PLAIN without TLS (tests only)."""
    server = MailServer(port=free_port())
    controller = Controller(
        _Handler(server),
        hostname="127.0.0.1",
        port=server.port,
        authenticator=_authenticator(server),
        auth_require_tls=False,
        auth_required=False,
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass
class ProviderEndpoint:
    """A local HTTP server standing in for the SMS and push providers."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Statuses to answer next, one per request; then 200/201.
    statuses: list[int] = field(default_factory=list)


@pytest.fixture
async def provider() -> AsyncIterator[ProviderEndpoint]:
    endpoint = ProviderEndpoint(url="")

    async def twilio(request: web.Request) -> web.Response:
        form = await request.post()
        endpoint.requests.append(
            {
                "kind": "sms",
                "path": request.path,
                "authorization": request.headers.get("Authorization", ""),
                "form": dict(form),
            }
        )
        if endpoint.statuses:
            return web.json_response({"message": "busy"}, status=endpoint.statuses.pop(0))
        return web.json_response({"sid": "SM" + uuid.uuid4().hex, "status": "queued"}, status=201)

    async def fcm(request: web.Request) -> web.Response:
        endpoint.requests.append(
            {
                "kind": "push",
                "path": request.path,
                "authorization": request.headers.get("Authorization", ""),
                "json": await request.json(),
            }
        )
        if endpoint.statuses:
            return web.json_response({"error": "unavailable"}, status=endpoint.statuses.pop(0))
        return web.json_response({"name": "projects/shop/messages/" + uuid.uuid4().hex})

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", twilio)
    app.router.add_post("/v1/projects/shop/messages:send", fcm)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    endpoint.url = str(server.make_url("")).rstrip("/")
    try:
        yield endpoint
    finally:
        await server.close()


@pytest.fixture
async def smtp_platform(
    tmp_path: Path, smtp_server: MailServer, provider: ProviderEndpoint
) -> AsyncIterator[Platform]:
    """The embedded platform sending mail to the local SMTP server, texts and pushes over HTTP."""
    settings = make_settings(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        smtp_security="none",
        smtp_username="shop",
        smtp_password="s3cret-password",
        smtp_timeout_seconds=3,
        sms_api_url=provider.url,
        sms_account_sid="AC123",
        sms_auth_token="twilio-token",
        sms_sender="+15550000000",
        push_api_url=provider.url + "/v1/projects/shop/messages:send",
        push_api_token="fcm-token",
        notification_retry_base_seconds=0.01,
        notification_retry_max_seconds=0.02,
        notification_max_attempts=4,
    )
    app, client = await start_platform(settings)
    try:
        yield Platform(app=app, client=client, settings=settings)
    finally:
        await client.aclose()
        await app.state.platform.stop()


async def publish(platform: Platform, event: EventContract, source: str) -> EventEnvelope:
    """Deliver an event the way the transport does (for services not in this process)."""
    envelope = EventEnvelope.wrap(event, source=source)
    await platform.app.state.platform.transport.publish(envelope)
    return envelope


async def deliver_again(platform: Platform, envelope: EventEnvelope) -> None:
    await platform.app.state.platform.transport.publish(envelope)


async def send_due(platform: Platform, *, pause: float = 0.05, rounds: int = 10) -> None:
    """Let retries come due and the sender take them."""
    for _ in range(rounds):
        await platform.settle()
        await asyncio.sleep(pause)
    await platform.settle()


def line(name: str = "Trail running shoe", quantity: int = 2, unit_price: int = 8950) -> OrderLine:
    return OrderLine(
        product_id=uuid.uuid4(),
        variant_id=uuid.uuid4(),
        sku=f"SKU-{uuid.uuid4().hex[:6].upper()}",
        name=name,
        category_id=uuid.uuid4(),
        quantity=quantity,
        unit_price=unit_price,
        line_total=quantity * unit_price,
    )


NOW = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
