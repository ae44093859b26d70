"""How passwords are stored and which ones are accepted (OWASP ASVS V2.1 / V2.4)."""

from __future__ import annotations

import uuid

import argon2
from argon2.low_level import Type
from sqlalchemy import select, update

from panthera.auth.models import Account
from tests.conftest import PASSWORD, Platform, login, register_and_login, unique_email

REGISTER = "/api/v1/users/register"
LOGIN = "/api/v1/users/login"


async def _stored_hash(platform: Platform, user_id: uuid.UUID) -> str:
    database = platform.app.state.platform.runtimes["auth"].database
    async with database.sessions() as session:
        stored: str | None = await session.scalar(
            select(Account.password_hash).where(Account.user_id == user_id)
        )
    assert stored is not None, "the auth service holds no credentials for this user"
    return stored


async def _store_hash(platform: Platform, user_id: uuid.UUID, password_hash: str) -> None:
    database = platform.app.state.platform.runtimes["auth"].database
    async with database.sessions() as session:
        await session.execute(
            update(Account).where(Account.user_id == user_id).values(password_hash=password_hash)
        )
        await session.commit()


def _register_body(email: str, password: str) -> dict[str, str]:
    return {"email": email, "password": password, "firstName": "Pat", "lastName": "Doe"}


def _assert_refused(response_status: int, content_type: str, code: str) -> None:
    assert response_status == 400
    assert content_type.startswith("application/problem+json")
    assert code in {"invalid_input", "weak_password"}


async def test_hashes_are_argon2id_with_owasp_parameters_and_unique_salts(
    platform: Platform,
) -> None:
    first = await register_and_login(platform.client, password=PASSWORD)
    second = await register_and_login(platform.client, password=PASSWORD)
    hashes = [await _stored_hash(platform, account.id) for account in (first, second)]
    for stored in hashes:
        assert stored.startswith("$argon2id$v=19$"), stored
        assert PASSWORD not in stored
        parameters = argon2.extract_parameters(stored)
        assert parameters.type is Type.ID
        assert parameters.memory_cost >= 19_456
        assert parameters.time_cost >= 2
        assert parameters.parallelism == 1
        assert parameters.salt_len >= 16
        assert parameters.hash_len >= 32
    # $argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>: the same password, different salts.
    salts = [stored.split("$")[4] for stored in hashes]
    assert salts[0] != salts[1]
    assert hashes[0] != hashes[1]


# The shortest allowed, a space at each end; and the longest, 128 characters (code
# points, not bytes) of accents, CJK and an emoji, with spaces at both ends.
BOUNDARY_PASSWORDS = (" 8chars ", "  " + ("ünïcødé 密码 🔐 " * 10)[:122] + "xy  ")


async def test_boundary_passwords_are_kept_exactly_as_typed(platform: Platform) -> None:
    for password in BOUNDARY_PASSWORDS:
        assert len(password) in {8, 128}, len(password)
        email = unique_email()
        registered = await platform.client.post(REGISTER, json=_register_body(email, password))
        assert registered.status_code == 201, registered.text
        await login(platform.client, email, password)
        # Nothing was trimmed or otherwise rewritten: a changed spelling is another password.
        for variant in {password.strip(), password.rstrip(), password.lstrip(), password.upper()}:
            if variant == password:
                continue
            wrong = await platform.client.post(LOGIN, json={"email": email, "password": variant})
            assert wrong.status_code == 401, (variant, wrong.text)


async def test_too_short_or_too_long_passwords_are_refused(platform: Platform) -> None:
    for length in (7, 129):
        password = ("Zq7#kLm2" * 17)[:length]
        email = unique_email()
        response = await platform.client.post(REGISTER, json=_register_body(email, password))
        _assert_refused(
            response.status_code, response.headers["content-type"], response.json().get("code", "")
        )
        # No account came of it.
        no_account = await platform.client.post(LOGIN, json={"email": email, "password": password})
        assert no_account.status_code == 401


async def test_common_passwords_are_refused(platform: Platform) -> None:
    for password in ("password123", "qwertyuiop", "QwertyUiop"):
        email = unique_email()
        response = await platform.client.post(REGISTER, json=_register_body(email, password))
        _assert_refused(
            response.status_code, response.headers["content-type"], response.json().get("code", "")
        )
        assert response.json()["code"] == "weak_password"
        assert "common" in response.json()["problems"]
        no_account = await platform.client.post(LOGIN, json={"email": email, "password": password})
        assert no_account.status_code == 401


async def test_weaker_hash_is_upgraded_at_the_next_successful_login(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    weak = argon2.PasswordHasher(
        time_cost=1, memory_cost=8_192, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
    ).hash(account.password)
    await _store_hash(platform, account.id, weak)

    # A wrong password does not touch the stored hash.
    wrong = await platform.client.post(
        LOGIN, json={"email": account.email, "password": "not the password at all"}
    )
    assert wrong.status_code == 401
    assert await _stored_hash(platform, account.id) == weak

    # The old hash still verifies, and is replaced while we hold the password.
    await login(platform.client, account.email, account.password)
    upgraded = await _stored_hash(platform, account.id)
    assert upgraded != weak
    parameters = argon2.extract_parameters(upgraded)
    assert parameters.type is Type.ID
    assert parameters.memory_cost >= 19_456
    assert parameters.time_cost >= 2
    assert parameters.parallelism == 1
    assert argon2.PasswordHasher().verify(upgraded, account.password)
    # And the upgraded hash keeps working.
    await login(platform.client, account.email, account.password)
