"""Core statements run on the database driver itself, for the writes every order makes.

SQLAlchemy's execution path (a session, its connection, the execution context, a
greenlet hop per statement) costs six to seven times what asyncpg alone spends on
a short transaction: for a write of one row, 0.43 ms of client CPU against 0.06
(``bench/db_overhead.py``). The statements themselves stay SQLAlchemy Core, built
once next to the tables they touch; on PostgreSQL each is compiled once to
asyncpg's SQL (``$1`` parameters, with SQLAlchemy's casts and bind conversions)
and run on connections the kernel lends itself (:mod:`panthera.kernel.pgdirect`).
On SQLite the same statements run through the unit of work's session: there every
writer queues on one connection anyway, and the driver's cost is not what limits it.

Code that writes this way takes a :class:`Sql` (``execute`` and its kin), which both
the PostgreSQL :class:`DirectTransaction` and :attr:`UnitOfWork.sql` provide. Rows
come back as SQLAlchemy's rows do: columns by attribute or position, ``_asdict()``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar, cast

import orjson
from sqlalchemy import (
    any_,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.dml import Insert, UpdateBase
from sqlalchemy.sql.schema import Column, Table

from panthera.kernel.events.envelope import Envelope, EventContract

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from panthera.kernel.pgdirect import DirectConnections

log = logging.getLogger("panthera.db")

# A row of either path: SQLAlchemy's Row, or asyncpg's Record as ``DirectRow``.
Row = Any
G = TypeVar("G")
AfterCommit = Callable[[], None]
Values = Mapping[str, Any]


class Sql(Protocol):
    """Runs Core statements: inside one transaction, or each on its own (``Database.alone``)."""

    # Whether the statements run on PostgreSQL (some have a one-statement form there).
    postgres: bool

    async def execute(self, statement: ClauseElement, values: Values | None = None) -> int:
        """Run ``statement``; the number of rows it touched."""
        ...

    async def execute_many(self, statement: ClauseElement, rows: Sequence[Values]) -> None:
        """Run ``statement`` once per element of ``rows``, in one round trip where it can."""
        ...

    async def fetch(self, statement: ClauseElement, values: Values | None = None) -> list[Row]:
        """Every row ``statement`` answers (a SELECT, or a write with RETURNING)."""
        ...

    async def fetch_one(self, statement: ClauseElement, values: Values | None = None) -> Row | None:
        """The first row ``statement`` answers, or None."""
        ...

    async def fetch_many(self, statement: Insert, rows: Sequence[Values]) -> list[Row]:
        """What an INSERT of ``rows`` (with its ON CONFLICT and RETURNING) answers, in one
        round trip; every row names the same columns. The rows come back in no set order."""
        ...

    async def fetch_value(self, statement: ClauseElement, values: Values | None = None) -> Any:
        """The first column of the first row ``statement`` answers, or None."""
        ...


class Transaction(Protocol):
    """A transaction that writes rows and the events they publish together.

    Both :class:`~panthera.kernel.db.UnitOfWork` and :class:`DirectTransaction` are one.
    """

    @property
    def sql(self) -> Sql: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def publish(self, event: EventContract) -> Envelope: ...

    def on_commit(self, callback: AfterCommit) -> None: ...

    def gathering(self, key: str, make: Callable[[], G], unwritten: Callable[[G], bool]) -> G:
        """Work gathered under ``key`` to write in one go before the commit, made on first
        use; the commit is refused while ``unwritten`` says some of it is left."""
        ...

    def gathered(self, key: str) -> Any:
        """The work gathered under ``key``, or None."""
        ...

    async def sql_alone(self) -> Sql:
        """Statements to run before the transaction begins: on PostgreSQL each on the
        transaction's connection, committed on its own (a read there costs no BEGIN);
        once the transaction is under way, or on SQLite, its own ``sql``."""
        ...

    async def commit(self) -> None: ...

    async def commit_with(self, statement: UpdateBase, values: Values | None = None) -> int:
        """Run ``statement`` (an INSERT, UPDATE or DELETE) as the transaction's last and
        commit, if it wrote a row; else roll back (events and callbacks dropped).

        The number of rows it wrote. On PostgreSQL the published events go into the
        outbox within the same statement, and a transaction that ran nothing before
        it needs no BEGIN or COMMIT: the whole transaction is one round trip. There a
        statement's own data-modifying CTEs are not undone when its main part writes
        nothing: make them depend on it.
        """
        ...

    async def rollback(self) -> None: ...


# ----------------------------------------------------------------- compiling


@dataclass(frozen=True)
class Compiled:
    """One statement in the driver's SQL, and how to turn named values into its arguments."""

    sql: str
    # The name of each positional parameter, in order.
    names: tuple[str, ...]
    # SQLAlchemy's bind conversion of each parameter (JSON to text, timestamps to UTC).
    converters: tuple[Callable[[Any], Any] | None, ...]
    # Values the statement carries itself (literals, column defaults).
    constants: Mapping[str, Any]
    returns_rows: bool

    def arguments(self, values: Values | None) -> list[Any]:
        given = values or {}
        arguments = []
        for name, convert in zip(self.names, self.converters, strict=True):
            if name in given:
                value = given[name]
            elif name in self.constants:
                value = self.constants[name]
            else:
                raise KeyError(f"no value for the parameter {name!r}")
            arguments.append(convert(value) if convert is not None and value is not None else value)
        return arguments


