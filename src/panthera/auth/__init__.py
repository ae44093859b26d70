"""The auth service: credentials, sessions (refresh-token families), signing keys, OAuth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from panthera.kernel.service import ServiceDefinition, ServiceRuntime


def _router() -> APIRouter:
    from panthera.auth.endpoints import router

    return router


def _state(runtime: ServiceRuntime) -> dict[str, Any]:
    from panthera.auth.keys import Keyring
    from panthera.auth.service import AuthDeps
    from panthera.kernel.security.passwords import PasswordPolicy

    settings = runtime.settings
    keyring = Keyring(
        runtime.uow,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        rotation_days=settings.signing_key_rotation_days,
        max_token_lifetime_seconds=settings.access_token_ttl_seconds + 60,
    )
    deps = AuthDeps(
        uow=runtime.uow,
        read_session=runtime.database.read_sessions,
        keyring=keyring,
        hasher=runtime.components["password_hasher"],
        policy=PasswordPolicy(),
        attempts=runtime.components["attempts"],
        revocations=runtime.components["revocations"],
        access_ttl_seconds=settings.access_token_ttl_seconds,
        refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        attempts_per_account=settings.login_attempts_per_account,
        attempts_per_address=settings.login_attempts_per_address,
        attempt_window_seconds=settings.login_window_seconds,
    )
    runtime.components["auth_deps"] = deps
    return {"auth_deps": deps}


async def _start(runtime: ServiceRuntime) -> None:
    from panthera.auth.service import AuthDeps

    deps: AuthDeps = runtime.components["auth_deps"]
    await deps.keyring.refresh()
    deps.keyring.start()
    # This process verifies tokens with its own keys rather than fetching its own JWKS.
    runtime.components["local_jwks"](deps.keyring.jwks)


async def _stop(runtime: ServiceRuntime) -> None:
    await runtime.components["auth_deps"].keyring.stop()


def _definition() -> ServiceDefinition:
    from panthera.auth.handlers import SUBSCRIPTIONS
    from panthera.auth.models import EVENT_TABLES, Base

    return ServiceDefinition(
        name="auth",
        title="Auth Service API",
        description=(
            "Sign-in, token rotation and revocation, signing keys (JWKS) and OAuth 2.0 with PKCE."
        ),
        metadata=Base.metadata,
        tables=EVENT_TABLES,
        migrations_dir=Path(__file__).parent / "migrations",
        router=_router,
        state=_state,
        subscriptions=SUBSCRIPTIONS,
        on_start=_start,
        on_stop=_stop,
    )


definition = _definition()

__all__ = ["definition"]
