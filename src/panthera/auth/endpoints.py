"""Routes of the auth service: sign-in, tokens, JWKS, OAuth 2.0 with PKCE, and credentials."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from panthera.auth import oauth, service
from panthera.auth.deps import Auth
from panthera.auth.errors import InvalidCredentials, OAuthError
from panthera.auth.schemas import (
    AuthTokenResponse,
    CredentialsPut,
    Jwks,
    LoginRequest,
    LogoutRequest,
    OAuthTokenResponse,
    PasswordChange,
    PasswordHashPut,
    RefreshRequest,
)
from panthera.kernel.errors import PantheraError, Unauthenticated
from panthera.kernel.http.app import request_client_address
from panthera.kernel.security.permissions import CurrentPrincipal, internal_only, public
from panthera.kernel.settings import Settings

router = APIRouter()
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
Responses = dict[int | str, dict[str, Any]]
_invalid: Responses = {400: {"description": "Invalid input"}}
_unauthorized: Responses = {401: {"description": "Invalid credentials or token"}}
_throttled: Responses = {429: {"description": "Too many failed sign-ins"}}
_LOGIN_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
)
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _token_body(pair: service.TokenPair) -> AuthTokenResponse:
    return AuthTokenResponse(
        accessToken=pair.access_token,
        refreshToken=pair.refresh_token,
        tokenType="Bearer",
        expiresIn=pair.expires_in,
    )


@router.post(
    "/login",
    response_model=AuthTokenResponse,
    tags=["Authentication"],
    summary="Sign in with email and password",
    dependencies=[Depends(public)],
    responses={**_invalid, **_unauthorized, **_throttled},
)
async def login(
    body: LoginRequest, request: Request, auth: Auth, response: Response
) -> AuthTokenResponse:
    """A token pair for a correct email and password."""
    pair = await service.login(auth, body.email, body.password, request_client_address(request))
    response.headers.update(_NO_STORE)
    return _token_body(pair)


@router.post(
    "/refresh",
    response_model=AuthTokenResponse,
    tags=["Authentication"],
    summary="Rotate a refresh token",
    dependencies=[Depends(public)],
    responses={**_invalid, **_unauthorized},
)
async def refresh(body: RefreshRequest, auth: Auth, response: Response) -> AuthTokenResponse:
    """A new token pair; the refresh token presented stops working."""
    pair = await service.refresh(auth, body.refreshToken)
    response.headers.update(_NO_STORE)
    return _token_body(pair)


@router.post(
    "/logout",
    status_code=204,
    tags=["Authentication"],
    summary="Sign out",
    dependencies=[Depends(public)],
    responses={204: {"description": "Signed out"}, **_invalid},
)
async def logout(request: Request, auth: Auth, body: LogoutRequest | None = None) -> Response:
    """End this sign-in: the refresh token's family and the bearer access token, if sent."""
    principal = None
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        try:
            principal = await request.app.state.authenticator.authenticate(header[7:].strip())
        except Unauthenticated:
            principal = None
    await service.logout(auth, body.refreshToken if body else None, principal)
    return Response(status_code=204)


@router.post(
    "/password",
    status_code=204,
    tags=["Authentication"],
    summary="Change the signed-in user's password",
    responses={
        204: {"description": "Password changed; every session ended"},
        **_invalid,
        **_unauthorized,
        **_throttled,
    },
)
async def change_password(
    body: PasswordChange, request: Request, auth: Auth, principal: CurrentPrincipal
) -> Response:
    """Change the password knowing the current one; every session of the account ends."""
    await service.change_password(
        auth,
        principal,
        body.currentPassword,
        body.newPassword,
        request_client_address(request),
    )
    return Response(status_code=204)


@router.get(
    "/.well-known/jwks.json",
    response_model=Jwks,
    tags=["Keys"],
    summary="The public keys that verify access tokens",
    dependencies=[Depends(public)],
)
async def jwks(auth: Auth, response: Response) -> dict[str, Any]:
    """The JWKS: the signing key and the retired keys whose tokens may still be alive."""
    response.headers["Cache-Control"] = "public, max-age=300"
    return auth.keyring.jwks()


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _form_page(
    action: str,
    hidden: dict[str, str],
    *,
    error: str | None = None,
    email: str = "",
    status: int = 200,
) -> HTMLResponse:
    html = _templates.get_template("authorize.html").render(
        action=action, hidden=hidden, error=error, email=email
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            **_NO_STORE,
            "Content-Security-Policy": _LOGIN_PAGE_CSP,
        },
    )


@router.get(
    "/authorize",
    response_class=HTMLResponse,
    tags=["OAuth 2.0"],
    summary="Start the authorization code flow (PKCE S256)",
    dependencies=[Depends(public)],
    responses={**_invalid, 401: {"description": "Unknown client"}},
)
async def authorize_page(
    request: Request,
    response_type: Annotated[str | None, Query(max_length=50)] = None,
    client_id: Annotated[str | None, Query(max_length=100)] = None,
    redirect_uri: Annotated[str | None, Query(max_length=2000)] = None,
    code_challenge: Annotated[str | None, Query(max_length=128)] = None,
    code_challenge_method: Annotated[str | None, Query(max_length=10)] = None,
    state: Annotated[str | None, Query(max_length=500)] = None,
) -> HTMLResponse:
    """The sign-in page of the authorization server."""
    oauth.validate_authorization_request(
        _settings(request).oauth_clients,
        response_type=response_type,
        client_id=client_id,
        redirect_uri=redirect_uri,
        code_challenge=code_challenge,
        code_challenge_method=code_challenge_method,
        state=state,
    )
    hidden = {
        "response_type": "code",
        "client_id": client_id or "",
        "redirect_uri": redirect_uri or "",
        "code_challenge": code_challenge or "",
        "code_challenge_method": "S256",
    }
    if state is not None:
        hidden["state"] = state
    action = request.headers.get("x-forwarded-prefix", "") + "/authorize"
    return _form_page(action, hidden)


