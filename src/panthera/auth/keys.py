"""The auth service's signing keys: kept in its database, rotated on schedule, published as JWKS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from panthera.auth.models import SigningKeyRecord
from panthera.kernel.db import UnitOfWork
from panthera.kernel.security.tokens import SigningKey, TokenIssuer, jwks_document, rotate

log = logging.getLogger("panthera.auth")


class Keyring:
    """The current key set. Every replica reloads it, so a key one creates, all use.

    Rotation adds a key and retires the old one; the retired key stays in the
    JWKS until every token it signed has expired, so nobody is signed out.
    """

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        *,
        issuer: str,
        audience: str,
        rotation_days: int,
        max_token_lifetime_seconds: int,
        reload_seconds: float = 60.0,
    ) -> None:
        self._uow = uow
        self._issuer_name = issuer
        self._audience = audience
        self._rotation_days = rotation_days
        self._max_lifetime = max_token_lifetime_seconds
        self._reload_seconds = reload_seconds
        self._keys: list[SigningKey] = []
        self._issuer: TokenIssuer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def issuer(self) -> TokenIssuer:
        if self._issuer is None:
            raise RuntimeError("the keyring has not been loaded")
        return self._issuer

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document."""
        return jwks_document(self._keys)

    async def refresh(self, now: datetime | None = None) -> None:
        """Load the keys, rotating (and saving) when the newest is due."""
        now = now or datetime.now(UTC)
        async with self._uow() as uow:
            records = list(
                (await uow.session.execute(select(SigningKeyRecord).with_for_update())).scalars()
            )
            stored = [
                SigningKey(
                    kid=r.kid,
                    private_key_pem=r.private_key_pem.encode(),
                    created_at=r.created_at,
                    active=r.active,
                )
                for r in records
            ]
            keys = rotate(stored, now, self._rotation_days, self._max_lifetime)
            kept = {key.kid for key in keys}
            by_kid = {r.kid: r for r in records}
            changed = False
            for key in keys:
                record = by_kid.get(key.kid)
                if record is None:
                    uow.session.add(
                        SigningKeyRecord(
                            kid=key.kid,
                            private_key_pem=key.private_key_pem.decode(),
                            created_at=key.created_at,
                            active=key.active,
                        )
                    )
                    changed = True
                    log.info("signing key created", extra={"kid": key.kid})
                elif record.active != key.active:
                    record.active = key.active
                    changed = True
            for record in records:
                if record.kid not in kept:
                    await uow.session.delete(record)
                    changed = True
            if changed:
                await uow.commit()
        self._keys = keys
        self._issuer = TokenIssuer(keys, issuer=self._issuer_name, audience=self._audience)

    def start(self) -> None:
        """Reload and rotate in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="auth-keyring")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._reload_seconds)
            try:
                await self.refresh()
            except Exception:
                log.exception("reloading signing keys failed; keeping the current ones")
