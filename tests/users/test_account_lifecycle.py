"""Register, verify, sign in, refresh, edit and delete, through the gateway."""

from __future__ import annotations

import email
import email.policy
import re
import uuid

from tests.conftest import PASSWORD, Platform, login, make_admin, register_and_login, unique_email


def _token_from_mail(platform: Platform, address: str, path: str) -> str:
    for message_file in sorted(platform.outbox_dir.glob("*.eml")):
        message = email.message_from_bytes(message_file.read_bytes(), policy=email.policy.default)
        if message["To"] == address:
            body = message.get_body(preferencelist=("plain",))
            match = re.search(re.escape(path) + r"\?token=([\w-]+)", body.get_content())
            if match:
                return match.group(1)
    raise AssertionError(f"no mail to {address} with a {path} link")


async def test_register_answers_the_seed_contract(platform: Platform) -> None:
    address = unique_email()
    response = await platform.client.post(
        "/api/v1/users/register",
        json={
            "email": address,
            "password": PASSWORD,
            "firstName": "John",
            "lastName": "Doe",
            "phoneNumber": "+15551234567",
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == address
    assert body["firstName"] == "John"
    assert body["lastName"] == "Doe"
    assert body["phoneNumber"] == "+15551234567"
    assert body["roles"] == ["USER"]
    assert body["emailVerified"] is False
    assert body["createdAt"].endswith("Z") or body["createdAt"].endswith("+00:00")
    uuid.UUID(body["id"])


async def test_verification_mail_confirms_the_address(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    await platform.settle()
    token = _token_from_mail(platform, account.email, "/account/verify-email")
    response = await platform.client.post("/api/v1/users/verify-email", json={"token": token})
    assert response.status_code == 204
    me = await platform.client.get("/api/v1/users/me", headers=account.headers)
    assert me.json()["emailVerified"] is True
    again = await platform.client.post("/api/v1/users/verify-email", json={"token": token})
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_token"


async def test_refresh_rotates_and_profile_edits(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    refreshed = await platform.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": account.refresh_token}
    )
    assert refreshed.status_code == 200
    pair = refreshed.json()
    assert pair["refreshToken"] != account.refresh_token
    headers = {"Authorization": f"Bearer {pair['accessToken']}"}
    update = await platform.client.put(
        f"/api/v1/users/profiles/{account.id}",
        json={"firstName": "Jane", "phoneNumber": "+15559876543"},
        headers=headers,
    )
    assert update.status_code == 200, update.text
    assert update.json()["firstName"] == "Jane"
    assert update.json()["lastName"] == "User"
    read = await platform.client.get(f"/api/v1/users/{account.id}", headers=headers)
    assert read.json()["phoneNumber"] == "+15559876543"


async def test_admin_lists_reads_and_deletes(platform: Platform) -> None:
    admin = await make_admin(platform)
    user = await register_and_login(platform.client)
    listing = await platform.client.get(
        "/api/v1/users/profiles", params={"limit": 1}, headers=admin.headers
    )
    assert listing.status_code == 200
    assert int(listing.headers["X-Total-Count"]) == 2
    assert 'rel="next"' in listing.headers["Link"]
    assert listing.headers["Link"].startswith("</api/v1/users/profiles?")
    read = await platform.client.get(f"/api/v1/users/profiles/{user.id}", headers=admin.headers)
    assert read.status_code == 200
    deleted = await platform.client.delete(
        f"/api/v1/users/profiles/{user.id}", headers=admin.headers
    )
    assert deleted.status_code == 204
    await platform.settle()
    gone = await platform.client.get(f"/api/v1/users/profiles/{user.id}", headers=admin.headers)
    assert gone.status_code == 404
    # The deleted user's sessions end with the account.
    me = await platform.client.get("/api/v1/users/me", headers=user.headers)
    assert me.status_code == 401
    relogin = await platform.client.post(
        "/api/v1/users/login", json={"email": user.email, "password": user.password}
    )
    assert relogin.status_code == 401


async def test_password_reset_by_mail(platform: Platform) -> None:
    account = await register_and_login(platform.client)
    asked = await platform.client.post(
        "/api/v1/users/password-reset", json={"email": account.email}
    )
    assert asked.status_code == 202
    await platform.settle()
    token = _token_from_mail(platform, account.email, "/account/reset-password")
    new_password = "a brand new passphrase"
    done = await platform.client.post(
        "/api/v1/users/password-reset/confirm", json={"token": token, "newPassword": new_password}
    )
    assert done.status_code == 204
    old = await platform.client.post(
        "/api/v1/users/login", json={"email": account.email, "password": account.password}
    )
    assert old.status_code == 401
    await login(platform.client, account.email, new_password)
    # The reset ended the sessions that existed before it.
    me = await platform.client.get("/api/v1/users/me", headers=account.headers)
    assert me.status_code == 401
