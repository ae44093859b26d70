"""Use cases of the users service. Each is one transaction; no HTTP framework here."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from panthera.kernel.db import UnitOfWork
from panthera.kernel.errors import Conflict
from panthera.kernel.security.passwords import PasswordHasher, PasswordPolicy
from panthera.kernel.security.principal import Principal, Role
from panthera.users import errors
from panthera.users.auth_client import AuthClient
from panthera.users.events import (
    EmailVerificationRequested,
    PasswordResetRequested,
    RegistrationAttemptedForExistingAccount,
    UserDeleted,
    UserRegistered,
    UserUpdated,
)
from panthera.users.models import AccountToken, TokenPurpose, User
from panthera.users.repository import UserRepository

log = logging.getLogger("panthera.users")


class ResponsePace:
    """How long one outcome of a use case usually takes, so another can take as long.

    Creating an account does more than answering for a taken address (credentials
    at the auth service, more rows, more events): tens of milliseconds that would
    tell a stranger which addresses have accounts. The cheaper outcome waits until
    the median of the recent expensive ones has passed.
    """

    def __init__(self, window: int = 15) -> None:
        self._samples: deque[float] = deque(maxlen=window)

    def record(self, started: float) -> None:
        """Remember how long an expensive outcome that began at ``started`` took."""
        self._samples.append(time.perf_counter() - started)

    async def pad(self, started: float) -> None:
        """Sleep until a cheap outcome that began at ``started`` took the usual time."""
        if not self._samples:
            return
        remaining = statistics.median(self._samples) - (time.perf_counter() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)


@dataclass
class UsersDeps:
    """What the use cases need from outside: transactions, the auth service, password rules."""

    uow: Callable[[], UnitOfWork]
    # Reads that change nothing: on SQLite they do not queue behind the writer.
    read_session: Callable[[], AsyncSession]
    auth: AuthClient
    hasher: PasswordHasher
    policy: PasswordPolicy
    verification_ttl: timedelta
    reset_ttl: timedelta
    reveal_existing_email: bool = False
    registration_pace: ResponsePace = field(default_factory=ResponsePace)
    reset_pace: ResponsePace = field(default_factory=ResponsePace)


@dataclass(frozen=True)
class Registration:
    user: User


def normalise_email(email: str) -> str:
    """One spelling per mailbox: domains are case-insensitive, and in practice so is the rest."""
    return email.strip().lower()


def _now() -> datetime:
    return datetime.now(UTC)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _issue_token(
    repo: UserRepository, user_id: uuid.UUID, purpose: TokenPurpose, ttl: timedelta
) -> tuple[str, datetime]:
    token = secrets.token_urlsafe(32)
    now = _now()
    expires_at = now + ttl
    repo.add_token(
        AccountToken(
            id=uuid.uuid4(),
            user_id=user_id,
            purpose=purpose,
            token_hash=_hash_token(token),
            created_at=now,
            expires_at=expires_at,
            used_at=None,
        )
    )
    return token, expires_at


def _check_password(deps: UsersDeps, password: str, email: str) -> None:
    problems = deps.policy.check(password, email=email)
    if problems:
        raise errors.WeakPassword("Choose a longer or less common password.", problems=problems)


def _updated_event(user: User, changed: Sequence[str]) -> UserUpdated:
    return UserUpdated(
        user_id=user.id,
        revision=user.revision,
        email=user.email,
        first_name=user.first_name,
        last_name=user.last_name,
        phone_number=user.phone_number,
        roles=list(user.roles),
        email_verified=user.email_verified,
        changed=list(changed),
        updated_at=user.updated_at,
    )


async def register(
    deps: UsersDeps,
    *,
    email: str,
    password: str,
    first_name: str,
    last_name: str,
    phone_number: str | None,
) -> User:
    """Create an account, its credentials and a verification link.

    An address that already has an account gets the same answer as a new one
    (unless the shop chose to reveal it), and its owner is told by mail: the
    API must not tell strangers who has an account here, neither by the answer
    nor by how long it takes.
    """
    started = time.perf_counter()
    user, created = await _register(
        deps,
        email=email,
        password=password,
        first_name=first_name,
        last_name=last_name,
        phone_number=phone_number,
    )
    if created:
        deps.registration_pace.record(started)
    else:
        await deps.registration_pace.pad(started)
    return user


async def _register(
    deps: UsersDeps,
    *,
    email: str,
    password: str,
    first_name: str,
    last_name: str,
    phone_number: str | None,
) -> tuple[User, bool]:
    """The account answered and whether it was created."""
    email = normalise_email(email)
    _check_password(deps, password, email)
    # Hash before looking the address up, so both outcomes cost the same time.
    password_hash = await deps.hasher.hash_async(password)
    now = _now()
    user = User(
        id=uuid.uuid4(),
        email=email,
        first_name=first_name,
        last_name=last_name,
        phone_number=phone_number,
        roles=[Role.USER.value],
        email_verified=False,
        revision=1,
        created_at=now,
        updated_at=now,
    )
    async with deps.uow() as uow:
        repo = UserRepository(uow.session)
        existing = await repo.by_email(email)
        if existing is not None:
            return await _existing_account(deps, uow, existing, user), False
        repo.add(user)
        token, expires_at = _issue_token(
            repo, user.id, TokenPurpose.VERIFY_EMAIL, deps.verification_ttl
        )
        uow.publish(
            UserRegistered(
                user_id=user.id,
                email=email,
                first_name=first_name,
                last_name=last_name,
                roles=list(user.roles),
                email_verified=False,
                registered_at=now,
            )
        )
        uow.publish(
            EmailVerificationRequested(
                user_id=user.id,
                email=email,
                first_name=first_name,
                token=token,
                expires_at=expires_at,
            )
        )
        await uow.session.flush()
        try:
            await deps.auth.put_credentials(
                user.id,
                email=email,
                password_hash=password_hash,
                roles=list(user.roles),
                email_verified=False,
            )
        except Conflict:
            # Another registration of this address won the race at the auth service.
            await uow.rollback()
            if deps.reveal_existing_email:
                raise errors.EmailAlreadyRegistered() from None
            return user, False
        try:
            await uow.commit()
        except Exception:
            await deps.auth.delete_credentials(user.id)
            raise
    log.info("user registered", extra={"user_id": str(user.id)})
    return user, True


async def _existing_account(deps: UsersDeps, uow: UnitOfWork, existing: User, fresh: User) -> User:
    if deps.reveal_existing_email:
        raise errors.EmailAlreadyRegistered()
    uow.publish(
        RegistrationAttemptedForExistingAccount(
            user_id=existing.id,
            email=existing.email,
            first_name=existing.first_name,
            attempted_at=_now(),
        )
    )
    await uow.commit()
    # The caller gets a well-formed answer about an account that was not created.
    return fresh


async def get_profile(deps: UsersDeps, principal: Principal, user_id: uuid.UUID) -> User:
    """A profile its owner or an admin may read; to anyone else it does not exist."""
    if not principal.may_act_for(user_id):
        raise errors.UserNotFound()
    async with deps.read_session() as session:
        user = await UserRepository(session).get(user_id)
    if user is None:
        raise errors.UserNotFound()
    return user


async def list_profiles(deps: UsersDeps, *, limit: int, offset: int) -> tuple[Sequence[User], int]:
    """Every profile, oldest first (admins only: enforced at the route)."""
    async with deps.read_session() as session:
        return await UserRepository(session).page(limit=limit, offset=offset)


async def update_profile(
    deps: UsersDeps, principal: Principal, user_id: uuid.UUID, changes: dict[str, object]
) -> User:
    """Change the fields given; the owner or an admin only."""
    if not principal.may_act_for(user_id):
        raise errors.NotYourProfile()
    async with deps.uow() as uow:
        repo = UserRepository(uow.session)
        user = await repo.get(user_id, for_update=True)
        if user is None:
            raise errors.UserNotFound()
        changed = [field for field, value in changes.items() if getattr(user, field) != value]
        if not changed:
            return user
        for field in changed:
            setattr(user, field, changes[field])
        user.revision += 1
        user.updated_at = _now()
        uow.publish(_updated_event(user, changed))
        await uow.commit()
    return user


async def assign_roles(deps: UsersDeps, user_id: uuid.UUID, roles: Sequence[Role]) -> User:
    """Set a user's roles (admins only); the last admin keeps ADMIN."""
    wanted = sorted({role.value for role in roles} | {Role.USER.value})
    async with deps.uow() as uow:
        repo = UserRepository(uow.session)
        user = await repo.get(user_id, for_update=True)
        if user is None:
            raise errors.UserNotFound()
        if sorted(user.roles) == wanted:
            return user
        if Role.ADMIN in user.roles and Role.ADMIN not in wanted and await repo.count_admins() <= 1:
            raise errors.LastAdministrator()
        user.roles = wanted
        user.revision += 1
        user.updated_at = _now()
        uow.publish(_updated_event(user, ["roles"]))
        await uow.commit()
    return user


