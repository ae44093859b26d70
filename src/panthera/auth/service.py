"""Use cases of the auth service: sign-in, token rotation, sign-out and credentials."""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from panthera.auth import errors
from panthera.auth.events import PasswordChanged, RefreshTokenReused, UserLoggedIn
from panthera.auth.keys import Keyring
from panthera.auth.models import Account, RefreshToken
from panthera.kernel.db import UnitOfWork
from panthera.kernel.errors import InvalidInput, TooManyRequests
from panthera.kernel.ratelimit import AttemptCounter
from panthera.kernel.security.passwords import PasswordHasher, PasswordPolicy
from panthera.kernel.security.principal import Principal, Revocations

log = logging.getLogger("panthera.auth")


@dataclass
class AuthDeps:
    uow: Callable[[], UnitOfWork]
    read_session: Callable[[], AsyncSession]
    keyring: Keyring
    hasher: PasswordHasher
    policy: PasswordPolicy
    attempts: AttemptCounter
    revocations: Revocations
    access_ttl_seconds: int
    refresh_ttl_seconds: int
    attempts_per_account: int
    attempts_per_address: int
    attempt_window_seconds: int


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    family_id: uuid.UUID


def now_utc() -> datetime:
    return datetime.now(UTC)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def _account_key(email: str) -> str:
    # Hashed so that throttling state in Redis holds no addresses.
    return "login:account:" + sha256(email)


def _address_key(address: str) -> str:
    return "login:address:" + address


async def _check_throttle(deps: AuthDeps, email: str, address: str) -> None:
    window = deps.attempt_window_seconds
    account_failures = await deps.attempts.count(_account_key(email), window_seconds=window)
    address_failures = await deps.attempts.count(_address_key(address), window_seconds=window)
    if (
        account_failures >= deps.attempts_per_account
        or address_failures >= deps.attempts_per_address
    ):
        log.warning(
            "sign-in throttled",
            extra={
                "account": sha256(email)[:16],
                "address": address,
                "account_failures": account_failures,
                "address_failures": address_failures,
            },
        )
        raise TooManyRequests(
            window, "Too many failed sign-ins; try again later or reset the password."
        )


async def _record_failure(deps: AuthDeps, email: str, address: str) -> None:
    window = deps.attempt_window_seconds
    await deps.attempts.add(_account_key(email), window_seconds=window)
    await deps.attempts.add(_address_key(address), window_seconds=window)
    log.warning("sign-in failed", extra={"account": sha256(email)[:16], "address": address})


async def authenticate_password(deps: AuthDeps, email: str, password: str, address: str) -> Account:
    """The account whose password this is; throttled per account and per address.

    An unknown address costs the same hash as a wrong password and gets the same
    answer, so neither status nor timing tells whether an account exists.
    """
    email = normalise_email(email)
    await _check_throttle(deps, email, address)
    async with deps.read_session() as session:
        account = (
            await session.execute(select(Account).where(Account.email == email))
        ).scalar_one_or_none()
    if account is None:
        await deps.hasher.dummy_verify_async(password)
        await _record_failure(deps, email, address)
        raise errors.InvalidCredentials()
    if not await deps.hasher.verify_async(account.password_hash, password):
        await _record_failure(deps, email, address)
        raise errors.InvalidCredentials()
    await deps.attempts.reset(_account_key(email))
    if deps.hasher.needs_rehash(account.password_hash):
        await _rehash(deps, account.user_id, password)
    return account


async def _rehash(deps: AuthDeps, user_id: uuid.UUID, password: str) -> None:
    """Upgrade a hash made with weaker parameters, now that we hold the password."""
    new_hash = await deps.hasher.hash_async(password)
    async with deps.uow() as uow:
        await uow.session.execute(
            update(Account).where(Account.user_id == user_id).values(password_hash=new_hash)
        )
        await uow.commit()
    log.info("password rehashed with current parameters", extra={"user_id": str(user_id)})


