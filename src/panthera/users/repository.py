"""Every query of the users service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.users.models import AccountToken, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> User | None:
        query = select(User).where(User.id == user_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def by_email(self, email: str) -> User | None:
        return (
            await self.session.execute(select(User).where(User.email == email))
        ).scalar_one_or_none()

    async def page(self, *, limit: int, offset: int) -> tuple[Sequence[User], int]:
        total = (await self.session.execute(select(func.count()).select_from(User))).scalar_one()
        rows = (
            await self.session.execute(
                select(User).order_by(User.created_at, User.id).limit(limit).offset(offset)
            )
        ).scalars()
        return list(rows), int(total)

    async def count_admins(self) -> int:
        users = (await self.session.execute(select(User.roles))).scalars()
        return sum(1 for roles in users if "ADMIN" in roles)

    def add(self, user: User) -> None:
        self.session.add(user)

    async def delete(self, user: User) -> None:
        await self.session.delete(user)

    def add_token(self, token: AccountToken) -> None:
        self.session.add(token)

    async def token_by_hash(self, token_hash: str, purpose: str) -> AccountToken | None:
        return (
            await self.session.execute(
                select(AccountToken)
                .where(AccountToken.token_hash == token_hash, AccountToken.purpose == purpose)
                .with_for_update()
            )
        ).scalar_one_or_none()

    async def retire_tokens(self, user_id: uuid.UUID, purpose: str, now: datetime) -> None:
        """Older links stop working when a new one is sent or one is used."""
        tokens = (
            await self.session.execute(
                select(AccountToken).where(
                    AccountToken.user_id == user_id,
                    AccountToken.purpose == purpose,
                    AccountToken.used_at.is_(None),
                )
            )
        ).scalars()
        for token in tokens:
            token.used_at = now
