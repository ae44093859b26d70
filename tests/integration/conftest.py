"""Fixtures for tests against real servers: PostgreSQL, Redis and RabbitMQ.

Where the servers are comes from ``PANTHERA_TEST_DATABASE_URL`` (an admin
database: fresh databases are created next to it), ``PANTHERA_TEST_REDIS_URL``
and ``PANTHERA_TEST_AMQP_URL``. A server that cannot be reached FAILS the test
that needs it, with the address it tried: a missing server must never pass for
a green run.

Everything a test creates is uniquely named and removed afterwards: databases
``pt_<hex>_<service>``, RabbitMQ exchanges and queues ``pt_<hex>.*``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

DATABASE_URL = os.environ.get(
    "PANTHERA_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("PANTHERA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
AMQP_URL = os.environ.get("PANTHERA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

CONNECT_TIMEOUT = 5.0
_SAFE_NAME = re.compile(r"^[a-z0-9_]+$")


def unique_prefix() -> str:
    """``pt_<hex>``: a name no other test run uses (a valid database and AMQP name part)."""
    return f"pt_{uuid.uuid4().hex[:12]}"


def masked(url: str) -> str:
    """A server URL fit for a failure message: any password replaced by ``***``."""
    return re.sub(r"^([a-z0-9+]+://[^:/@]*):[^@]*@", r"\1:***@", url)


# -- PostgreSQL ----------------------------------------------------------------


@dataclass
class PostgresServer:
    """The admin database's URL, split the ways callers need it."""

    url: str

    @property
    def asyncpg_dsn(self) -> str:
        """The admin database as a plain ``postgresql://`` DSN for asyncpg."""
        parsed = make_url(self.url).set(drivername="postgresql")
        return parsed.render_as_string(hide_password=False)

    def sqlalchemy_url(self, database: str) -> str:
        """A SQLAlchemy (asyncpg) URL of another database on the same server."""
        parsed = make_url(self.url).set(drivername="postgresql+asyncpg", database=database)
        return parsed.render_as_string(hide_password=False)

    async def connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self.asyncpg_dsn, timeout=CONNECT_TIMEOUT)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            pytest.fail(
                f"PostgreSQL is required at {masked(self.url)} "
                f"(PANTHERA_TEST_DATABASE_URL): {exc!r}"
            )


@dataclass
class ServiceDatabases:
    """Fresh databases ``<prefix>_<service>``, one per service, on the test server."""

    server: PostgresServer
    prefix: str
    names: dict[str, str] = field(default_factory=dict)

    def name_for(self, service: str) -> str:
        return f"{self.prefix}_{service}"

    def url_for(self, service: str) -> str:
        """The SQLAlchemy URL of one service's database."""
        if service not in self.names:
            raise KeyError(f"no database was created for {service!r}")
        return self.server.sqlalchemy_url(self.names[service])

    @property
    def url_template(self) -> str:
        """``PANTHERA_DATABASE_URL`` for these databases: ``{service}`` picks one."""
        # Built by hand: make_url would percent-encode the braces.
        return self.server.sqlalchemy_url(f"{self.prefix}_SERVICE").replace(
            f"{self.prefix}_SERVICE", f"{self.prefix}_{{service}}"
        )

    async def create(self, services: Iterable[str]) -> None:
        conn = await self.server.connect()
        try:
            for service in services:
                name = self.name_for(service)
                assert _SAFE_NAME.match(name), name
                # template0: template1 refuses to be copied while anyone else is
                # connected to it, which a concurrent test run may well be.
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
                self.names[service] = name
        finally:
            await conn.close()

    async def drop(self) -> None:
        if not self.names:
            return
        conn = await self.server.connect()
        # FORCE (PostgreSQL 13+) also ends sessions that connect after the terminate.
        force = " WITH (FORCE)" if conn.get_server_version() >= (13, 0) else ""
        try:
            for name in self.names.values():
                # A process killed mid-transaction may leave a backend behind.
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"{force}')
        finally:
            await conn.close()
        self.names.clear()


@pytest.fixture
def postgres() -> PostgresServer:
    return PostgresServer(DATABASE_URL)


@pytest.fixture
async def service_databases(
    postgres: PostgresServer,
) -> AsyncIterator[Callable[..., Awaitable[ServiceDatabases]]]:
    """Creates fresh, uniquely named databases: ``await service_databases("users", ...)``.

    Every database created is dropped at teardown, its connections terminated first.
    """
    created: list[ServiceDatabases] = []

    async def create(*services: str) -> ServiceDatabases:
        databases = ServiceDatabases(postgres, unique_prefix())
        created.append(databases)
        await databases.create(services)
        return databases

    try:
        yield create
    finally:
        for databases in created:
            await databases.drop()


