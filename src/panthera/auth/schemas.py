"""Request and response bodies of the auth service."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from panthera.kernel.security.principal import Role


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Strict):
    email: EmailStr
    password: str = Field(min_length=1, max_length=1024)


class AuthTokenResponse(BaseModel):
    accessToken: str
    refreshToken: str
    tokenType: str = Field(default="Bearer", examples=["Bearer"])
    expiresIn: int = Field(description="Lifetime of the access token in seconds", examples=[900])


class RefreshRequest(_Strict):
    refreshToken: str = Field(min_length=1, max_length=512)


class LogoutRequest(_Strict):
    refreshToken: str | None = Field(default=None, max_length=512)


class PasswordChange(_Strict):
    currentPassword: str = Field(min_length=1, max_length=1024)
    newPassword: str = Field(min_length=8, max_length=128)


class OAuthTokenResponse(BaseModel):
    """RFC 6749 §5.1, plus the platform's camelCase names for the same values."""

    access_token: str
    token_type: str = "Bearer"  # noqa: S105
    expires_in: int
    refresh_token: str


class CredentialsPut(_Strict):
    email: EmailStr
    passwordHash: str = Field(min_length=20, max_length=255, pattern=r"^\$argon2(id|i|d)\$")
    roles: list[Role]
    emailVerified: bool


class PasswordHashPut(_Strict):
    passwordHash: str = Field(min_length=20, max_length=255, pattern=r"^\$argon2(id|i|d)\$")


class Jwk(BaseModel):
    kty: str
    crv: str
    x: str
    y: str
    kid: str
    alg: str
    use: str


class Jwks(BaseModel):
    keys: list[Jwk]
