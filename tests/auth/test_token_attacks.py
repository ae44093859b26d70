"""Forged, tampered and replayed tokens, end to end: the gateway and the service both refuse.

Each forgery starts from the claims of a real access token and is signed with
the auth service's real signing key unless the attack is about the key, so
that exactly one property differs from a token the platform would accept; the
unaltered re-signed token is checked to pass first, so a refusal is due to the
one change.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from panthera.kernel.security.tokens import SigningKey
from tests.conftest import Account, Platform, login, register_and_login

ME = "/api/v1/users/me"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
CHANGE_PASSWORD = "/api/v1/auth/password"
ATTACKER = SigningKey.generate()
ATTACKER_JWKS_URL = "https://attacker.example/.well-known/jwks.json"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64json(value: object) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _signing_key(platform: Platform) -> SigningKey:
    keyring = platform.app.state.platform.apps["auth"].state.auth_deps.keyring
    active: list[SigningKey] = [key for key in keyring._keys if key.active]
    assert len(active) == 1
    return active[0]


class Forge:
    """Makes tokens like the auth service's, with one thing changed."""

    def __init__(self, platform: Platform, account: Account) -> None:
        self.key = _signing_key(platform)
        self.header = jwt.get_unverified_header(account.access_token)
        self.claims: dict[str, Any] = jwt.decode(
            account.access_token, options={"verify_signature": False}
        )
        assert self.header["kid"] == self.key.kid
        assert self.header["alg"] == "ES256"

    def sign(
        self,
        *,
        claims: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
        key: SigningKey | None = None,
    ) -> str:
        now = int(time.time())
        payload = {
            **self.claims,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "iat_ms": now * 1000,
            "jti": uuid.uuid4().hex,
            **(claims or {}),
        }
        headers = {"typ": self.header["typ"], "kid": (key or self.key).kid, **(header or {})}
        return jwt.encode(payload, (key or self.key).private_key, "ES256", headers=headers)

    def unsigned(self, alg: str) -> str:
        header = {**self.header, "alg": alg}
        now = int(time.time())
        payload = {**self.claims, "iat": now, "nbf": now, "exp": now + 600}
        return f"{_b64json(header)}.{_b64json(payload)}."

    def hs256_with_public_key(self) -> str:
        """The classic key-confusion forgery: the public key PEM used as an HMAC secret."""
        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = {**self.header, "alg": "HS256"}
        now = int(time.time())
        payload = {**self.claims, "iat": now, "nbf": now, "exp": now + 600}
        signing_input = f"{_b64json(header)}.{_b64json(payload)}"
        signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"

    def flipped_signature_bit(self, bit: int) -> str:
        head, payload, signature = self.sign().split(".")
        raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
        raw[bit // 8] ^= 1 << (bit % 8)
        return f"{head}.{payload}.{_b64(bytes(raw))}"


@pytest.fixture
async def users_direct(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """The users service itself, bypassing the gateway."""
    app = platform.app.state.platform.apps["users"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://users"
    ) as client:
        yield client


async def _assert_refused_everywhere(
    platform: Platform, users_direct: httpx.AsyncClient, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    at_gateway = await platform.client.get(ME, headers=headers)
    assert at_gateway.status_code == 401, at_gateway.text
    assert at_gateway.headers["content-type"].startswith("application/problem+json")
    assert "www-authenticate" in at_gateway.headers
    # The gateway refused it itself, before forwarding (the service would name "/me").
    assert at_gateway.json()["instance"] == ME
    at_service = await users_direct.get("/me", headers=headers)
    assert at_service.status_code == 401, at_service.text
    assert at_service.headers["content-type"].startswith("application/problem+json")


async def _assert_accepted_everywhere(
    platform: Platform, users_direct: httpx.AsyncClient, token: str, account: Account
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    at_gateway = await platform.client.get(ME, headers=headers)
    assert at_gateway.status_code == 200, at_gateway.text
    assert at_gateway.json()["id"] == str(account.id)
    at_service = await users_direct.get("/me", headers=headers)
    assert at_service.status_code == 200, at_service.text


def _attacker_jwk() -> dict[str, str]:
    return ATTACKER.public_jwk()


FORGERIES: dict[str, Callable[[Forge], str]] = {
    "alg-none": lambda f: f.unsigned("none"),
    "alg-None": lambda f: f.unsigned("None"),
    "hs256-with-public-key-as-secret": lambda f: f.hs256_with_public_key(),
    "unknown-kid": lambda f: f.sign(header={"kid": "no-such-key"}),
    "own-key-unknown-kid": lambda f: f.sign(key=ATTACKER),
    "own-key-under-our-kid": lambda f: f.sign(key=ATTACKER, header={"kid": f.key.kid}),
    "jku-to-attacker-jwks": lambda f: f.sign(key=ATTACKER, header={"jku": ATTACKER_JWKS_URL}),
    "x5u-to-attacker-cert": lambda f: f.sign(
        key=ATTACKER, header={"x5u": "https://attacker.example/cert.pem"}
    ),
    "embedded-attacker-jwk": lambda f: f.sign(key=ATTACKER, header={"jwk": _attacker_jwk()}),
    # Even on a genuinely signed token, these headers alone are refused.
    "genuine-with-jku": lambda f: f.sign(header={"jku": ATTACKER_JWKS_URL}),
    "genuine-with-jwk": lambda f: f.sign(header={"jwk": f.key.public_jwk()}),
    "expired": lambda f: f.sign(
        claims={
            "iat": int(time.time()) - 1200,
            "nbf": int(time.time()) - 1200,
            "exp": int(time.time()) - 300,
        }
    ),
    "not-yet-valid": lambda f: f.sign(claims={"nbf": int(time.time()) + 300}),
    "wrong-issuer": lambda f: f.sign(claims={"iss": "https://evil.example"}),
    "wrong-audience": lambda f: f.sign(claims={"aud": "some-other-api"}),
    "wrong-typ": lambda f: f.sign(header={"typ": "JWT"}),
    "flipped-signature-bit-first": lambda f: f.flipped_signature_bit(0),
    "flipped-signature-bit-middle": lambda f: f.flipped_signature_bit(255),
    "flipped-signature-bit-last": lambda f: f.flipped_signature_bit(511),
}


async def test_forged_access_tokens_are_refused_at_gateway_and_service(
    platform: Platform, users_direct: httpx.AsyncClient
) -> None:
    account = await register_and_login(platform.client)
    forge = Forge(platform, account)
    let_through = []
    for name, make in FORGERIES.items():
        # The baseline: re-signed as-is, the token is good, so the one change is what fails it.
        await _assert_accepted_everywhere(platform, users_direct, forge.sign(), account)
        try:
            await _assert_refused_everywhere(platform, users_direct, make(forge))
        except AssertionError as exc:
            let_through.append(f"{name}: {exc}")
    assert not let_through, "\n".join(let_through)


async def test_refresh_token_is_not_an_access_token(
    platform: Platform, users_direct: httpx.AsyncClient
) -> None:
    account = await register_and_login(platform.client)
    await _assert_refused_everywhere(platform, users_direct, account.refresh_token)
    # The refresh token itself was not spent or harmed by the attempt.
    refreshed = await platform.client.post(REFRESH, json={"refreshToken": account.refresh_token})
    assert refreshed.status_code == 200


async def test_access_token_of_another_platform_key_is_refused(
    platform: Platform, users_direct: httpx.AsyncClient
) -> None:
    """A token signed by an unrelated ES256 key that happens to be on the right curve."""
    account = await register_and_login(platform.client)
    forge = Forge(platform, account)
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(
        {**forge.claims, "jti": uuid.uuid4().hex},
        stranger,
        "ES256",
        headers={"kid": forge.key.kid, "typ": forge.header["typ"]},
    )
    await _assert_refused_everywhere(platform, users_direct, token)


async def _refresh(platform: Platform, token: str) -> httpx.Response:
    return await platform.client.post(REFRESH, json={"refreshToken": token})


async def test_replayed_refresh_token_revokes_its_whole_family(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    elsewhere = await login(platform.client, account.email, account.password)

    first = await _refresh(platform, account.refresh_token)
    assert first.status_code == 200
    newest = first.json()["refreshToken"]
    newest_access = {"Authorization": f"Bearer {first.json()['accessToken']}"}
    assert (await platform.client.get(ME, headers=newest_access)).status_code == 200
    # The rotated token is presented again: a thief or the owner, we cannot tell which.
    replay = await _refresh(platform, account.refresh_token)
    assert replay.status_code == 401
    assert replay.json()["code"] == "invalid_refresh_token"
    # So the whole family ends, including the newest token the legitimate holder has,
    # and the access tokens issued to that sign-in.
    assert (await _refresh(platform, newest)).status_code == 401
    assert (await _refresh(platform, account.refresh_token)).status_code == 401
    assert (await platform.client.get(ME, headers=newest_access)).status_code == 401
    # Only that family: the user's other sign-in carries on.
    elsewhere_access = {"Authorization": f"Bearer {elsewhere['accessToken']}"}
    assert (await platform.client.get(ME, headers=elsewhere_access)).status_code == 200
    assert (await _refresh(platform, elsewhere["refreshToken"])).status_code == 200


async def test_logout_revokes_refresh_family_and_access_token(
    platform: Platform, users_direct: httpx.AsyncClient
) -> None:
    account = await register_and_login(platform.client)
    rotated = await _refresh(platform, account.refresh_token)
    assert rotated.status_code == 200
    access, refresh = rotated.json()["accessToken"], rotated.json()["refreshToken"]
    other = await login(platform.client, account.email, account.password)
    assert (await platform.client.get(ME, headers={"Authorization": f"Bearer {access}"})).is_success

    out = await platform.client.post(
        LOGOUT, json={"refreshToken": refresh}, headers={"Authorization": f"Bearer {access}"}
    )
    assert out.status_code == 204

    await _assert_refused_everywhere(platform, users_direct, access)
    assert (await _refresh(platform, refresh)).status_code == 401
    # The family's earlier (rotated) token does not come back to life either.
    assert (await _refresh(platform, account.refresh_token)).status_code == 401
    # Signing out here leaves the user's other sign-in alone.
    other_me = await platform.client.get(
        ME, headers={"Authorization": f"Bearer {other['accessToken']}"}
    )
    assert other_me.status_code == 200
    assert (await _refresh(platform, other["refreshToken"])).status_code == 200


async def test_logout_cannot_end_someone_elses_session(platform: Platform) -> None:
    victim = await register_and_login(platform.client)
    attacker = await register_and_login(platform.client)
    # The attacker signs out with the victim's refresh token but their own access token.
    out = await platform.client.post(
        LOGOUT, json={"refreshToken": victim.refresh_token}, headers=attacker.headers
    )
    assert out.status_code == 204
    assert (await _refresh(platform, victim.refresh_token)).status_code == 200


async def test_password_change_revokes_every_existing_token(
    platform: Platform, users_direct: httpx.AsyncClient
) -> None:
    account = await register_and_login(platform.client)
    other = await login(platform.client, account.email, account.password)
    new_password = "an entirely different passphrase"

    wrong = await platform.client.post(
        CHANGE_PASSWORD,
        json={"currentPassword": "not my password", "newPassword": new_password},
        headers=account.headers,
    )
    assert wrong.status_code == 401
    # A failed attempt changes nothing.
    assert (await platform.client.get(ME, headers=account.headers)).status_code == 200

    changed = await platform.client.post(
        CHANGE_PASSWORD,
        json={"currentPassword": account.password, "newPassword": new_password},
        headers=account.headers,
    )
    assert changed.status_code == 204, changed.text

    for access in (account.access_token, other["accessToken"]):
        await _assert_refused_everywhere(platform, users_direct, access)
    for refresh in (account.refresh_token, other["refreshToken"]):
        assert (await _refresh(platform, refresh)).status_code == 401
    old = await platform.client.post(
        "/api/v1/users/login", json={"email": account.email, "password": account.password}
    )
    assert old.status_code == 401
    fresh = await login(platform.client, account.email, new_password)
    me = await platform.client.get(ME, headers={"Authorization": f"Bearer {fresh['accessToken']}"})
    assert me.status_code == 200