class RoundTrips:
    """The messages asyncpg sends PostgreSQL and waits on, each a round trip, in order.

    A statement's first run on a connection also prepares it (another round trip, not
    counted here): warm a flow up once before counting it.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[str] = []
        # The name of the asyncio task that sent each, to tell a flow's own statements
        # from those of the loops running beside it (the outbox relay's).
        self.senders: list[str] = []
        simple = asyncpg.Connection.execute
        do_execute = asyncpg.prepared_stmt.PreparedStatement._PreparedStatement__do_execute  # type: ignore[attr-defined]
        trips = self

        async def execute(connection: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args:  # the simple query protocol; with arguments it prepares and binds
                trips.note(query)
            return await simple(connection, query, *args, **kwargs)

        async def bound(statement: Any, executor: Any) -> Any:
            trips.note(statement._query)
            return await do_execute(statement, executor)

        # Statements with arguments run on the connection itself (fetch, execute with
        # arguments, executemany in one pipelined round trip).
        on_connection = asyncpg.Connection._execute
        many = asyncpg.Connection._executemany

        async def with_arguments(connection: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            trips.note(query)
            return await on_connection(connection, query, *args, **kwargs)

        async def executemany(connection: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            trips.note(query)
            return await many(connection, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, "execute", execute)
        monkeypatch.setattr(asyncpg.Connection, "_execute", with_arguments)
        monkeypatch.setattr(asyncpg.Connection, "_executemany", executemany)
        monkeypatch.setattr(
            asyncpg.prepared_stmt.PreparedStatement, "_PreparedStatement__do_execute", bound
        )

    def note(self, query: str) -> None:
        task = asyncio.current_task()
        self.sent.append(query)
        self.senders.append("" if task is None else task.get_name())

    def clear(self) -> None:
        self.sent.clear()
        self.senders.clear()

    def verbs(self) -> list[str]:
        """The first word of each message: ``["BEGIN", "INSERT", "COMMIT"]``."""
        return [query.split(None, 1)[0].rstrip(";").upper() for query in self.sent]


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    return RoundTrips(monkeypatch)


# -- Redis ----------------------------------------------------------------------


@pytest.fixture
async def redis_url() -> str:
    """The test Redis's URL, once it has answered a ping."""
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=CONNECT_TIMEOUT)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        pytest.fail(f"Redis is required at {masked(REDIS_URL)} (PANTHERA_TEST_REDIS_URL): {exc!r}")
    finally:
        await client.aclose()
    return REDIS_URL


# -- RabbitMQ -------------------------------------------------------------------


@dataclass
class AmqpNamespace:
    """A private ``PANTHERA_AMQP_NAMESPACE`` on the test broker, deleted afterwards."""

    url: str
    name: str

    async def delete(self) -> None:
        """Remove every exchange and queue the platform declares under this namespace."""
        from panthera.kernel.events.rabbitmq import RabbitMQTransport as T
        from panthera.runtime.registry import SERVICE_NAMES

        # Every process may consume: the services, and the gateway (its response
        # cache's invalidations). Deleting a queue that was never declared is fine.
        consumers = [*SERVICE_NAMES, "gateway"]
        retry_delays_ms = inspect.signature(T).parameters["retry_delays_ms"].default
        queues = [f"{self.name}.events.unrouted"]
        for consumer in consumers:
            queues += [
                T.queue_name(consumer, self.name),
                T.dead_letter_queue_name(consumer, self.name),
            ]
            queues += [T.retry_queue_name(consumer, d, self.name) for d in retry_delays_ms]
        exchanges = [f"{self.name}.events", f"{self.name}.events.unrouted", f"{self.name}.dlx"]
        connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT)
        try:
            channel = await connection.channel()
            for queue in queues:
                # RabbitMQ answers delete-ok for a queue or exchange that is not there.
                await channel.queue_delete(queue)
            for exchange in exchanges:
                await channel.exchange_delete(exchange)
        finally:
            await connection.close()


@pytest.fixture
async def amqp_url() -> str:
    """The test broker's URL, once a connection to it has opened."""
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=CONNECT_TIMEOUT)
    except Exception as exc:
        pytest.fail(f"RabbitMQ is required at {masked(AMQP_URL)} (PANTHERA_TEST_AMQP_URL): {exc!r}")
    await connection.close()
    return AMQP_URL


@pytest.fixture
async def amqp_namespace(amqp_url: str) -> AsyncIterator[AmqpNamespace]:
    """A namespace no other run uses; the platform's topology under it is deleted after."""
    namespace = AmqpNamespace(amqp_url, unique_prefix())
    yield namespace
    await namespace.delete()