async def delete_user(deps: UsersDeps, principal: Principal, user_id: uuid.UUID) -> None:
    """Remove an account; its credentials and sessions go with it (admins only)."""
    async with deps.uow() as uow:
        repo = UserRepository(uow.session)
        user = await repo.get(user_id, for_update=True)
        if user is None:
            raise errors.UserNotFound()
        if Role.ADMIN in user.roles and await repo.count_admins() <= 1:
            raise errors.LastAdministrator("The last administrator cannot be deleted.")
        await repo.delete(user)
        uow.publish(UserDeleted(user_id=user_id, deleted_at=_now()))
        await uow.commit()
    log.info("user deleted", extra={"user_id": str(user_id), "by": str(principal.user_id)})


async def verify_email(deps: UsersDeps, token: str) -> None:
    """Use a verification link: once, before it expires."""
    async with deps.uow() as uow:
        repo = UserRepository(uow.session)
        record = await repo.token_by_hash(_hash_token(token), TokenPurpose.VERIFY_EMAIL)
        now = _now()
        if record is None or record.used_at is not None or record.expires_at < now:
            raise errors.InvalidAccountToken()
        record.used_at = now
        user = await repo.get(record.user_id, for_update=True)
        if user is None:
            raise errors.InvalidAccountToken()
        if not user.email_verified:
            user.email_verified = True
            user.revision += 1
            user.updated_at = now
            uow.publish(_updated_event(user, ["email_verified"]))
        await uow.commit()