def _new_refresh(
    session: AsyncSession,
    deps: AuthDeps,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    client_id: str | None,
) -> str:
    token = secrets.token_urlsafe(32)
    now = now_utc()
    session.add(
        RefreshToken(
            id=uuid.uuid4(),
            family_id=family_id,
            user_id=user_id,
            token_hash=sha256(token),
            client_id=client_id,
            created_at=now,
            expires_at=now + timedelta(seconds=deps.refresh_ttl_seconds),
            rotated_at=None,
            revoked_at=None,
        )
    )
    return token


def _access_token(deps: AuthDeps, account: Account, family_id: uuid.UUID) -> str:
    return deps.keyring.issuer.issue_access_token(
        str(account.user_id),
        roles=list(account.roles),
        ttl_seconds=deps.access_ttl_seconds,
        extra={
            "iat_ms": int(now_utc().timestamp() * 1000),
            "email_verified": account.email_verified,
            "sid": str(family_id),
        },
    )


async def start_session(
    deps: AuthDeps, uow: UnitOfWork, account: Account, *, method: str, client_id: str | None = None
) -> TokenPair:
    """A new refresh family and its first tokens, inside the caller's transaction."""
    family_id = uuid.uuid4()
    refresh = _new_refresh(uow.session, deps, account.user_id, family_id, client_id)
    uow.publish(UserLoggedIn(user_id=account.user_id, method=method, logged_in_at=now_utc()))
    return TokenPair(
        access_token=_access_token(deps, account, family_id),
        refresh_token=refresh,
        expires_in=deps.access_ttl_seconds,
        family_id=family_id,
    )


async def login(deps: AuthDeps, email: str, password: str, address: str) -> TokenPair:
    """Email and password for a token pair."""
    account = await authenticate_password(deps, email, password, address)
    async with deps.uow() as uow:
        pair = await start_session(deps, uow, account, method="password")
        await uow.commit()
    return pair


async def revoke_family(deps: AuthDeps, session: AsyncSession, family_id: uuid.UUID) -> None:
    """End one sign-in: its refresh tokens, and the access tokens issued to it (``sid``)."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now_utc())
    )
    await deps.revocations.revoke_session(str(family_id), ttl_seconds=deps.access_ttl_seconds + 60)


async def refresh(deps: AuthDeps, token: str, *, client_id: str | None = None) -> TokenPair:
    """Rotate a refresh token. A token presented twice revokes its whole family."""
    reused: RefreshToken | None = None
    async with deps.uow() as uow:
        record = (
            await uow.session.execute(
                select(RefreshToken)
                .where(RefreshToken.token_hash == sha256(token))
                .with_for_update()
            )
        ).scalar_one_or_none()
        now = now_utc()
        if record is None or record.revoked_at is not None:
            raise errors.InvalidRefreshToken()
        if client_id is not None and record.client_id not in (None, client_id):
            raise errors.InvalidRefreshToken()
        if record.rotated_at is not None:
            await revoke_family(deps, uow.session, record.family_id)
            uow.publish(
                RefreshTokenReused(
                    user_id=record.user_id, family_id=record.family_id, detected_at=now
                )
            )
            await uow.commit()
            reused = record
        else:
            if record.expires_at <= now:
                raise errors.InvalidRefreshToken()
            account = await uow.session.get(Account, record.user_id)
            if account is None:
                raise errors.InvalidRefreshToken()
            record.rotated_at = now
            new_token = _new_refresh(
                uow.session, deps, record.user_id, record.family_id, record.client_id
            )
            pair = TokenPair(
                access_token=_access_token(deps, account, record.family_id),
                refresh_token=new_token,
                expires_in=deps.access_ttl_seconds,
                family_id=record.family_id,
            )
            await uow.commit()
            return pair
    log.warning(
        "refresh token reused; family revoked",
        extra={"user_id": str(reused.user_id), "family_id": str(reused.family_id)},
    )
    raise errors.InvalidRefreshToken()


async def logout(deps: AuthDeps, refresh_token: str | None, principal: Principal | None) -> None:
    """End a sign-in: its refresh family and, when presented, its access token."""
    async with deps.uow() as uow:
        if refresh_token:
            record = (
                await uow.session.execute(
                    select(RefreshToken).where(RefreshToken.token_hash == sha256(refresh_token))
                )
            ).scalar_one_or_none()
            if record is not None and (principal is None or principal.user_id == record.user_id):
                await revoke_family(deps, uow.session, record.family_id)
        await uow.commit()
    if principal is not None:
        await deps.revocations.revoke_token(principal.token_id, expires_at=principal.expires_at)


async def sign_out_everywhere(deps: AuthDeps, session: AsyncSession, user_id: uuid.UUID) -> None:
    """Revoke every refresh family and every access token of a user."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now_utc())
    )
    await deps.revocations.revoke_subject(str(user_id), ttl_seconds=deps.access_ttl_seconds + 60)


