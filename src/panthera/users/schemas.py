"""Request and response bodies of the User Service API (the seed's OpenAPI, field for field)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from panthera.kernel.security.principal import Role

E164 = r"^\+[1-9]\d{1,14}$"
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Phone = Annotated[str, Field(pattern=E164, examples=["+15551234567"])]
# Passwords are taken exactly as typed: no stripping, 8 to 128 characters.
Password = Annotated[
    str,
    Field(
        min_length=8,
        max_length=128,
        examples=["SecureP@ssw0rd!"],
        json_schema_extra={"format": "password"},
    ),
]


class _Strict(BaseModel):
    # Unknown fields are refused (400), so nobody can slip in roles or ids.
    model_config = ConfigDict(extra="forbid")


class UserRegistrationRequest(_Strict):
    email: EmailStr = Field(examples=["user@example.com"])
    password: Password
    firstName: Name = Field(examples=["John"])
    lastName: Name = Field(examples=["Doe"])
    phoneNumber: Phone | None = None


class UserLoginRequest(_Strict):
    email: EmailStr = Field(examples=["user@example.com"])
    password: str = Field(
        min_length=1,
        max_length=1024,
        examples=["SecureP@ssw0rd!"],
        json_schema_extra={"format": "password"},
    )


class UserUpdateRequest(_Strict):
    firstName: Name | None = Field(default=None, examples=["Jane"])
    lastName: Name | None = Field(default=None, examples=["Doe"])
    phoneNumber: Phone | None = Field(default=None, examples=["+15559876543"])


class UserResponse(BaseModel):
    id: uuid.UUID = Field(examples=["d290f1ee-6c54-4b01-90e6-d701748f0851"])
    email: EmailStr
    firstName: str
    lastName: str
    phoneNumber: str | None
    roles: list[Role]
    emailVerified: bool
    createdAt: datetime
    updatedAt: datetime


class AuthTokenResponse(BaseModel):
    accessToken: str
    refreshToken: str
    tokenType: str = Field(examples=["Bearer"])
    expiresIn: int = Field(description="Lifetime of the access token in seconds", examples=[900])


class RoleAssignment(_Strict):
    roles: list[Role] = Field(min_length=1, max_length=3)


class EmailVerification(_Strict):
    token: str = Field(min_length=16, max_length=256)


class PasswordResetRequest(_Strict):
    email: EmailStr


class PasswordResetConfirmation(_Strict):
    token: str = Field(min_length=16, max_length=256)
    newPassword: Password


class Accepted(BaseModel):
    message: str
