"""Who is calling: the principal behind a verified access token, and token revocation."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import redis.asyncio as aioredis


class Role(StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"
    MODERATOR = "MODERATOR"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user_id: uuid.UUID
    roles: frozenset[str]
    token_id: str
    # Milliseconds, so a revocation and a fresh sign-in within one second are told apart.
    issued_at_ms: int
    expires_at: int

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    def may_act_for(self, user_id: uuid.UUID) -> bool:
        """Ownership check: the caller is that user, or an admin."""
        return self.user_id == user_id or self.is_admin


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Revocations(Protocol):
    """Access tokens stop working before they expire: one token, or all of a user's."""

    async def revoke_token(self, token_id: str, *, expires_at: int) -> None:
        """Refuse this token id until it would have expired anyway."""

    async def revoke_subject(self, user_id: str, *, ttl_seconds: int) -> None:
        """Refuse every token of this user issued up to now."""

    async def revoke_session(self, session_id: str, *, ttl_seconds: int) -> None:
        """Refuse every token of one sign-in (a refresh family), e.g. when it was stolen."""

    async def is_revoked(
        self, *, token_id: str, user_id: str, issued_at_ms: int, session_id: str = ""
    ) -> bool:
        """Whether a token with these claims has been revoked."""

    async def ready(self) -> bool:
        """Whether the store answers."""


class MemoryRevocations:
    """Revocations for the embedded shape, where one process holds every service."""

    def __init__(self) -> None:
        self._tokens: dict[str, int] = {}
        self._subjects: dict[str, tuple[int, float]] = {}
        self._sessions: dict[str, float] = {}

    async def revoke_token(self, token_id: str, *, expires_at: int) -> None:
        self._sweep()
        self._tokens[token_id] = expires_at

    async def revoke_subject(self, user_id: str, *, ttl_seconds: int) -> None:
        self._sweep()
        self._subjects[user_id] = (_now_ms(), time.time() + ttl_seconds)

    async def revoke_session(self, session_id: str, *, ttl_seconds: int) -> None:
        self._sweep()
        self._sessions[session_id] = time.time() + ttl_seconds

    async def is_revoked(
        self, *, token_id: str, user_id: str, issued_at_ms: int, session_id: str = ""
    ) -> bool:
        if token_id in self._tokens or (session_id and session_id in self._sessions):
            return True
        revoked = self._subjects.get(user_id)
        return revoked is not None and issued_at_ms <= revoked[0]

    async def ready(self) -> bool:
        return True

    def _sweep(self) -> None:
        now = time.time()
        for token_id in [k for k, exp in self._tokens.items() if exp < now]:
            del self._tokens[token_id]
        for subject in [k for k, (_, until) in self._subjects.items() if until < now]:
            del self._subjects[subject]
        for session in [k for k, until in self._sessions.items() if until < now]:
            del self._sessions[session]


class RedisRevocations:
    """Revocations shared by every replica through Redis; entries expire by themselves."""

    def __init__(self, client: aioredis.Redis, prefix: str = "panthera:revoked:") -> None:
        self._redis = client
        self._prefix = prefix

    async def revoke_token(self, token_id: str, *, expires_at: int) -> None:
        ttl = max(1, expires_at - int(time.time()) + 1)
        await self._redis.set(f"{self._prefix}jti:{token_id}", b"1", ex=ttl)

    async def revoke_subject(self, user_id: str, *, ttl_seconds: int) -> None:
        await self._redis.set(
            f"{self._prefix}sub:{user_id}", str(_now_ms()), ex=max(1, ttl_seconds)
        )

    async def revoke_session(self, session_id: str, *, ttl_seconds: int) -> None:
        await self._redis.set(f"{self._prefix}sid:{session_id}", b"1", ex=max(1, ttl_seconds))

    async def is_revoked(
        self, *, token_id: str, user_id: str, issued_at_ms: int, session_id: str = ""
    ) -> bool:
        token, subject, session = await self._redis.mget(
            f"{self._prefix}jti:{token_id}",
            f"{self._prefix}sub:{user_id}",
            f"{self._prefix}sid:{session_id or '-'}",
        )
        if token is not None or session is not None:
            return True
        return subject is not None and issued_at_ms <= int(subject)

    async def ready(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False
