"""The auth service's errors."""

from typing import Any

from panthera.kernel.errors import Conflict, InvalidInput, NotFound, Unauthenticated


class InvalidCredentials(Unauthenticated):
    code = "invalid_credentials"
    title = "Invalid credentials"


class InvalidRefreshToken(Unauthenticated):
    code = "invalid_refresh_token"
    title = "The refresh token is invalid, expired or revoked"


class EmailTaken(Conflict):
    code = "email_taken"
    title = "Those credentials belong to another account"


class AccountNotFound(NotFound):
    code = "account_not_found"
    title = "Account not found"


class OAuthError(InvalidInput):
    """An RFC 6749 error, in the platform's problem shape with the standard ``error`` member."""

    code = "oauth_error"
    title = "OAuth request refused"

    def __init__(self, error: str, description: str, **extra: Any) -> None:
        super().__init__(description, error=error, error_description=description, **extra)
        self.error = error


class UnauthorizedClient(OAuthError):
    status = 401
    code = "invalid_client"
    title = "Unknown OAuth client"