UNIQUE_VIOLATION = "23505"
# Compiled statements kept per database; the oldest goes first past this.
MAX_COMPILED = 2048
_POSTGRES: Dialect = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]


def _default_of(column: Column[Any]) -> Any:
    default = column.default
    if default is None:
        return None
    if default.is_scalar:
        return default.arg  # type: ignore[attr-defined]
    raise ValueError(
        f"{column.table.name}.{column.name} has a default the driver cannot compute: "
        "give it a value"
    )


def compile_for_postgres(statement: ClauseElement, keys: Sequence[str] = ()) -> Compiled:
    """``statement`` in asyncpg's SQL; ``keys``: the columns an INSERT's values name.

    An INSERT renders exactly the columns it is given plus those with a scalar
    default; no implicit ``RETURNING`` (compiled as for many rows).
    """
    compiled: Any = statement.compile(
        dialect=_POSTGRES, column_keys=list(keys) or None, for_executemany=True
    )
    sql: str = compiled.string
    names = tuple(compiled.positiontup or ())
    processors: Mapping[str, Any] = compiled._bind_processors
    constants: dict[str, Any] = {}
    for name, value in compiled.params.items():
        bind = compiled.binds[name]
        if not bind.required and value is not None and type(value).__name__ != "_symbol":
            constants[name] = value
        elif bind.value is None and not bind.required:
            constants[name] = None
    expanding = [name for name in names if compiled.binds[name].expanding]
    if expanding:
        if any(name not in constants for name in expanding):
            raise ValueError(
                f"{expanding[0]!r} is an expanding parameter without a value of its own: "
                "the driver path takes none (use = ANY of an array)"
            )
        # An IN of values the statement carries (a literal list): rendered once, as
        # one parameter per value.
        expanded = compiled._process_parameters_for_postcompile(
            {name: constants.get(name) for name in names}, _populate_self=False
        )
        sql, names = expanded.statement, tuple(expanded.positiontup)
        constants.update(expanded.parameters)
        processors = {**processors, **expanded.processors}
    for column in [*compiled.insert_prefetch, *compiled.update_prefetch]:
        constants[column.key] = _default_of(column)
    return Compiled(
        sql=sql,
        names=names,
        converters=tuple(processors.get(name) for name in names),
        constants=constants,
        returns_rows=bool(compiled.returning) or bool(getattr(statement, "is_select", False)),
    )


def json_column(value: Any) -> Any:
    """A JSON column's value as either path reads it: decoded through SQLAlchemy, its
    text from the driver."""
    return orjson.loads(value) if isinstance(value, str) else value


def among(column: Any, name: str, postgres: bool) -> Any:
    """``column`` is one of the values of parameter ``name``: ``= ANY`` of an array on
    PostgreSQL (the driver path takes no expanding IN), ``IN`` on SQLite."""
    if postgres:
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


