"""OAuth 2.0 authorization code grant with PKCE (S256) for registered clients only."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from panthera.auth import errors, pkce
from panthera.auth.models import Account, AuthorizationCode
from panthera.auth.service import (
    AuthDeps,
    TokenPair,
    now_utc,
    revoke_family,
    sha256,
    start_session,
)


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated ``/authorize`` request."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    state: str | None


def validate_client(
    clients: Mapping[str, Sequence[str]], client_id: str, redirect_uri: str
) -> None:
    """The client must be registered and the redirect URI one of its own, to the byte.

    Failing either, nothing is redirected anywhere: that would make us an open redirector.
    """
    allowed = clients.get(client_id)
    if allowed is None:
        raise errors.UnauthorizedClient("invalid_client", "Unknown client.")
    if redirect_uri not in allowed:
        raise errors.OAuthError(
            "invalid_request", "The redirect_uri is not registered for this client."
        )


def validate_authorization_request(
    clients: Mapping[str, Sequence[str]],
    *,
    response_type: str | None,
    client_id: str | None,
    redirect_uri: str | None,
    code_challenge: str | None,
    code_challenge_method: str | None,
    state: str | None,
) -> AuthorizationRequest:
    """Check everything ``/authorize`` receives; only the code flow with S256 is offered."""
    if not client_id or not redirect_uri:
        raise errors.OAuthError("invalid_request", "client_id and redirect_uri are required.")
    validate_client(clients, client_id, redirect_uri)
    if response_type != "code":
        raise errors.OAuthError(
            "unsupported_response_type",
            "Only the authorization code flow (response_type=code) is offered.",
        )
    if code_challenge_method != "S256":
        raise errors.OAuthError(
            "invalid_request", "PKCE with code_challenge_method=S256 is required."
        )
    if not code_challenge or not pkce.CHALLENGE.match(code_challenge):
        raise errors.OAuthError(
            "invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)."
        )
    if state is not None and len(state) > 500:
        raise errors.OAuthError("invalid_request", "state is too long.")
    return AuthorizationRequest(
        client_id=client_id, redirect_uri=redirect_uri, code_challenge=code_challenge, state=state
    )


async def issue_code(
    deps: AuthDeps, request: AuthorizationRequest, account: Account, *, ttl_seconds: int
) -> str:
    """A single-use code for a signed-in user, bound to the request's challenge."""
    code = secrets.token_urlsafe(32)
    now = now_utc()
    async with deps.uow() as uow:
        uow.session.add(
            AuthorizationCode(
                code_hash=sha256(code),
                client_id=request.client_id,
                redirect_uri=request.redirect_uri,
                user_id=account.user_id,
                code_challenge=request.code_challenge,
                created_at=now,
                expires_at=now + timedelta(seconds=min(ttl_seconds, 60)),
                redeemed_at=None,
                family_id=None,
            )
        )
        await uow.commit()
    return code


async def exchange_code(
    deps: AuthDeps,
    *,
    code: str,
    client_id: str,
    redirect_uri: str,
    code_verifier: str,
) -> TokenPair:
    """Redeem a code for tokens, once.

    A wrong verifier burns the code; a second redemption is refused and revokes
    the tokens the first one gave (RFC 6749 §4.1.2: the code may have leaked).
    """
    async with deps.uow() as uow:
        record = (
            await uow.session.execute(
                select(AuthorizationCode)
                .where(AuthorizationCode.code_hash == sha256(code))
                .with_for_update()
            )
        ).scalar_one_or_none()
        now = now_utc()
        if record is None:
            raise errors.OAuthError("invalid_grant", "Unknown authorization code.")
        if record.redeemed_at is not None:
            if record.family_id is not None:
                await revoke_family(deps, uow.session, record.family_id)
                await uow.commit()
            raise errors.OAuthError("invalid_grant", "The authorization code was already used.")
        record.redeemed_at = now
        refused: str | None = None
        if record.expires_at <= now:
            refused = "The authorization code has expired."
        elif record.client_id != client_id or record.redirect_uri != redirect_uri:
            refused = "The code was issued to another client or redirect_uri."
        elif not pkce.verifier_matches(code_verifier, record.code_challenge):
            refused = "The code_verifier does not match the code_challenge."
        account = None if refused else await uow.session.get(Account, record.user_id)
        if refused or account is None:
            # Committing the redemption burns the code: it cannot be tried again.
            await uow.commit()
            raise errors.OAuthError("invalid_grant", refused or "The account no longer exists.")
        pair = await start_session(
            deps, uow, account, method="authorization_code", client_id=client_id
        )
        record.family_id = pair.family_id
        await uow.commit()
        return pair
