"""OAuth 2.0 authorization code flow with PKCE (RFC 6749, RFC 7636, OAuth 2.0 Security BCP)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from panthera.auth.models import AuthorizationCode
from panthera.kernel.settings import Settings
from tests.conftest import Account, Platform, register_and_login, start_platform

AUTHORIZE = "/api/v1/auth/authorize"
TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/users/me"
CLIENT = "panthera-web"
REDIRECT = "http://127.0.0.1:8000/auth/callback"


def _verifier() -> str:
    return secrets.token_urlsafe(48)


def _challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def _query(verifier: str, **changes: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
        "state": "opaque-state-123",
    }
    params.update(changes)
    return {key: value for key, value in params.items() if value is not None}


async def _authorize(
    platform: Platform, account: Account, verifier: str, **changes: str | None
) -> httpx.Response:
    form = {**_query(verifier, **changes), "email": account.email, "password": account.password}
    return await platform.client.post(AUTHORIZE, data=form)


async def _code(platform: Platform, account: Account, verifier: str) -> str:
    page = await platform.client.get(AUTHORIZE, params=_query(verifier))
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    redirect = await _authorize(platform, account, verifier)
    assert redirect.status_code == 302, redirect.text
    location = urlsplit(redirect.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    params = parse_qs(location.query)
    assert params["state"] == ["opaque-state-123"]
    return params["code"][0]


async def _exchange(platform: Platform, code: str, verifier: str, **changes: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "client_id": CLIENT,
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        **changes,
    }
    return await platform.client.post(TOKEN, data=form)


def _assert_refused(response: httpx.Response, error: str | None = None, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert "location" not in response.headers, "an error must not redirect anywhere"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "access_token" not in response.text
    if error is not None:
        assert response.json()["error"] == error


async def _code_row(platform: Platform, code: str) -> AuthorizationCode:
    database = platform.app.state.platform.runtimes["auth"].database
    async with database.sessions() as session:
        row: AuthorizationCode | None = await session.scalar(
            select(AuthorizationCode).where(
                AuthorizationCode.code_hash == hashlib.sha256(code.encode()).hexdigest()
            )
        )
    assert row is not None
    return row


async def test_code_flow_with_s256_gives_working_tokens(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    verifier = _verifier()
    code = await _code(platform, account, verifier)
    # Only a hash of the code is stored.
    assert (await _code_row(platform, code)).code_hash != code

    exchanged = await _exchange(platform, code, verifier)
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.headers["cache-control"] == "no-store"
    tokens = exchanged.json()
    assert tokens["token_type"] == "Bearer"
    me = await platform.client.get(
        ME, headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["id"] == str(account.id)

    refreshed = await platform.client.post(
        TOKEN,
        data={
            "grant_type": "refresh_token",
            "client_id": CLIENT,
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]


async def test_only_s256_is_accepted(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    for method in ("plain", None, "", "s256", "S512", "S256 "):
        verifier = _verifier()
        changes: dict[str, str | None] = {"code_challenge_method": method}
        if method == "plain":
            # A plain challenge is the verifier itself.
            changes["code_challenge"] = verifier[:43]
        page = await platform.client.get(AUTHORIZE, params=_query(verifier, **changes))
        _assert_refused(page, "invalid_request")
        posted = await _authorize(platform, account, verifier, **changes)
        _assert_refused(posted, "invalid_request")


async def test_missing_code_challenge_is_refused(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    verifier = _verifier()
    page = await platform.client.get(AUTHORIZE, params=_query(verifier, code_challenge=None))
    _assert_refused(page, "invalid_request")
    response = await _authorize(platform, account, verifier, code_challenge="")
    assert response.status_code == 400
    assert "location" not in response.headers


async def test_wrong_verifier_fails_and_burns_the_code(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    verifier = _verifier()
    code = await _code(platform, account, verifier)
    _assert_refused(await _exchange(platform, code, _verifier()), "invalid_grant")
    # The right verifier is too late: one guess per code.
    _assert_refused(await _exchange(platform, code, verifier), "invalid_grant")


async def test_verifier_that_is_the_challenge_itself_fails(platform: Platform) -> None:
    """A stolen code plus the challenge seen in the front channel is not enough."""
    account = await register_and_login(platform.client)
    verifier = _verifier()
    code = await _code(platform, account, verifier)
    _assert_refused(await _exchange(platform, code, _challenge(verifier)), "invalid_grant")


async def test_replayed_code_is_refused_and_revokes_the_first_tokens(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    verifier = _verifier()
    code = await _code(platform, account, verifier)
    first = await _exchange(platform, code, verifier)
    assert first.status_code == 200
    refresh_token = first.json()["refresh_token"]
    access = {"Authorization": f"Bearer {first.json()['access_token']}"}
    assert (await platform.client.get("/api/v1/users/me", headers=access)).status_code == 200

    _assert_refused(await _exchange(platform, code, verifier), "invalid_grant")
    # The access token the first redemption gave stops working at once.
    assert (await platform.client.get("/api/v1/users/me", headers=access)).status_code == 401

    # The code may have leaked, so what it gave is revoked, on both refresh routes.
    by_grant = await platform.client.post(
        TOKEN,
        data={"grant_type": "refresh_token", "client_id": CLIENT, "refresh_token": refresh_token},
    )
    _assert_refused(by_grant, "invalid_grant")
    by_api = await platform.client.post(REFRESH, json={"refreshToken": refresh_token})
    assert by_api.status_code == 401
    # The user's own password sign-in is a different session and lives on.
    again = await platform.client.post(REFRESH, json={"refreshToken": account.refresh_token})
    assert again.status_code == 200


@pytest.fixture
async def long_code_ttl(settings_factory: Callable[..., Settings]) -> AsyncIterator[Platform]:
    """Configured to keep codes an hour: the platform must cap them at 60 s anyway."""
    settings = settings_factory(authorization_code_ttl_seconds=3600)
    app, client = await start_platform(settings)
    try:
        yield Platform(app=app, client=client, settings=settings)
    finally:
        await client.aclose()
        await app.state.platform.stop()


async def test_codes_expire_within_a_minute(long_code_ttl: Platform) -> None:
    platform = long_code_ttl
    account = await register_and_login(platform.client)
    verifier = _verifier()
    code = await _code(platform, account, verifier)
    row = await _code_row(platform, code)
    lifetime = row.expires_at - row.created_at
    assert timedelta(0) < lifetime <= timedelta(seconds=60)

    # Time passes: the code is 61 s old.
    database = platform.app.state.platform.runtimes["auth"].database
    async with database.sessions() as session:
        await session.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.code_hash == row.code_hash)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    _assert_refused(await _exchange(platform, code, verifier), "invalid_grant")


async def test_redirect_uri_must_match_exactly(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    for redirect_uri in (
        REDIRECT + "/",
        "http://127.0.0.1:8001/auth/callback",
        REDIRECT + "?next=https://evil.example",
        REDIRECT + "#fragment",
        "https://127.0.0.1:8000/auth/callback",
        "http://127.0.0.1:8000/auth/callback/../../evil",
        "http://127.0.0.1:8000/AUTH/callback",
        "http://127.0.0.1:8000.evil.example/auth/callback",
        "http://evil.example/auth/callback",
        "",
    ):
        verifier = _verifier()
        params = _query(verifier, redirect_uri=redirect_uri)
        _assert_refused(await platform.client.get(AUTHORIZE, params=params))
        # Not even correct credentials make the server redirect there.
        posted = await _authorize(platform, account, verifier, redirect_uri=redirect_uri)
        assert posted.status_code == 400, (redirect_uri, posted.text)
        assert "location" not in posted.headers


async def test_code_is_bound_to_its_redirect_uri(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    verifier = _verifier()
    code = await _code(platform, account, verifier)
    # The other registered redirect of the same client is still another redirect.
    other = "http://localhost:8000/auth/callback"
    assert other in platform.settings.oauth_clients[CLIENT]
    _assert_refused(await _exchange(platform, code, verifier, redirect_uri=other), "invalid_grant")
    _assert_refused(await _exchange(platform, code, verifier), "invalid_grant")


async def test_unknown_client_is_refused(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    verifier = _verifier()
    page = await platform.client.get(AUTHORIZE, params=_query(verifier, client_id="evil-app"))
    _assert_refused(page, "invalid_client", status=401)
    posted = await _authorize(platform, account, verifier, client_id="evil-app")
    _assert_refused(posted, "invalid_client", status=401)

    code = await _code(platform, account, verifier)
    _assert_refused(
        await _exchange(platform, code, verifier, client_id="evil-app"), "invalid_client"
    )


async def test_implicit_and_hybrid_flows_are_refused(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    for response_type in ("token", "id_token", "code token", "CODE", None):
        verifier = _verifier()
        params = _query(verifier, response_type=response_type)
        page = await platform.client.get(AUTHORIZE, params=params)
        _assert_refused(page, "unsupported_response_type")
        posted = await _authorize(platform, account, verifier, response_type=response_type)
        _assert_refused(posted, "unsupported_response_type")


async def test_other_grants_are_refused(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    for grant_type in (
        "password",
        "client_credentials",
        "implicit",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ):
        form: dict[str, Any] = {
            "grant_type": grant_type,
            "client_id": CLIENT,
            "username": account.email,
            "password": account.password,
            "scope": "openid",
        }
        response = await platform.client.post(TOKEN, data=form)
        _assert_refused(response, "unsupported_grant_type")