# The parameters of the n-th event's outbox row in a statement ``with_events`` built.
EVENT_PARAMETER = "outbox_event{n}_{key}"
# The parameters of the inbox row a statement ``with_events`` built claims.
CLAIM_PARAMETER = "inbox_{key}"
INBOX_KEYS = ("consumer", "event_id", "event_type", "applied_at")


def with_events(
    statement: UpdateBase,
    outbox: Table,
    keys: Sequence[str],
    events: int,
    inbox: Table | None = None,
) -> Any:
    """PostgreSQL: ``statement`` and ``events`` outbox rows in one statement, the rows
    written only if ``statement`` wrote one: ``WITH written AS (statement RETURNING ..),
    events AS (INSERT INTO outbox SELECT .. WHERE EXISTS (SELECT FROM written))
    SELECT count(*) FROM written``. With ``inbox``, the consumed event's inbox row is
    written the same way, without ON CONFLICT: an event applied before makes the
    whole statement fail on the inbox's key, and so write nothing.

    ``statement``'s own CTEs join the top-level WITH (PostgreSQL allows a
    data-modifying CTE nowhere else). Every part sees the statement's one snapshot,
    so the outbox rows must not depend on what ``statement`` writes.
    """
    if not statement.exported_columns:
        statement = statement.returning(literal_column("1").label("written"))
    written = statement.cte("written")
    wrote = exists(select(literal_column("1")).select_from(written))
    counted = select(func.count()).select_from(written)
    if events:
        rows = [
            select(
                *(
                    bindparam(EVENT_PARAMETER.format(n=n, key=key), type_=outbox.c[key].type)
                    for key in keys
                )
            ).where(wrote)
            for n in range(events)
        ]
        outboxed = insert(outbox).from_select(
            list(keys), union_all(*rows) if events > 1 else rows[0]
        )
        counted = counted.add_cte(outboxed.cte("events"))
    if inbox is not None:
        claim = select(
            *(
                bindparam(CLAIM_PARAMETER.format(key=key), type_=inbox.c[key].type)
                for key in INBOX_KEYS
            )
        ).where(wrote)
        counted = counted.add_cte(insert(inbox).from_select(list(INBOX_KEYS), claim).cte("claimed"))
    return counted


def _bare_insert(statement: UpdateBase) -> bool:
    """An ``insert(table)`` whose columns are those of the values it runs with."""
    return (
        isinstance(statement, Insert)
        and statement.select is None
        and not getattr(statement, "_values", None)
        and not getattr(statement, "_multi_values", None)
    )


K = TypeVar("K")
V = TypeVar("V")


class _ByStatement(Generic[K, V]):
    """What was built from a statement, by the statement's id and more of the key.

    The statement is kept with what was built from it, so its id is never reused; the
    oldest goes first past ``MAX_COMPILED``: statements are meant to be built once, and
    one built per call must not grow this for ever.
    """

    def __init__(self) -> None:
        self._kept: dict[tuple[int, K], tuple[ClauseElement, V]] = {}

    def get(self, statement: ClauseElement, key: K, build: Callable[[], V]) -> V:
        full = (id(statement), key)
        found = self._kept.get(full)
        if found is None or found[0] is not statement:
            found = (statement, build())
            self._kept[full] = found
            if len(self._kept) > MAX_COMPILED:
                del self._kept[next(iter(self._kept))]
        return found[1]