async def change_password(
    deps: AuthDeps,
    principal: Principal,
    current_password: str,
    new_password: str,
    address: str,
) -> None:
    """Change a password knowing the current one; every session ends.

    Checking the current password is a sign-in like any other, throttled the
    same way: a stolen access token must not buy unlimited guesses at it.
    """
    async with deps.uow() as uow:
        account = await uow.session.get(Account, principal.user_id)
    if account is None:
        raise errors.InvalidCredentials("The current password is wrong.")
    await _check_throttle(deps, account.email, address)
    if not await deps.hasher.verify_async(account.password_hash, current_password):
        await _record_failure(deps, account.email, address)
        raise errors.InvalidCredentials("The current password is wrong.")
    problems = deps.policy.check(new_password, email=account.email)
    if problems:
        raise InvalidInput("Choose a longer or less common password.", problems=problems)
    await set_password(deps, principal.user_id, await deps.hasher.hash_async(new_password))


async def set_password(deps: AuthDeps, user_id: uuid.UUID, password_hash: str) -> None:
    """Store a new password hash, end every session, and lift the sign-in throttle."""
    async with deps.uow() as uow:
        account = await uow.session.get(Account, user_id, with_for_update=True)
        if account is None:
            raise errors.AccountNotFound()
        account.password_hash = password_hash
        account.password_changed_at = now_utc()
        await sign_out_everywhere(deps, uow.session, user_id)
        uow.publish(PasswordChanged(user_id=user_id, changed_at=account.password_changed_at))
        await uow.commit()
        email = account.email
    await deps.attempts.reset(_account_key(email))


async def put_credentials(
    deps: AuthDeps,
    user_id: uuid.UUID,
    *,
    email: str,
    password_hash: str,
    roles: list[str],
    email_verified: bool,
) -> None:
    """Create a new account's credentials; repeating the same call changes nothing."""
    email = normalise_email(email)
    async with deps.uow() as uow:
        taken = (
            await uow.session.execute(select(Account).where(Account.email == email))
        ).scalar_one_or_none()
        if taken is not None and taken.user_id != user_id:
            raise errors.EmailTaken()
        account = await uow.session.get(Account, user_id, with_for_update=True)
        now = now_utc()
        if account is None:
            uow.session.add(
                Account(
                    user_id=user_id,
                    email=email,
                    password_hash=password_hash,
                    roles=roles,
                    email_verified=email_verified,
                    revision=1,
                    created_at=now,
                    password_changed_at=now,
                )
            )
        else:
            account.email = email
            account.password_hash = password_hash
        await uow.commit()


async def delete_credentials(deps: AuthDeps, user_id: uuid.UUID) -> None:
    """Remove an account's credentials and end its sessions."""
    async with deps.uow() as uow:
        account = await uow.session.get(Account, user_id, with_for_update=True)
        if account is None:
            raise errors.AccountNotFound()
        await uow.session.delete(account)
        await sign_out_everywhere(deps, uow.session, user_id)
        await uow.commit()