async def resend_verification(deps: UsersDeps, principal: Principal) -> None:
    """Send a fresh verification link; earlier ones stop working."""
    async with deps.uow() as uow:
        repo = UserRepository(uow.session)
        user = await repo.get(principal.user_id)
        if user is None or user.email_verified:
            return
        now = _now()
        await repo.retire_tokens(user.id, TokenPurpose.VERIFY_EMAIL, now)
        token, expires_at = _issue_token(
            repo, user.id, TokenPurpose.VERIFY_EMAIL, deps.verification_ttl
        )
        uow.publish(
            EmailVerificationRequested(
                user_id=user.id,
                email=user.email,
                first_name=user.first_name,
                token=token,
                expires_at=expires_at,
            )
        )
        await uow.commit()


async def request_password_reset(deps: UsersDeps, email: str) -> None:
    """Mail a reset link if the address has an account; answer the same either way."""
    started = time.perf_counter()
    email = normalise_email(email)
    async with deps.uow() as uow:
        repo = UserRepository(uow.session)
        user = await repo.by_email(email)
        if user is not None:
            await _issue_reset_link(deps, uow, repo, user)
    # Issuing a link writes and commits; an unknown address waits as long, so
    # the response time does not tell which addresses have accounts.
    if user is None:
        await deps.reset_pace.pad(started)
    else:
        deps.reset_pace.record(started)


async def _issue_reset_link(
    deps: UsersDeps, uow: UnitOfWork, repo: UserRepository, user: User
) -> None:
    """Retire the user's earlier reset links and mail a new one."""
    now = _now()
    await repo.retire_tokens(user.id, TokenPurpose.RESET_PASSWORD, now)
    token, expires_at = _issue_token(repo, user.id, TokenPurpose.RESET_PASSWORD, deps.reset_ttl)
    uow.publish(
        PasswordResetRequested(
            user_id=user.id,
            email=user.email,
            first_name=user.first_name,
            token=token,
            expires_at=expires_at,
        )
    )
    await uow.commit()


async def reset_password(deps: UsersDeps, token: str, new_password: str) -> None:
    """Set a new password with a reset link; every session of the account ends."""
    async with deps.uow() as uow:
        repo = UserRepository(uow.session)
        record = await repo.token_by_hash(_hash_token(token), TokenPurpose.RESET_PASSWORD)
        now = _now()
        if record is None or record.used_at is not None or record.expires_at < now:
            raise errors.InvalidAccountToken()
        user = await repo.get(record.user_id)
        if user is None:
            raise errors.InvalidAccountToken()
        _check_password(deps, new_password, user.email)
        password_hash = await deps.hasher.hash_async(new_password)
        record.used_at = now
        # Proving control of the mailbox verifies it, too.
        if not user.email_verified:
            user.email_verified = True
            user.revision += 1
            user.updated_at = now
            uow.publish(_updated_event(user, ["email_verified"]))
        await deps.auth.set_password(user.id, password_hash)
        await uow.commit()


async def mark_verified(deps: UsersDeps, user_id: uuid.UUID) -> None:
    """Treat an address as verified without a link (accounts an operator creates)."""
    async with deps.uow() as uow:
        user = await UserRepository(uow.session).get(user_id, for_update=True)
        if user is None:
            raise errors.UserNotFound()
        if user.email_verified:
            return
        user.email_verified = True
        user.revision += 1
        user.updated_at = _now()
        uow.publish(_updated_event(user, ["email_verified"]))
        await uow.commit()