class Statements:
    """Compiled statements, each compiled on first use (per set of INSERT columns)."""

    def __init__(self) -> None:
        self._compiled: _ByStatement[tuple[str, ...], Compiled] = _ByStatement()
        self._with_events: _ByStatement[
            tuple[int, tuple[str, ...], tuple[str, ...], str | None], Any
        ] = _ByStatement()
        self._unnested: _ByStatement[tuple[str, ...], Insert] = _ByStatement()

    def with_events(
        self,
        statement: UpdateBase,
        outbox: Table,
        keys: Sequence[str],
        events: int,
        values: Values | None = None,
        inbox: Table | None = None,
    ) -> Any:
        """:func:`with_events`, built once per statement, number of events, inbox and,
        for an INSERT that names no columns of its own, the columns ``values`` gives."""
        columns: tuple[str, ...] = ()
        if _bare_insert(statement):
            columns = tuple(values or ())

        def build() -> Any:
            writing = statement
            if columns:
                # As ``compile_for_postgres`` renders a bare INSERT: the columns given.
                table = cast(Insert, statement).table
                writing = cast(Insert, statement).values(
                    {name: bindparam(name, type_=table.c[name].type) for name in columns}
                )
            return with_events(writing, outbox, keys, events, inbox)

        claiming = None if inbox is None else inbox.fullname
        return self._with_events.get(statement, (events, tuple(keys), columns, claiming), build)

    def of(self, statement: ClauseElement, values: Values | None) -> Compiled:
        keys = tuple(values) if values and getattr(statement, "is_insert", False) else ()
        return self._compiled.get(statement, keys, lambda: compile_for_postgres(statement, keys))

    def unnested(self, statement: Insert, keys: tuple[str, ...]) -> Insert:
        """:func:`unnested`, built once per statement and columns."""
        return self._unnested.get(statement, keys, lambda: unnested(statement, keys))


def unnested(statement: Insert, keys: Sequence[str]) -> Insert:
    """PostgreSQL: ``statement`` (an INSERT naming no values of its own) as ``INSERT ..
    SELECT unnest($1::type[]), unnest($2::type[]) ..``, its ON CONFLICT and RETURNING
    kept: many rows in one statement of one shape, each column one array parameter
    named by its key, whatever the number of rows."""
    table = cast(Table, statement.table)
    arrays = select(*(func.unnest(bindparam(key, type_=ARRAY(table.c[key].type))) for key in keys))
    return statement.from_select(list(keys), arrays)


def is_unique_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is a unique constraint's refusal, from SQLAlchemy or from the driver."""
    if isinstance(exc, IntegrityError):
        return "unique" in str(exc.orig).lower() or getattr(exc.orig, "sqlstate", None) == (
            UNIQUE_VIOLATION
        )
    return getattr(exc, "sqlstate", None) == UNIQUE_VIOLATION


def _refused_by(exc: BaseException, table: Table) -> bool:
    """Whether ``exc`` is the driver's unique violation on ``table``."""
    return is_unique_violation(exc) and getattr(exc, "table_name", None) == table.name


def _rowcount(status: str) -> int:
    # asyncpg answers a write with its command tag: "UPDATE 1", "INSERT 0 1", "DELETE 3".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


# ----------------------------------------------------------- on the session


