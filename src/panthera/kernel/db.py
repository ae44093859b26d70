"""One async SQLAlchemy engine per service, SQLite or PostgreSQL by URL, and its unit of work."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator

from panthera.kernel.events.envelope import Envelope
from panthera.kernel.sql import (
    Committed,
    DirectSql,
    EventsOnCommit,
    SessionSql,
    Sql,
    Statements,
    Transaction,
    Values,
)

if TYPE_CHECKING:
    from sqlalchemy.sql import ClauseElement
    from sqlalchemy.sql.dml import UpdateBase

    from panthera.kernel.pgdirect import DirectConnections

# Stable constraint names, so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A pooled connection idle longer than this is pinged before use: the server or a
# proxy may have closed it meanwhile. One busy moments ago is used as it is, since a
# ping on every checkout (SQLAlchemy's pre_ping) costs BEGIN, a query and ROLLBACK:
# three round trips before each transaction.
IDLE_PING_SECONDS = 10.0


def service_metadata() -> MetaData:
    """A fresh metadata for one service's tables, with the platform's naming convention."""
    return MetaData(naming_convention=NAMING_CONVENTION)


class Database:
    """A service's engine and session factory."""

    def __init__(
        self, url: str, *, echo: bool = False, pool_size: int = 10, max_overflow: int = 0
    ) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            # Every process of every service has its own pool on one server: the sum
            # must stay under its max_connections (100 by default). Connections open
            # on demand and stay open up to pool_size; overflow ones are closed on
            # return, so under a burst each costs a new server process and a cold
            # statement cache: overflow is for rare peaks, not for the steady load.
            kwargs.update(
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_recycle=1800,
            )
        write_kwargs = dict(kwargs)
        if self.is_sqlite and parsed.database not in (None, "", ":memory:"):
            # SQLite has one writer at a time. Writers queued on one pooled connection
            # are handed the lock in order the moment it frees up; writers on many
            # connections instead poll SQLite's busy handler, which sleeps up to 100 ms
            # between tries and, under load, times out with "database is locked".
            write_kwargs.update(pool_size=1, max_overflow=0, pool_timeout=120)
        self.engine: AsyncEngine = create_async_engine(url, **write_kwargs)
        self.read_engine = self.engine
        if not self.is_sqlite:
            event.listen(self.engine.sync_engine.pool, "checkin", _note_idle)
            event.listen(self.engine.sync_engine.pool, "checkout", _ping_if_idle)
            # Read sessions run each statement on its own, without BEGIN and ROLLBACK
            # round trips: their callers read rows written once (an order with its
            # items) or need no snapshot across statements. Same pool as the writers.
            self.read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin_immediate)
            # Reads must not queue behind the write lock: a second engine whose
            # transactions begin deferred reads the last committed WAL snapshot.
            self.read_engine = create_async_engine(url, **kwargs)
            event.listen(self.read_engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.read_engine.sync_engine, "begin", _sqlite_begin_deferred)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)
        self._sqlite_path = (
            parsed.database
            if self.is_sqlite and parsed.database and parsed.database != ":memory:"
            else None
        )
        self._sqlite_reader: sqlite3.Connection | None = None
        # The connections read_one and the driver-level writes lend, made on first use.
        self._pg_reader: DirectConnections | None = None
        # Core statements compiled to the driver's SQL, for those writes.
        self.statements = Statements()
        self._pg_reader_setup: list[str] = []
        self._pg_url = url
        # Counted in the same connection budget as the engine's pool.
        self._pg_reader_max = max(1, pool_size)

    def on_read_connection(self, statement: str) -> None:
        """Run ``statement`` (a ``SET``) on every connection :meth:`read_one` opens.

        Only for PostgreSQL; call it before the first read.
        """
        self._pg_reader_setup.append(statement)

    async def read_one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of one read-only statement, in the driver's own SQL and parameter
        style (``?`` for SQLite, ``$1`` for PostgreSQL), at the least cost the driver allows.

        The statement runs alone, outside any transaction: it sees one consistent
        snapshot, and needs no ``BEGIN``/``ROLLBACK`` round trips. On a SQLite file it
        runs on the event loop, on a connection of its own, reading the last committed
        WAL snapshot: a read of a fraction of a millisecond costs less than the thread
        hops of the async driver. On PostgreSQL it runs on a few connections of its own
        (:class:`~panthera.kernel.pgdirect.DirectConnections`), not pinged when lent nor
        reset when returned; a connection found dead is replaced and the read tried
        once more.
        """
        if self.is_sqlite:
            if self._sqlite_path is None:
                async with self.read_engine.connect() as conn:
                    row = (await conn.exec_driver_sql(sql, tuple(args))).first()
                    return tuple(row) if row is not None else None
            cursor = self._sqlite().execute(sql, tuple(args))
            try:
                found: tuple[Any, ...] | None = cursor.fetchone()
            finally:
                cursor.close()
            return found
        return await self._pg_read_one(sql, args)

    def _sqlite(self) -> sqlite3.Connection:
        if self._sqlite_reader is None:
            assert self._sqlite_path is not None
            connection = sqlite3.connect(
                self._sqlite_path, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA query_only=ON")
            connection.execute("PRAGMA busy_timeout=10000")
            self._sqlite_reader = connection
        return self._sqlite_reader

    async def _pg_read_one(self, sql: str, args: Sequence[Any]) -> tuple[Any, ...] | None:
        row = await self.direct_connections().fetchrow(sql, args)
        return tuple(row) if row is not None else None

    def direct_connections(self) -> DirectConnections:
        """PostgreSQL only: the asyncpg connections the kernel lends itself."""
        if self.is_sqlite:
            raise RuntimeError("SQLite has no direct connections")
        if self._pg_reader is None:
            # asyncpg is imported only by a PostgreSQL shape's first use.
            from panthera.kernel.pgdirect import DirectConnections

            url = make_url(self._pg_url).set(drivername="postgresql")
            self._pg_reader = DirectConnections(
                url.render_as_string(hide_password=False),
                max_size=self._pg_reader_max,
                setup=self._pg_reader_setup,
            )
        return self._pg_reader

    async def execute_alone(self, statement: ClauseElement, values: Values | None = None) -> int:
        """Run one write statement in a transaction of its own; the rows it touched.

        On PostgreSQL on the driver, with no BEGIN and COMMIT round trips (the
        statement commits on its own); on SQLite queued on the one writer.
        """
        async with self.alone() as sql:
            return await sql.execute(statement, values)

    @asynccontextmanager
    async def alone(self) -> AsyncIterator[Sql]:
        """Core statements that each commit on their own (``kernel/sql.py``).

        On PostgreSQL on the driver, with no BEGIN and COMMIT round trips; on SQLite
        on one write session, committed when the block ends.
        """
        if self.is_sqlite:
            async with self.sessions() as session:
                yield SessionSql(session)
                await session.commit()
            return
        async with self._direct_alone() as sql:
            yield sql

    @asynccontextmanager
    async def reads(self) -> AsyncIterator[Sql]:
        """Core statements that only read, each on its own (``kernel/sql.py``).

        On PostgreSQL on the driver; on SQLite on a read session, which does not
        queue behind the writer.
        """
        if self.is_sqlite:
            async with self.read_sessions() as session:
                yield SessionSql(session)
            return
        async with self._direct_alone() as sql:
            yield sql

    @asynccontextmanager
    async def _direct_alone(self) -> AsyncIterator[Sql]:
        async with self.direct_connections().lend() as connection:
            yield DirectSql(connection, self.statements)

    async def refresh_statistics(self) -> None:
        """Bring the planner's statistics up to date after a bulk load.

        Until then PostgreSQL plans from empty-table guesses (hash joins over whole
        tables where an index would find a handful of rows) and a GIN index still
        holds the load in its unsorted pending list, which every search scans; autovacuum
        would fix both, but only after a while, or never where it is turned off.
        VACUUM cannot run inside a transaction, hence the autocommit connection.
        """
        if self.is_sqlite:
            async with self.engine.begin() as conn:
                await conn.exec_driver_sql("ANALYZE")
            return
        autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.connect() as conn:
            await conn.exec_driver_sql("VACUUM (ANALYZE)")

    async def ping(self) -> bool:
        """Whether the database answers (for ``/readyz``)."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
        if self._pg_reader is not None:
            readers, self._pg_reader = self._pg_reader, None
            await readers.close()
        if self._sqlite_reader is not None:
            with suppress(sqlite3.Error):
                self._sqlite_reader.close()
            self._sqlite_reader = None


