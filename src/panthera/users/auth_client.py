"""The users service's client for the auth service's API (credentials and sign-in)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from panthera.kernel.errors import Conflict, PantheraError, ServiceUnavailable


class AuthClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def put_credentials(
        self,
        user_id: uuid.UUID,
        *,
        email: str,
        password_hash: str,
        roles: list[str],
        email_verified: bool,
    ) -> None:
        """Create (or, retried, confirm) the sign-in credentials of a new account."""
        response = await self._call(
            "PUT",
            f"/internal/credentials/{user_id}",
            json={
                "email": email,
                "passwordHash": password_hash,
                "roles": roles,
                "emailVerified": email_verified,
            },
        )
        if response.status_code == 409:
            raise Conflict("Those credentials belong to another account.")
        self._expect(response, 204)

    async def set_password(self, user_id: uuid.UUID, password_hash: str) -> None:
        """Replace a password; the auth service signs the user out everywhere."""
        response = await self._call(
            "PUT", f"/internal/credentials/{user_id}/password", json={"passwordHash": password_hash}
        )
        self._expect(response, 204)

    async def delete_credentials(self, user_id: uuid.UUID) -> None:
        """Undo ``put_credentials`` when the account could not be stored."""
        response = await self._call("DELETE", f"/internal/credentials/{user_id}")
        if response.status_code != 404:
            self._expect(response, 204)

    async def login(self, body: dict[str, Any], client_address: str) -> httpx.Response:
        """Forward a sign-in to the auth service, keeping the caller's address for throttling."""
        return await self._call(
            "POST", "/login", json=body, headers={"x-client-ip": client_address}
        )

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable("The auth service did not answer.") from exc

    @staticmethod
    def _expect(response: httpx.Response, status: int) -> None:
        if response.status_code != status:
            raise _UnexpectedAnswer(response.status_code)


class _UnexpectedAnswer(PantheraError):
    status = 502
    code = "bad_gateway"
    title = "The auth service gave an unexpected answer"

    def __init__(self, upstream_status: int) -> None:
        super().__init__(f"The auth service answered {upstream_status}.")