class SessionSql:
    """:class:`Sql` on an ORM session's connection, inside the session's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        bind = session.bind
        self.postgres = bind is not None and bind.dialect.name == "postgresql"

    async def execute(self, statement: ClauseElement, values: Values | None = None) -> int:
        connection = await self._session.connection()
        result = await connection.execute(statement, dict(values) if values else None)  # type: ignore[call-overload]
        return int(result.rowcount)

    async def execute_many(self, statement: ClauseElement, rows: Sequence[Values]) -> None:
        if not rows:
            return
        connection = await self._session.connection()
        await connection.execute(statement, [dict(row) for row in rows])  # type: ignore[call-overload]

    async def fetch(self, statement: ClauseElement, values: Values | None = None) -> list[Row]:
        connection = await self._session.connection()
        result = await connection.execute(statement, dict(values) if values else None)  # type: ignore[call-overload]
        return list(result.all())

    async def fetch_one(self, statement: ClauseElement, values: Values | None = None) -> Row | None:
        rows = await self.fetch(statement, values)
        return rows[0] if rows else None

    async def fetch_many(self, statement: Insert, rows: Sequence[Values]) -> list[Row]:
        if not rows:
            return []
        connection = await self._session.connection()
        # SQLAlchemy sends the rows as one multi-row INSERT ("insertmanyvalues").
        result = await connection.execute(statement, [dict(row) for row in rows])
        return list(result.all())

    async def fetch_value(self, statement: ClauseElement, values: Values | None = None) -> Any:
        row = await self.fetch_one(statement, values)
        return None if row is None else row[0]


# ----------------------------------------------------------- on the driver


class DirectSql:
    """:class:`Sql` on one asyncpg connection (in a transaction, or each statement alone)."""

    postgres = True

    def __init__(self, connection: Any, statements: Statements) -> None:
        self._connection = connection
        self._statements = statements

    async def _connected(self) -> Any:
        return self._connection

    async def execute(self, statement: ClauseElement, values: Values | None = None) -> int:
        compiled = self._statements.of(statement, values)
        arguments = compiled.arguments(values)
        connection = await self._connected()
        if compiled.returns_rows:
            return len(await connection.fetch(compiled.sql, *arguments))
        return _rowcount(await connection.execute(compiled.sql, *arguments))

    async def execute_many(self, statement: ClauseElement, rows: Sequence[Values]) -> None:
        if not rows:
            return
        compiled = self._statements.of(statement, rows[0])
        connection = await self._connected()
        if len(rows) == 1:
            await connection.execute(compiled.sql, *compiled.arguments(rows[0]))
            return
        await connection.executemany(compiled.sql, [compiled.arguments(r) for r in rows])

    async def fetch(self, statement: ClauseElement, values: Values | None = None) -> list[Row]:
        compiled = self._statements.of(statement, values)
        arguments = compiled.arguments(values)
        connection = await self._connected()
        rows: list[Row] = await connection.fetch(
            compiled.sql, *arguments, record_class=_direct_row()
        )
        return rows

    async def fetch_one(self, statement: ClauseElement, values: Values | None = None) -> Row | None:
        compiled = self._statements.of(statement, values)
        arguments = compiled.arguments(values)
        connection = await self._connected()
        return await connection.fetchrow(compiled.sql, *arguments, record_class=_direct_row())

    async def fetch_value(self, statement: ClauseElement, values: Values | None = None) -> Any:
        compiled = self._statements.of(statement, values)
        arguments = compiled.arguments(values)
        return await (await self._connected()).fetchval(compiled.sql, *arguments)

    async def fetch_many(self, statement: Insert, rows: Sequence[Values]) -> list[Row]:
        if not rows:
            return []
        keys = tuple(rows[0])
        columns = {key: [row[key] for row in rows] for key in keys}
        return await self.fetch(self._statements.unnested(statement, keys), columns)


@functools.cache
def _direct_row() -> Any:
    """asyncpg's Record with SQLAlchemy's Row's ways in: ``row.column``, ``row._asdict()``.

    Made on first use: asyncpg is imported by PostgreSQL shapes only.
    """
    import asyncpg  # type: ignore[import-untyped]

    class DirectRow(asyncpg.Record):  # type: ignore[misc]
        __slots__ = ()

        def __getattr__(self, name: str) -> Any:
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

        def _asdict(self) -> dict[str, Any]:
            return dict(self.items())

    return DirectRow


class _TransactionSql(DirectSql):
    """Begins its transaction with the first statement: one that writes nothing takes
    no connection and costs no round trip."""

    def __init__(self, transaction: DirectTransaction, statements: Statements) -> None:
        super().__init__(None, statements)
        self._transaction = transaction

    async def _connected(self) -> Any:
        return await self._transaction._begun()


class AlreadyApplied(Exception):
    """The event a transaction was to apply once had been applied: its inbox row exists."""


@dataclass(frozen=True)
class InboxClaim:
    """An event's inbox row, claimed with the writes that apply the event.

    ``statement`` claims it alone (``INSERT .. ON CONFLICT DO NOTHING RETURNING``);
    the row has the keys of :data:`INBOX_KEYS`.
    """

    table: Table
    statement: ClauseElement
    row: dict[str, Any]


OutboxRows = Callable[[list[Envelope]], list[dict[str, Any]]]
# Told, after a commit, the events it wrote to the outbox (the relay's hand-off).
Committed = Callable[[list[Envelope]], None]


class EventsOnCommit:
    """The events a transaction publishes and what runs once it has committed.

    ``publish`` queues an event, which the transaction writes to its outbox as it
    commits; ``on_commit`` callbacks run after the commit, never after a rollback;
    ``after_commit`` (the relay's hand-off) is given the events after a commit that
    wrote some.
    """

    def __init__(
        self,
        *,
        source: str,
        after_commit: Committed | None = None,
        traceparent: Callable[[], str | None] | None = None,
    ) -> None:
        self._source = source
        self._after_commit = after_commit
        self._traceparent = traceparent
        self._pending: list[Envelope] = []
        self._on_commit: list[AfterCommit] = []
        self._gathered: dict[str, tuple[Any, Callable[[Any], bool]]] = {}

    def gathering(self, key: str, make: Callable[[], G], unwritten: Callable[[G], bool]) -> G:
        """:meth:`Transaction.gathering`."""
        found = self._gathered.get(key)
        if found is None:
            found = self._gathered[key] = (make(), unwritten)
        work: G = found[0]
        return work

    def gathered(self, key: str) -> Any:
        found = self._gathered.get(key)
        return None if found is None else found[0]

    def _refuse_unwritten(self) -> None:
        """Committing with gathered work unwritten would lose it while keeping what
        caused it (an event recorded as applied): the commit is refused instead."""
        for key, (work, unwritten) in self._gathered.items():
            if unwritten(work):
                raise RuntimeError(f"{key} were not written before the commit")

    def publish(self, event: EventContract) -> Envelope:
        """Queue an event; it is written to the outbox by ``commit``."""
        trace = self._traceparent() if self._traceparent else None
        envelope = Envelope.wrap(event, source=self._source, traceparent=trace)
        self._pending.append(envelope)
        return envelope

    def on_commit(self, callback: AfterCommit) -> None:
        """Run ``callback`` once this transaction has committed (never on rollback)."""
        self._on_commit.append(callback)

    def _forget(self) -> None:
        self._pending = []
        self._on_commit = []
        self._gathered = {}

    def _take_pending(self) -> list[Envelope]:
        pending, self._pending = self._pending, []
        return pending

    def _committed(self, published: list[Envelope]) -> None:
        self._gathered = {}
        if published and self._after_commit is not None:
            self._after_commit(published)
        callbacks, self._on_commit = self._on_commit, []
        for callback in callbacks:
            callback()


class DirectTransaction(EventsOnCommit):
    """A PostgreSQL transaction on a connection of the kernel's own, with an outbox.

    ``async with`` opens it; its first statement takes a connection and begins the
    transaction; leaving without :meth:`commit` rolls it back. As with a session, a
    statement after :meth:`commit` or :meth:`rollback` begins the next transaction
    on the same connection. Published events are written to the outbox by
    :meth:`commit`, in the same transaction, and handed to the relay after it.
    """

    def __init__(
        self,
        connections: DirectConnections,
        statements: Statements,
        *,
        source: str,
        outbox_insert: ClauseElement,
        outbox_rows: OutboxRows,
        after_commit: Committed | None = None,
        traceparent: Callable[[], str | None] | None = None,
    ) -> None:
        super().__init__(source=source, after_commit=after_commit, traceparent=traceparent)
        self._connections = connections
        self._statements = statements
        self._outbox_insert = outbox_insert
        self._outbox_rows = outbox_rows
        self._connection: Any = None
        self._in_transaction = False
        self._sql: _TransactionSql | None = None
        # The event this transaction applies once: still to claim, or claimed in the
        # transaction under way (claimed again after a rollback).
        self._claim: InboxClaim | None = None
        self._claimed: InboxClaim | None = None

    @property
    def sql(self) -> DirectSql:
        if self._sql is None:
            raise RuntimeError("the transaction is not open: use 'async with'")
        return self._sql

    def claim_once(self, claim: InboxClaim) -> None:
        """Apply what this transaction writes once per event, with ``claim`` its inbox row.

        The row is written by the transaction's first statement, or, when
        :meth:`commit_with` is all the transaction runs, inside that one statement;
        a commit that wrote nothing else writes it alone. Where the event had been
        applied before, that statement raises :class:`AlreadyApplied`.
        """
        self._claim = claim

    async def _begun(self) -> Any:
        """The connection, in a transaction (which has claimed its event, if it has one)."""
        if self._in_transaction:
            return self._connection
        if self._connection is None:
            self._connection = await self._connections.acquire()
        try:
            await self._connection.execute("BEGIN")
        except BaseException:
            connection, self._connection = self._connection, None
            self._connections.discard(connection)
            raise
        self._in_transaction = True
        if self._claim is not None:
            await self._claim_alone(self._connection)
        return self._connection

    async def _claim_alone(self, connection: Any) -> None:
        claim, self._claim = self._claim, None
        assert claim is not None
        compiled = self._statements.of(claim.statement, claim.row)
        claimed = await connection.fetchrow(compiled.sql, *compiled.arguments(claim.row))
        if claimed is None:
            raise AlreadyApplied()
        if self._in_transaction:
            self._claimed = claim

    def _ended(self) -> None:
        """The transaction under way is over; a claim it had made went with it, if rolled back."""
        self._in_transaction = False
        self._claimed = None

    async def __aenter__(self) -> Self:
        self._sql = _TransactionSql(self, self._statements)
        self._forget()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        in_transaction, self._in_transaction = self._in_transaction, False
        self._sql = None
        self._claim = self._claimed = None
        self._forget()
        if connection is None:
            return
        if exc is not None and not isinstance(exc, Exception):
            # Cancelled mid-statement: what the connection still has to read is unknown.
            self._connections.discard(connection)
            return
        if in_transaction:
            try:
                await connection.execute("ROLLBACK")
            except BaseException:
                self._connections.discard(connection)
                if exc is None:
                    raise
                log.warning("rolling back a failed transaction failed", exc_info=True)
                return
        self._connections.release(connection)

    async def _alone(self) -> DirectSql:
        """The connection for a statement that is its own transaction."""
        if self._connection is None:
            self._connection = await self._connections.acquire()
        return DirectSql(self._connection, self._statements)

    async def sql_alone(self) -> DirectSql:
        return self.sql if self._in_transaction else await self._alone()

    async def commit(self) -> None:
        sql = self.sql
        self._refuse_unwritten()
        pending = self._take_pending()
        if pending:
            await sql.execute_many(self._outbox_insert, self._outbox_rows(pending))
        elif self._claim is not None and not self._in_transaction:
            # Nothing written but the event's claim: it commits on its own.
            await self._alone()
            await self._claim_alone(self._connection)
        if self._in_transaction:
            # Whatever COMMIT answers, the transaction is over (a failed one rolled back).
            self._ended()
            await self._connection.execute("COMMIT")
        self._committed(pending)

    async def commit_with(self, statement: UpdateBase, values: Values | None = None) -> int:
        self.sql  # noqa: B018 - refuses a transaction that is not open
        self._refuse_unwritten()
        pending = self._take_pending()
        # A claim still to make goes into the statement (nothing ran before it).
        claim = self._claim
        if pending or claim is not None:
            arguments = dict(values or {})
            keys: tuple[str, ...] = ()
            if pending:
                rows = self._outbox_rows(pending)
                keys = tuple(rows[0])
                for n, row in enumerate(rows):
                    arguments.update(
                        {EVENT_PARAMETER.format(n=n, key=key): value for key, value in row.items()}
                    )
            if claim is not None:
                arguments.update(
                    {CLAIM_PARAMETER.format(key=key): claim.row[key] for key in INBOX_KEYS}
                )
            outbox = cast(Insert, self._outbox_insert).table
            composed = self._statements.with_events(
                statement,
                cast(Table, outbox),
                keys,
                len(pending),
                values,
                inbox=None if claim is None else claim.table,
            )
        # Nothing ran before it: the statement is its own transaction.
        sql: DirectSql = self.sql if self._in_transaction else await self._alone()
        if pending or claim is not None:
            try:
                written = int(await sql.fetch_value(composed, arguments))
            except Exception as exc:
                if claim is not None and _refused_by(exc, claim.table):
                    self._claim = None
                    self._forget()
                    raise AlreadyApplied() from exc
                raise
        else:
            written = await sql.execute(statement, values)
        if not written:
            # The claim, if any, was not written either: it is still to make.
            await self.rollback()
            return 0
        self._claim = None
        if self._in_transaction:
            self._ended()
            await self._connection.execute("COMMIT")
        self._committed(pending)
        return written

    async def rollback(self) -> None:
        self.sql  # noqa: B018 - refuses a transaction that is not open
        self._forget()
        if self._claimed is not None:
            self._claim = self._claimed
        if self._in_transaction:
            self._ended()
            await self._connection.execute("ROLLBACK")
