"""Idempotency keys: an unsafe request sent again with the same key gets the first answer.

A caller (a user, or another service) sends ``Idempotency-Key`` with a request
that creates something. The key is claimed in its own short transaction before
the work starts and the answer is stored after it ends, so:

- same key, same request, first one finished: the stored status and body, byte
  for byte, without doing the work again;
- same key, same request, first one still running: 409 ``idempotency_in_flight``;
- same key, another request: 422 ``idempotency_key_reused``;
- a key older than its time to live (at least 24 hours) starts afresh.

Keys are scoped (``user:<id>``, ``internal``...): one caller's key never answers
another's request. Only answers are stored: when the work raises, the claim is
released and the same key may be sent again, so the work itself must be safe to
run twice (look up its own earlier effect first). A claim whose worker died is
taken over once its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import Header
from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from panthera.kernel.db import Database, UTCDateTime
from panthera.kernel.errors import Conflict, InvalidInput, PantheraError
from panthera.kernel.sql import Sql, is_unique_violation

_log = logging.getLogger("panthera.idempotency")
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Set on every answer of an idempotent route: "true" when it is a stored one.
REPLAYED_HEADER = "Idempotent-Replayed"
MINIMUM_TTL = timedelta(hours=24)
DEFAULT_LEASE = timedelta(seconds=120)
IN_FLIGHT = "in_flight"
COMPLETED = "completed"
# Printable ASCII without spaces, as Stripe and the IETF draft allow; UUIDs fit.
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def idempotency_table(metadata: MetaData) -> Table:
    """Add the ``idempotency_keys`` table to a service's metadata."""
    table = Table(
        "idempotency_keys",
        metadata,
        Column("scope", String(120), primary_key=True),
        Column("key", String(255), primary_key=True),
        Column("request_hash", String(64), nullable=False),
        Column("status", String(20), nullable=False),
        # Who holds an in-flight claim: completing or releasing it needs this id.
        Column("claim_id", Uuid, nullable=False),
        Column("locked_until", UTCDateTime, nullable=False),
        Column("response_status", Integer),
        Column("response_body", Text),
        Column("created_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
    )
    Index("ix_idempotency_keys_expires_at", table.c.expires_at)
    return table


class IdempotencyKeyRequired(InvalidInput):
    code = "idempotency_key_required"
    title = "An Idempotency-Key header is required"


class InvalidIdempotencyKey(InvalidInput):
    code = "invalid_idempotency_key"
    title = "Idempotency keys are 1 to 255 printable ASCII characters"


class IdempotencyKeyReused(PantheraError):
    status = 422
    code = "idempotency_key_reused"
    title = "The Idempotency-Key was already used with another request"


class IdempotencyKeyInFlight(Conflict):
    code = "idempotency_in_flight"
    title = "A request with this Idempotency-Key is still being processed"

    def __init__(self) -> None:
        super().__init__("Retry shortly to get its answer.", headers={"Retry-After": "1"})


def checked_key(value: str | None) -> str:
    """The ``Idempotency-Key`` header's value, refused when missing or malformed."""
    if value is None or value == "":
        raise IdempotencyKeyRequired()
    if not _KEY.match(value):
        raise InvalidIdempotencyKey()
    return value


# A route parameter, ``key: IdempotencyKeyHeader = None``, then ``checked_key(key)``:
# optional in the schema so that a missing key gets its own error code.
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        description=(
            "Required. A unique key per operation (a UUID): retrying with the same key "
            "and body returns the first answer instead of doing the work twice; the same "
            "key with another body is refused with 422 idempotency_key_reused."
        ),
    ),
]