def _note_idle(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    # A DisconnectionError makes the pool drop this connection and check out (or
    # open) another: the transaction about to start never sees the dead one.
    driver_connection = getattr(dbapi_connection, "driver_connection", None)
    if driver_connection is not None and driver_connection.is_closed():
        # The driver already saw the server hang up (a restart, an idle timeout):
        # known without a round trip.
        raise DisconnectionError("the server closed the connection")
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        dbapi_connection.ping()
    except Exception as exc:
        raise DisconnectionError(str(exc)) from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes a second
    # writer wait instead of failing at once. Autocommit off so SQLAlchemy's
    # "begin" event below decides how transactions start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # A deferred transaction that reads then writes can fail with "database is
    # locked" when another writer slipped in between; taking the write lock at
    # BEGIN serialises writers cleanly, which is what row locks give on PostgreSQL.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin_deferred(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


class UnitOfWork(EventsOnCommit):
    """One business transaction: a session plus the events it publishes.

    ``publish`` collects events; ``commit`` writes them to the outbox in the same
    transaction as the state change, then wakes the relay.
    """

    def __init__(
        self,
        database: Database,
        *,
        source: str,
        outbox_insert: Callable[[AsyncSession, list[Envelope]], Any],
        after_commit: Committed | None = None,
        traceparent: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__(source=source, after_commit=after_commit, traceparent=traceparent)
        self._database = database
        self._outbox_insert = outbox_insert
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("the unit of work is not open: use 'async with uow:'")
        return self._session

    @property
    def sql(self) -> SessionSql:
        """Core statements in this unit of work's transaction (see :mod:`panthera.kernel.sql`)."""
        return SessionSql(self.session)

    async def sql_alone(self) -> SessionSql:
        """The unit of work's own ``sql``: on SQLite every statement queues on its writer."""
        return self.sql

    async def __aenter__(self) -> Self:
        self._session = self._database.sessions()
        self._forget()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            # Closing rolls back whatever was not committed, and unlike rollback()
            # leaves loaded objects readable (detached) for the caller.
            await session.close()
        finally:
            self._session = None
            self._forget()

    async def commit(self) -> None:
        """Write pending events to the outbox and commit, atomically."""
        session = self.session
        self._refuse_unwritten()
        pending = self._take_pending()
        if pending:
            await self._outbox_insert(session, pending)
        await session.commit()
        self._committed(pending)

    async def rollback(self) -> None:
        """Discard the state change and its events."""
        self._forget()
        await self.session.rollback()

    async def commit_with(self, statement: UpdateBase, values: Values | None = None) -> int:
        """:meth:`panthera.kernel.sql.Transaction.commit_with`: here, the statement, then
        :meth:`commit` if it wrote a row, else :meth:`rollback`."""
        written = await self.sql.execute(statement, values)
        if not written:
            await self.rollback()
            return 0
        await self.commit()
        return written


Pending = TypeVar("Pending")


class WrittenBeforeCommit(Generic[Pending]):
    """Work a transaction gathers (rows, increments) to write in one go before it commits.

    Consumers applying a batch of events collect what each event adds and write it
    all with a few statements at the end. Committing with some of it unwritten
    would record the events as applied while losing their effect, so the
    transaction is refused instead and the events are delivered again.
    """

    def __init__(
        self, name: str, make: Callable[[], Pending], unwritten: Callable[[Pending], bool]
    ) -> None:
        self._name = name
        self._make = make
        self._unwritten = unwritten

    def of(self, tx: Transaction) -> Pending:
        """The transaction's gathered work, started (and guarded) on first use."""
        return tx.gathering(self._name, self._make, self._unwritten)

    def gathered(self, tx: Transaction) -> Pending | None:
        """The transaction's gathered work, if it has any."""
        found: Pending | None = tx.gathered(self._name)
        return found
