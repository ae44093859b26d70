"""Builds and runs a set of services in one process, with the adapters the settings choose."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.types import ASGIApp

from panthera.kernel.db import Database
from panthera.kernel.errors import ServiceUnavailable
from panthera.kernel.events.embedded import EmbeddedTransport
from panthera.kernel.events.transport import BatchDeliveryHandler, EventTransport
from panthera.kernel.http.app import add_routes, create_app
from panthera.kernel.http.client import ServiceDirectory
from panthera.kernel.migrations import upgrade
from panthera.kernel.observability import OUTBOX_LAG, OUTBOX_PENDING, QUEUE_DEPTH
from panthera.kernel.ratelimit import build_attempt_counter, build_rate_limiter
from panthera.kernel.security.passwords import PasswordHasher
from panthera.kernel.security.permissions import Authenticator
from panthera.kernel.security.principal import MemoryRevocations, RedisRevocations, Revocations
from panthera.kernel.security.tokens import JwksClient, TokenVerifier
from panthera.kernel.service import ServiceDefinition, ServiceRuntime
from panthera.kernel.settings import EventTransportKind, Settings
from panthera.runtime.registry import definition

log = logging.getLogger("panthera.runtime")


def _transport(settings: Settings) -> EventTransport:
    if settings.event_transport is EventTransportKind.RABBITMQ:
        from panthera.kernel.events.rabbitmq import RabbitMQTransport

        if not settings.amqp_url:
            raise ValueError("PANTHERA_AMQP_URL is required with the rabbitmq transport")
        namespace = settings.amqp_namespace
        return RabbitMQTransport(
            settings.amqp_url,
            exchange=f"{namespace}.events",
            dead_letter_exchange=f"{namespace}.dlx",
            queue_prefix=namespace,
        )
    return EmbeddedTransport()


# Events handed to a platform consumer at once: at most what the broker lets a
# consumer hold unacknowledged.
CONSUMER_BATCH = 32
# How often each service forgets the events it applied longer ago than its retention.
INBOX_PURGE_EVERY_SECONDS = 3600.0


class Platform:
    """The services of one process and what they share: transport, stores, clients.

    Embedded, every service lives here and they call each other in-process;
    distributed, a process holds one service and finds the others by URL.
    """

    def __init__(self, settings: Settings, services: Sequence[str]) -> None:
        self.settings = settings
        self.transport = _transport(settings)
        self.redis: aioredis.Redis | None = (
            aioredis.from_url(settings.redis_url) if settings.redis_url else None
        )
        self.revocations: Revocations = (
            RedisRevocations(self.redis) if self.redis is not None else MemoryRevocations()
        )
        self.rate_limiter = build_rate_limiter(settings.redis_url)
        self.attempts = build_attempt_counter(settings.redis_url)
        self.password_hasher = PasswordHasher(
            memory_cost=settings.password_memory_kib,
            time_cost=settings.password_time_cost,
            parallelism=settings.password_parallelism,
        )
        self.apps: dict[str, FastAPI] = {}
        self.directory = ServiceDirectory(
            internal_token=settings.internal_token.get_secret_value(),
            urls=settings.replica_urls(),
            timeout_seconds=settings.http_timeout_seconds,
            retries=settings.http_retries,
            retry_after_seconds=settings.replica_retry_after_seconds,
            failure_threshold=settings.circuit_failure_threshold,
            open_seconds=settings.circuit_open_seconds,
            local_app=self._local_app,
        )
        self.verifier = TokenVerifier(
            JwksClient(
                self._fetch_jwks,
                cache_seconds=settings.jwks_cache_seconds,
                min_refresh_interval_seconds=5,
            ),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        self.authenticator = Authenticator(self.verifier, self.revocations)
        self.runtimes: dict[str, ServiceRuntime] = {}
        # Consumers that belong to no service (the gateway's response cache).
        self._consumers: list[tuple[str, list[str], BatchDeliveryHandler]] = []
        self._local_jwks: Callable[[], dict[str, Any]] | None = None
        for name in services:
            self._add(definition(name))
        self._started = False
        self._gauges: asyncio.Task[None] | None = None
        self._purges: asyncio.Task[None] | None = None

    def add_consumer(
        self, consumer: str, event_types: Iterable[str], handler: BatchDeliveryHandler
    ) -> None:
        """Subscribe ``handler`` on :meth:`start`, beside the services' consumers; it is
        handed the events delivered together (up to ``CONSUMER_BATCH`` at a time).

        For consumers without a database, hence without an inbox: their handlers must
        be harmless to run twice for one event.
        """
        if self._started:
            raise RuntimeError("add consumers before the platform starts")
        self._consumers.append((consumer, list(event_types), handler))

    def _local_app(self, name: str) -> ASGIApp | None:
        return self.apps.get(name)

    def _use_local_jwks(self, provider: Callable[[], dict[str, Any]]) -> None:
        self._local_jwks = provider

    async def _fetch_jwks(self) -> dict[str, Any]:
        if self._local_jwks is not None:
            return self._local_jwks()
        answer = await self.directory.caller("auth").request("GET", "/.well-known/jwks.json")
        if answer.status != 200:
            raise ServiceUnavailable(f"The auth service answered {answer.status} for its JWKS.")
        document: dict[str, Any] = orjson.loads(answer.body)
        return document

    def _add(self, service: ServiceDefinition) -> None:
        runtime = ServiceRuntime(
            definition=service,
            settings=self.settings,
            database=Database(
                self.settings.database_url_for(service.name),
                pool_size=self.settings.database_pool_size,
                max_overflow=self.settings.database_max_overflow,
            ),
            transport=self.transport,
            components={
                "directory": self.directory,
                "revocations": self.revocations,
                "rate_limiter": self.rate_limiter,
                "attempts": self.attempts,
                "password_hasher": self.password_hasher,
                "authenticator": self.authenticator,
                "local_jwks": self._use_local_jwks,
            },
        )
        self.runtimes[service.name] = runtime
        self.apps[service.name] = self._service_app(runtime)

    def _service_app(self, runtime: ServiceRuntime) -> FastAPI:
        service = runtime.definition
        state = service.state(runtime) if service.state is not None else {}
        checks = {"database": runtime.database.ping, "events": self.transport.ready}
        if self.redis is not None:
            checks["redis"] = self.revocations.ready
        # What a service's own state depends on (e.g. the catalog's object storage).
        checks.update(runtime.components.get("readiness_checks", {}))
        app = create_app(
            name=service.name,
            title=service.title,
            description=service.description,
            max_body_bytes=self.settings.max_request_body_bytes,
            body_limit_overrides=self.settings.body_limit_overrides(),
            checks=checks,
            server_url=service.api_prefix,
        )
        app.state.authenticator = self.authenticator
        app.state.internal_token = self.settings.internal_token.get_secret_value()
        app.state.settings = self.settings
        app.state.runtime = runtime
        for key, value in state.items():
            setattr(app.state, key, value)
        add_routes(app, service.router())
        return app

    async def migrate(self) -> None:
        """Bring every service's database to its newest schema."""
        for runtime in self.runtimes.values():
            await upgrade(runtime.database, runtime.definition.migrations_dir, runtime.name)

    async def start(self, *, one_shot: bool = False) -> None:
        """Migrate (when configured), connect the transport, subscribe and start relays.

        ``one_shot`` is for commands that do a job and exit beside running
        services: with a broker they publish but do not consume, so they take no
        events meant for the long-running processes. In-process, events have no
        other consumer than this process, so it consumes them either way.
        """
        if self._started:
            return
        if self.settings.migrate_on_start:
            await self.migrate()
        await self.transport.start()
        consume = not one_shot or isinstance(self.transport, EmbeddedTransport)
        for runtime in self.runtimes.values():
            if runtime.definition.on_start is not None:
                await runtime.definition.on_start(runtime)
            if consume:
                await runtime.subscribe()
        if consume:
            for consumer, event_types, handler in self._consumers:
                await self.transport.subscribe_batch(
                    consumer, event_types, handler, max_batch=CONSUMER_BATCH
                )
        else:
            await self._declare_consumers()
        for runtime in self.runtimes.values():
            runtime.relay.start()
        if self.runtimes:
            self._gauges = asyncio.create_task(self._report_outbox_lag(), name="outbox-gauges")
            if consume:
                self._purges = asyncio.create_task(self._purge_inboxes(), name="inbox-purges")
        self._started = True
        log.info("services started", extra={"services": list(self.runtimes)})

    async def _declare_consumers(self) -> None:
        """Bind every consumer's queue on the broker without consuming.

        A one-shot command (``create-admin``...) may run before the long-running
        processes ever started: its events must find their consumers' queues.
        """
        declare = getattr(self.transport, "declare", None)
        if declare is None:
            return
        for runtime in self.runtimes.values():
            event_types = runtime.subscribed_event_types()
            if event_types:
                await declare(runtime.name, event_types)
        for consumer, event_types, _handler in self._consumers:
            await declare(consumer, event_types)

    async def stop(self) -> None:
        """Stop relays and consumers, then close connections."""
        if not self._started:
            return
        for task in (self._gauges, self._purges):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._gauges = self._purges = None
        for runtime in self.runtimes.values():
            await runtime.relay.stop()
        await self.transport.close()
        for runtime in self.runtimes.values():
            if runtime.definition.on_stop is not None:
                await runtime.definition.on_stop(runtime)
            await runtime.database.dispose()
        await self.directory.close()
        if self.redis is not None:
            await self.redis.aclose()
        self._started = False

    async def _purge_inboxes(self, every_seconds: float = INBOX_PURGE_EVERY_SECONDS) -> None:
        while True:
            for runtime in self.runtimes.values():
                try:
                    purged = await runtime.purge_inbox()
                except Exception:
                    log.warning("purging the inbox failed", exc_info=True)
                    continue
                if purged:
                    log.info(
                        "inbox records past their retention purged",
                        extra={"service": runtime.name, "records": purged},
                    )
            await asyncio.sleep(every_seconds)

    async def _report_outbox_lag(self, every_seconds: float = 10.0) -> None:
        while True:
            for runtime in self.runtimes.values():
                try:
                    pending, age = await runtime.relay.lag()
                except Exception:
                    log.warning("reading outbox lag failed", exc_info=True)
                    continue
                OUTBOX_PENDING.labels(runtime.name).set(pending)
                OUTBOX_LAG.labels(runtime.name).set(age)
            depths = getattr(self.transport, "queue_depths", None)
            if depths is not None:
                try:
                    for queue, depth in (await depths()).items():
                        QUEUE_DEPTH.labels(queue).set(depth)
                except Exception:
                    log.warning("reading queue depths failed", exc_info=True)
            await asyncio.sleep(every_seconds)

    async def drain_outboxes(self, rounds: int = 20) -> None:
        """Deliver every pending event now (for one-shot commands that exit right after)."""
        for _ in range(rounds):
            busy = False
            for runtime in self.runtimes.values():
                pending, _age = await runtime.relay.lag()
                if pending:
                    busy = True
                    await runtime.relay.relay_once()
            if not busy:
                return

    def standalone_app(self, name: str) -> FastAPI:
        """One service's app that starts and stops this platform with itself."""
        app = self.apps[name]
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
            await self.start()
            try:
                async with inner(application) as state:
                    yield state
            finally:
                await self.stop()

        app.router.lifespan_context = lifespan
        return app