def request_fingerprint(operation: str, payload: Any) -> str:
    """A hash of what a request asks for: the operation and its parsed body.

    Parsed, not raw, so that a retry with other whitespace or key order is the same.
    """
    canonical = orjson.dumps(
        {"operation": operation, "payload": payload},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class IdempotentResponse:
    """An answer of an idempotent operation, first given or replayed."""

    status: int
    body: bytes
    replayed: bool

    def json(self) -> Any:
        """The body, parsed."""
        return orjson.loads(self.body)

    def to_response(self) -> Response:
        """The HTTP answer, marked with ``Idempotent-Replayed``."""
        return Response(
            self.body,
            status_code=self.status,
            media_type="application/json",
            headers={REPLAYED_HEADER: "true" if self.replayed else "false"},
        )


@dataclass(frozen=True)
class Claim:
    """The right to run an operation under a key, held until completed or released."""

    scope: str
    key: str
    request_hash: str
    claim_id: uuid.UUID
    # The key was new: no earlier run of it can have done anything, so the work need
    # not look for what one left (a run that died, a key purged after its time).
    first: bool = False


# Does the work of a claim and answers its ``(status, JSON-able body)``.
Handler = Callable[[Claim], Awaitable[tuple[int, Any]]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class IdempotencyKeys:
    """The idempotency keys of one service's database.

    Every call here is its own short transaction, never the caller's, so a claim
    is visible to concurrent requests at once and the work in between holds no
    lock. The claim, the stored answer and the release, which every request with
    a key makes, are one statement each, run on the driver where it has one
    (``Database.execute_alone``).
    """

    def __init__(
        self,
        database: Database,
        table: Table,
        *,
        ttl: timedelta = MINIMUM_TTL,
        lease: timedelta = DEFAULT_LEASE,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if ttl < MINIMUM_TTL:
            raise ValueError("idempotency keys must live at least 24 hours")
        if lease <= timedelta(0):
            raise ValueError("the lease must be positive")
        self._database = database
        self._sessions = database.sessions
        self._table = table
        held = (
            (table.c.scope == bindparam("held_scope"))
            & (table.c.key == bindparam("held_key"))
            & (table.c.status == IN_FLIGHT)
            & (table.c.claim_id == bindparam("held_claim"))
        )
        self._insert_statement = insert(table)
        self._complete_statement = (
            update(table)
            .where(held)
            .values(
                status=COMPLETED,
                response_status=bindparam("answer_status"),
                response_body=bindparam("answer_body"),
            )
        )
        self._release_statement = delete(table).where(held)
        self._ttl = ttl
        self._lease = lease
        self._clock = clock
        # Answers stored by ``answer_in`` in a handler's transaction, by claim.
        self._answered: dict[uuid.UUID, tuple[int, bytes]] = {}

    async def run(
        self, *, scope: str, key: str, request_hash: str, handler: Handler
    ) -> IdempotentResponse:
        """Run ``handler`` once per key: its ``(status, JSON-able body)`` is stored and replayed.

        Raises :class:`IdempotencyKeyReused` or :class:`IdempotencyKeyInFlight`;
        whatever ``handler`` raises is raised again after the claim is released.
        """
        outcome = await self.claim(scope=scope, key=key, request_hash=request_hash)
        if isinstance(outcome, IdempotentResponse):
            return outcome
        try:
            status, payload = await handler(outcome)
        except BaseException:
            # The work did not finish: the same key may try again (an answer stored
            # with it was rolled back with it). Even when the release fails the lease
            # frees the key.
            self._answered.pop(outcome.claim_id, None)
            with contextlib.suppress(Exception):
                await self.release(outcome)
            raise
        stored = self._answered.pop(outcome.claim_id, None)
        if stored is not None:
            return IdempotentResponse(status=stored[0], body=stored[1], replayed=False)
        return await self.complete(outcome, status, orjson.dumps(payload))

    async def answer_in(self, sql: Sql, claim: Claim, status: int, payload: Any) -> None:
        """Store the answer of ``claim`` in the handler's own transaction (``sql``), so it
        commits with the work, one write fewer; ``run`` then answers it as it is.

        The handler must return the same answer. Raises :class:`IdempotencyKeyInFlight`
        (the caller's transaction must then roll back) when the claim was lost: its
        lease ran out and another request took the key over.
        """
        body = orjson.dumps(payload)
        answered = await sql.execute(
            self._complete_statement,
            {**self._held(claim), "answer_status": status, "answer_body": body.decode()},
        )
        if not answered:
            raise IdempotencyKeyInFlight()
        self._answered[claim.claim_id] = (status, body)

    async def claim(self, *, scope: str, key: str, request_hash: str) -> Claim | IdempotentResponse:
        """Take the key for this request, or give the stored answer; see :meth:`run`."""
        for _ in range(5):
            now = self._clock()
            claim = Claim(scope, key, request_hash, uuid.uuid4())
            if await self._insert(claim, now):
                return dataclasses.replace(claim, first=True)
            async with self._sessions() as session:
                row = (
                    await session.execute(
                        select(self._table).where(
                            self._table.c.scope == scope, self._table.c.key == key
                        )
                    )
                ).one_or_none()
                if row is None:
                    continue  # released meanwhile: try the insert again
                if row.expires_at <= now:
                    # An expired key starts afresh, whatever it was used for.
                    if await self._take_over(session, claim, now, self._table.c.expires_at <= now):
                        return claim
                    continue
                if row.request_hash != request_hash:
                    raise IdempotencyKeyReused()
                if row.status == COMPLETED:
                    return IdempotentResponse(
                        status=row.response_status,
                        body=row.response_body.encode(),
                        replayed=True,
                    )
                if row.locked_until > now:
                    raise IdempotencyKeyInFlight()
                # The worker that claimed it is gone (its lease ran out): take over.
                if await self._take_over(
                    session,
                    claim,
                    now,
                    self._table.c.status == IN_FLIGHT,
                    self._table.c.claim_id == row.claim_id,
                ):
                    return claim
        raise IdempotencyKeyInFlight()

    async def complete(self, claim: Claim, status: int, body: bytes) -> IdempotentResponse:
        """Store the answer of a claimed operation; later requests replay it."""
        completed = await self._database.execute_alone(
            self._complete_statement,
            {**self._held(claim), "answer_status": status, "answer_body": body.decode()},
        )
        if completed == 1:
            return IdempotentResponse(status=status, body=body, replayed=False)
        # Our lease ran out and another request took the key over and answered
        # first: give its answer, so every caller of the key sees the same one.
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(self._table).where(
                        self._table.c.scope == claim.scope, self._table.c.key == claim.key
                    )
                )
            ).one_or_none()
        if row is not None and row.status == COMPLETED and row.request_hash == claim.request_hash:
            return IdempotentResponse(row.response_status, row.response_body.encode(), True)
        return IdempotentResponse(status=status, body=body, replayed=False)

    async def release(self, claim: Claim) -> None:
        """Give up a claim without an answer: the key may be sent again."""
        await self._database.execute_alone(self._release_statement, self._held(claim))

    async def purge_expired(self, *, limit: int = 1000) -> int:
        """Delete up to ``limit`` expired keys; how many went."""
        now = self._clock()
        async with self._sessions() as session:
            expired = list(
                (
                    await session.execute(
                        select(self._table.c.scope, self._table.c.key)
                        .where(self._table.c.expires_at <= now)
                        .limit(limit)
                    )
                ).all()
            )
            for scope, key in expired:
                await session.execute(
                    delete(self._table).where(
                        self._table.c.scope == scope,
                        self._table.c.key == key,
                        self._table.c.expires_at <= now,
                    )
                )
            await session.commit()
        return len(expired)

    async def purge_forever(self, every_seconds: float = 3600.0) -> None:
        """Delete expired keys now and every ``every_seconds``, until cancelled."""
        while True:
            try:
                while await self.purge_expired() > 0:
                    pass
            except Exception:
                _log.exception("purging idempotency keys failed")
            await asyncio.sleep(every_seconds)

    @staticmethod
    def _held(claim: Claim) -> dict[str, Any]:
        return {"held_scope": claim.scope, "held_key": claim.key, "held_claim": claim.claim_id}

    def _fresh_values(self, claim: Claim, now: datetime) -> dict[str, Any]:
        return {
            "request_hash": claim.request_hash,
            "status": IN_FLIGHT,
            "claim_id": claim.claim_id,
            "locked_until": now + self._lease,
            "response_status": None,
            "response_body": None,
            "created_at": now,
            "expires_at": now + self._ttl,
        }

    async def _insert(self, claim: Claim, now: datetime) -> bool:
        try:
            await self._database.execute_alone(
                self._insert_statement,
                {"scope": claim.scope, "key": claim.key, **self._fresh_values(claim, now)},
            )
        except Exception as exc:
            if is_unique_violation(exc):
                return False
            raise
        return True

    async def _take_over(
        self, session: AsyncSession, claim: Claim, now: datetime, *conditions: Any
    ) -> bool:
        result = await session.execute(
            update(self._table)
            .where(self._table.c.scope == claim.scope, self._table.c.key == claim.key, *conditions)
            .values(**self._fresh_values(claim, now))
        )
        await session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]
