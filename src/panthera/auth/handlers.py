"""The auth service's reactions to the users service's events."""

from __future__ import annotations

from typing import Any

from panthera.auth.models import Account
from panthera.auth.service import AuthDeps, sign_out_everywhere
from panthera.kernel.db import UnitOfWork
from panthera.kernel.events import Envelope
from panthera.kernel.service import ServiceRuntime, Subscription
from panthera.users.events import UserDeleted, UserUpdated


def _deps(runtime: ServiceRuntime) -> AuthDeps:
    deps: AuthDeps = runtime.components["auth_deps"]
    return deps


async def on_user_updated(
    runtime: ServiceRuntime, uow: UnitOfWork, event: Any, _e: Envelope
) -> None:
    """Keep sign-in data current; a role change signs the user out so new tokens carry it."""
    assert isinstance(event, UserUpdated)
    account = await uow.session.get(Account, event.user_id, with_for_update=True)
    if account is None or event.revision <= account.revision:
        return
    roles_changed = sorted(account.roles) != sorted(event.roles)
    account.email = event.email
    account.roles = list(event.roles)
    account.email_verified = event.email_verified
    account.revision = event.revision
    if roles_changed:
        deps = _deps(runtime)
        await deps.revocations.revoke_subject(
            str(event.user_id), ttl_seconds=deps.access_ttl_seconds + 60
        )


async def on_user_deleted(
    runtime: ServiceRuntime, uow: UnitOfWork, event: Any, _e: Envelope
) -> None:
    """A deleted user can no longer sign in, and every session of theirs ends."""
    assert isinstance(event, UserDeleted)
    account = await uow.session.get(Account, event.user_id, with_for_update=True)
    if account is not None:
        await uow.session.delete(account)
    await sign_out_everywhere(_deps(runtime), uow.session, event.user_id)


SUBSCRIPTIONS = (
    Subscription(UserUpdated, on_user_updated),
    Subscription(UserDeleted, on_user_deleted),
)
