"""Creating the first administrator from the command line."""

from __future__ import annotations

import uuid

from panthera.kernel.errors import PantheraError
from panthera.kernel.security.principal import Role
from panthera.kernel.settings import Settings
from panthera.runtime.platform import Platform
from panthera.runtime.registry import SERVICE_NAMES


async def create_administrator(
    settings: Settings, email: str, password: str, first_name: str, last_name: str
) -> tuple[uuid.UUID, bool]:
    """Register (or find) the account and give it ADMIN; True when it was created."""
    from panthera.users import service as users
    from panthera.users.repository import UserRepository

    platform = Platform(settings, SERVICE_NAMES)
    await platform.start(one_shot=True)
    try:
        deps = platform.apps["users"].state.users_deps
        normalised = users.normalise_email(email)
        async with deps.uow() as uow:
            existing = await UserRepository(uow.session).by_email(normalised)
        created = existing is None
        try:
            if existing is None:
                user = await users.register(
                    deps,
                    email=email,
                    password=password,
                    first_name=first_name,
                    last_name=last_name,
                    phone_number=None,
                )
            else:
                user = existing
            await users.assign_roles(deps, user.id, [Role.USER, Role.ADMIN])
            await users.mark_verified(deps, user.id)
        except PantheraError as exc:
            raise ValueError(exc.detail or exc.title) from exc
        await platform.drain_outboxes()
        return user.id, created
    finally:
        await platform.stop()
