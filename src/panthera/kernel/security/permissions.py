"""Route permissions as FastAPI dependencies. Every route declares exactly one."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from panthera.kernel.errors import Forbidden, Unauthenticated
from panthera.kernel.security.principal import Principal, Revocations
from panthera.kernel.security.tokens import InvalidToken, TokenVerifier

PERMISSION_ATTRIBUTE = "__panthera_permission__"
INTERNAL_TOKEN_HEADER = "x-internal-token"  # noqa: S105

F = TypeVar("F", bound=Callable[..., Any])


def _permission(kind: str) -> Callable[[F], F]:
    def mark(dependency: F) -> F:
        setattr(dependency, PERMISSION_ATTRIBUTE, kind)
        return dependency

    return mark


class Authenticator:
    """Turns a bearer token into a principal: signature, claims, then revocation."""

    def __init__(self, verifier: TokenVerifier, revocations: Revocations) -> None:
        self.verifier = verifier
        self.revocations = revocations

    async def authenticate(self, token: str) -> Principal:
        """The principal of a valid, unrevoked access token; ``Unauthenticated`` otherwise."""
        try:
            claims = await self.verifier.verify_access_token(token)
        except InvalidToken as exc:
            raise Unauthenticated("The access token is invalid.", reason=exc.reason) from exc
        try:
            user_id = uuid.UUID(claims.subject)
        except ValueError as exc:
            raise Unauthenticated("The access token is invalid.") from exc
        issued_at_ms = int(claims.raw.get("iat_ms", claims.issued_at * 1000))
        if await self.revocations.is_revoked(
            token_id=claims.jti,
            user_id=claims.subject,
            issued_at_ms=issued_at_ms,
            session_id=str(claims.raw.get("sid", "")),
        ):
            raise Unauthenticated("The access token has been revoked.")
        return Principal(
            user_id=user_id,
            roles=frozenset(claims.roles),
            token_id=claims.jti,
            issued_at_ms=issued_at_ms,
            expires_at=claims.expires_at,
        )


_bearer = HTTPBearer(auto_error=False, scheme_name="BearerAuth", bearerFormat="JWT")


@_permission("public")
async def public() -> None:
    """Anyone may call this route."""


@_permission("authenticated")
async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Any signed-in user; ownership is checked by the use case."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("A bearer access token is required.")
    return await principal_of(request, credentials.credentials)


async def principal_of(request: Request, token: str) -> Principal:
    """The principal of the request's bearer ``token``, kept on the request for the
    middleware; ``Unauthenticated`` when the token is not a valid, unrevoked one."""
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.authenticate(token)
    request.state.principal = principal
    return principal


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, read as :func:`authenticated`
    reads it (FastAPI's HTTPBearer); None where that dependency would refuse the request."""
    authorization = request.headers.get("authorization")
    scheme, token = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and token) or scheme.lower() != "bearer":
        return None
    return token


@_permission("admin")
async def admin_only(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    """Administrators only."""
    if not principal.is_admin:
        raise Forbidden("This operation needs the ADMIN role.")
    return principal


def is_internal_caller(request: Request) -> bool:
    """Whether the request carries the platform's internal token: one of its services."""
    expected: str = request.app.state.internal_token
    supplied = request.headers.get(INTERNAL_TOKEN_HEADER, "")
    return hmac.compare_digest(supplied.encode(), expected.encode())


@_permission("internal")
async def internal_only(request: Request) -> None:
    """Other services of the platform only, never the public (the gateway refuses the path)."""
    if not is_internal_caller(request):
        raise Forbidden("Internal endpoint.")


CurrentPrincipal = Annotated[Principal, Depends(authenticated)]
AdminPrincipal = Annotated[Principal, Depends(admin_only)]


def permissions_of(dependant: Any) -> set[str]:
    """Every permission declared anywhere in a route's dependency tree.

    A permission's own dependencies are how it is enforced (``admin`` needs a
    signed-in user), not declarations of the route: an admin route is ``{"admin"}``.
    """
    found: set[str] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        kind = getattr(current.call, PERMISSION_ATTRIBUTE, None)
        if kind:
            found.add(kind)
            continue
        stack.extend(current.dependencies)
    return found
