"""The users service: profiles, roles, email verification and password reset."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from panthera.kernel.security.passwords import PasswordPolicy
from panthera.kernel.service import ServiceDefinition, ServiceRuntime


def _router() -> APIRouter:
    from panthera.users.endpoints import router

    return router


def _state(runtime: ServiceRuntime) -> dict[str, Any]:
    from panthera.users.auth_client import AuthClient
    from panthera.users.service import UsersDeps

    settings = runtime.settings
    return {
        "users_deps": UsersDeps(
            uow=runtime.uow,
            read_session=runtime.database.read_sessions,
            auth=AuthClient(runtime.components["directory"].caller("auth")),
            hasher=runtime.components["password_hasher"],
            policy=PasswordPolicy(),
            verification_ttl=timedelta(seconds=settings.verification_token_ttl_seconds),
            reset_ttl=timedelta(seconds=settings.reset_token_ttl_seconds),
            reveal_existing_email=settings.registration_reveals_existing_email,
        )
    }


def _definition() -> ServiceDefinition:
    from panthera.users.models import EVENT_TABLES, Base

    return ServiceDefinition(
        name="users",
        title="User Service API",
        description="API for managing user profiles, registration, and authentication.",
        metadata=Base.metadata,
        tables=EVENT_TABLES,
        migrations_dir=Path(__file__).parent / "migrations",
        router=_router,
        state=_state,
        calls=("auth",),
    )


definition = _definition()

__all__ = ["definition"]
