"""The users service's client for the auth service's API (credentials and sign-in)."""

from __future__ import annotations

import uuid
from typing import Any

from panthera.kernel.errors import Conflict, PantheraError, ServiceUnavailable
from panthera.kernel.http.client import Answer, CallFailed, ServiceCaller


class AuthClient:
    def __init__(self, caller: ServiceCaller) -> None:
        self._caller = caller

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
        answer = await self._call(
            "PUT",
            f"/internal/credentials/{user_id}",
            json={
                "email": email,
                "passwordHash": password_hash,
                "roles": roles,
                "emailVerified": email_verified,
            },
        )
        if answer.status == 409:
            raise Conflict("Those credentials belong to another account.")
        self._expect(answer, 204)

    async def set_password(self, user_id: uuid.UUID, password_hash: str) -> None:
        """Replace a password; the auth service signs the user out everywhere."""
        answer = await self._call(
            "PUT", f"/internal/credentials/{user_id}/password", json={"passwordHash": password_hash}
        )
        self._expect(answer, 204)

    async def delete_credentials(self, user_id: uuid.UUID) -> None:
        """Undo ``put_credentials`` when the account could not be stored."""
        answer = await self._call("DELETE", f"/internal/credentials/{user_id}")
        if answer.status != 404:
            self._expect(answer, 204)

    async def login(self, body: dict[str, Any], client_address: str) -> Answer:
        """Forward a sign-in to the auth service, keeping the caller's address for throttling."""
        return await self._call(
            "POST", "/login", json=body, headers={"x-client-ip": client_address}
        )

    async def _call(self, method: str, path: str, **kwargs: Any) -> Answer:
        try:
            return await self._caller.request(method, path, **kwargs)
        except CallFailed as exc:
            raise ServiceUnavailable("The auth service did not answer.") from exc

    @staticmethod
    def _expect(answer: Answer, status: int) -> None:
        if answer.status != status:
            raise _UnexpectedAnswer(answer.status)


class _UnexpectedAnswer(PantheraError):
    status = 502
    code = "bad_gateway"
    title = "The auth service gave an unexpected answer"

    def __init__(self, upstream_status: int) -> None:
        super().__init__(f"The auth service answered {upstream_status}.")