@router.post(
    "/authorize",
    tags=["OAuth 2.0"],
    summary="Sign in and be redirected back with an authorization code",
    dependencies=[Depends(public)],
    status_code=302,
    response_class=RedirectResponse,
    responses={
        302: {"description": "Back to the client with a code"},
        **_invalid,
        401: {
            "description": "Unknown client (problem details), or a wrong email or password: "
            "the sign-in page again, as HTML",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        **_throttled,
    },
)
async def authorize(
    request: Request,
    auth: Auth,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    client_id: Annotated[str, Form(max_length=100)],
    redirect_uri: Annotated[str, Form(max_length=2000)],
    code_challenge: Annotated[str, Form(max_length=128)],
    code_challenge_method: Annotated[str | None, Form(max_length=10)] = None,
    response_type: Annotated[str | None, Form(max_length=50)] = None,
    state: Annotated[str | None, Form(max_length=500)] = None,
) -> Response:
    """Check the credentials and send the browser back to the client with a code."""
    settings = _settings(request)
    authorization = oauth.validate_authorization_request(
        settings.oauth_clients,
        response_type=response_type,
        client_id=client_id,
        redirect_uri=redirect_uri,
        code_challenge=code_challenge,
        code_challenge_method=code_challenge_method,
        state=state,
    )
    try:
        account = await service.authenticate_password(
            auth, email, password, request_client_address(request)
        )
    except InvalidCredentials:
        hidden = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            **({"state": state} if state is not None else {}),
        }
        action = request.headers.get("x-forwarded-prefix", "") + "/authorize"
        return _form_page(action, hidden, error="Wrong email or password.", email=email, status=401)
    code = await oauth.issue_code(
        auth, authorization, account, ttl_seconds=settings.authorization_code_ttl_seconds
    )
    params = {"code": code, **({"state": state} if state is not None else {})}
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(
        f"{redirect_uri}{separator}{urlencode(params)}", status_code=302, headers=_NO_STORE
    )


@router.post(
    "/token",
    response_model=OAuthTokenResponse,
    tags=["OAuth 2.0"],
    summary="Exchange an authorization code or a refresh token for tokens",
    dependencies=[Depends(public)],
    responses={**_invalid, **_unauthorized},
)
async def token(
    request: Request,
    auth: Auth,
    response: Response,
    grant_type: Annotated[str, Form(max_length=50)],
    client_id: Annotated[str, Form(max_length=100)],
    code: Annotated[str | None, Form(max_length=256)] = None,
    redirect_uri: Annotated[str | None, Form(max_length=2000)] = None,
    code_verifier: Annotated[str | None, Form(max_length=128)] = None,
    refresh_token: Annotated[str | None, Form(max_length=512)] = None,
) -> OAuthTokenResponse:
    """The token endpoint: ``authorization_code`` (with PKCE) and ``refresh_token`` grants only."""
    clients = _settings(request).oauth_clients
    if client_id not in clients:
        raise OAuthError("invalid_client", "Unknown client.")
    if grant_type == "authorization_code":
        if not code or not redirect_uri or not code_verifier:
            raise OAuthError(
                "invalid_request", "code, redirect_uri and code_verifier are required."
            )
        pair = await oauth.exchange_code(
            auth,
            code=code,
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
        )
    elif grant_type == "refresh_token":
        if not refresh_token:
            raise OAuthError("invalid_request", "refresh_token is required.")
        try:
            pair = await service.refresh(auth, refresh_token, client_id=client_id)
        except PantheraError as exc:
            raise OAuthError("invalid_grant", "The refresh token is invalid.") from exc
    else:
        raise OAuthError(
            "unsupported_grant_type", "Only authorization_code and refresh_token are supported."
        )
    response.headers.update(_NO_STORE)
    return OAuthTokenResponse(
        access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token
    )


@router.put(
    "/internal/credentials/{user_id}",
    status_code=204,
    include_in_schema=False,
    dependencies=[Depends(internal_only)],
)
async def put_credentials(user_id: uuid.UUID, body: CredentialsPut, auth: Auth) -> Response:
    await service.put_credentials(
        auth,
        user_id,
        email=body.email,
        password_hash=body.passwordHash,
        roles=[role.value for role in body.roles],
        email_verified=body.emailVerified,
    )
    return Response(status_code=204)


@router.put(
    "/internal/credentials/{user_id}/password",
    status_code=204,
    include_in_schema=False,
    dependencies=[Depends(internal_only)],
)
async def put_password(user_id: uuid.UUID, body: PasswordHashPut, auth: Auth) -> Response:
    await service.set_password(auth, user_id, body.passwordHash)
    return Response(status_code=204)


@router.delete(
    "/internal/credentials/{user_id}",
    status_code=204,
    include_in_schema=False,
    dependencies=[Depends(internal_only)],
)
async def delete_credentials(user_id: uuid.UUID, auth: Auth) -> Response:
    await service.delete_credentials(auth, user_id)
    return Response(status_code=204)
