"""Routes of the User Service API: the seed's contract plus account upkeep."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from panthera.kernel.http.app import request_client_address
from panthera.kernel.http.paging import total_count_headers
from panthera.kernel.security.permissions import (
    AdminPrincipal,
    CurrentPrincipal,
    public,
)
from panthera.kernel.security.principal import Role
from panthera.users import service
from panthera.users.deps import Users
from panthera.users.models import User
from panthera.users.schemas import (
    Accepted,
    AuthTokenResponse,
    EmailVerification,
    PasswordResetConfirmation,
    PasswordResetRequest,
    RoleAssignment,
    UserLoginRequest,
    UserRegistrationRequest,
    UserResponse,
    UserUpdateRequest,
)

router = APIRouter()

Responses = dict[int | str, dict[str, Any]]
_invalid: Responses = {400: {"description": "Invalid input"}}
_unauthorized: Responses = {401: {"description": "Unauthorized"}}
_forbidden: Responses = {403: {"description": "Forbidden (insufficient permissions)"}}
_not_found: Responses = {404: {"description": "User not found"}}


def to_response(user: User) -> UserResponse:
    return UserResponse(
        id=user.id,
        email=user.email,
        firstName=user.first_name,
        lastName=user.last_name,
        phoneNumber=user.phone_number,
        roles=[Role(role) for role in user.roles],
        emailVerified=user.email_verified,
        createdAt=user.created_at,
        updatedAt=user.updated_at,
    )


_FIELD_NAMES = {"firstName": "first_name", "lastName": "last_name", "phoneNumber": "phone_number"}


@router.post(
    "/register",
    status_code=201,
    response_model=UserResponse,
    tags=["Authentication"],
    summary="Register a new user",
    dependencies=[Depends(public)],
    responses={
        201: {"description": "User successfully registered"},
        **_invalid,
        409: {"description": "User with email already exists"},
    },
)
async def register(body: UserRegistrationRequest, users: Users) -> UserResponse:
    """Create an account and mail a verification link."""
    user = await service.register(
        users,
        email=body.email,
        password=body.password,
        first_name=body.firstName,
        last_name=body.lastName,
        phone_number=body.phoneNumber,
    )
    return to_response(user)


@router.post(
    "/login",
    response_model=AuthTokenResponse,
    tags=["Authentication"],
    summary="Authenticate a user and get an access token",
    dependencies=[Depends(public)],
    responses={
        200: {"description": "User successfully logged in"},
        **_invalid,
        401: {"description": "Invalid credentials"},
        429: {"description": "Too many failed sign-ins"},
    },
)
async def login(body: UserLoginRequest, request: Request, users: Users) -> Response:
    """Sign in with email and password (answered by the auth service)."""
    answer = await users.auth.login(body.model_dump(), request_client_address(request))
    headers = {
        k: v for k, v in answer.headers.items() if k.lower() in {"retry-after", "cache-control"}
    }
    return Response(
        answer.body,
        status_code=answer.status,
        media_type=answer.headers.get("content-type", "application/json"),
        headers=headers,
    )


@router.get(
    "/profiles",
    response_model=list[UserResponse],
    tags=["Users"],
    summary="Get all user profiles (Admin only)",
    responses={200: {"description": "List of user profiles"}, **_unauthorized, **_forbidden},
)
async def list_profiles(
    request: Request,
    users: Users,
    _admin: AdminPrincipal,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """Every profile, oldest first, paged; the total is in ``X-Total-Count``."""
    rows, total = await service.list_profiles(users, limit=limit, offset=offset)
    body = [to_response(user).model_dump(mode="json") for user in rows]
    return Response(
        orjson.dumps(body),
        media_type="application/json",
        headers=total_count_headers(request, total=total, limit=limit, offset=offset),
    )


@router.get(
    "/profiles/{userId}",
    response_model=UserResponse,
    tags=["Users"],
    summary="Get a user profile by ID",
    responses={200: {"description": "User profile found"}, **_not_found, **_unauthorized},
)
async def get_profile(userId: uuid.UUID, users: Users, principal: CurrentPrincipal) -> UserResponse:
    """One profile: the caller's own, or any for an admin."""
    return to_response(await service.get_profile(users, principal, userId))


@router.put(
    "/profiles/{userId}",
    response_model=UserResponse,
    tags=["Users"],
    summary="Update a user profile by ID",
    responses={
        200: {"description": "User profile updated successfully"},
        **_invalid,
        **_unauthorized,
        403: {"description": "Forbidden (cannot update another user's profile)"},
        **_not_found,
    },
)
async def update_profile(
    userId: uuid.UUID, body: UserUpdateRequest, users: Users, principal: CurrentPrincipal
) -> UserResponse:
    """Change names or phone number; only the fields sent change."""
    changes: dict[str, Any] = {
        _FIELD_NAMES[name]: value for name, value in body.model_dump(exclude_unset=True).items()
    }
    for required in ("first_name", "last_name"):
        if required in changes and changes[required] is None:
            del changes[required]
    return to_response(await service.update_profile(users, principal, userId, changes))


@router.delete(
    "/profiles/{userId}",
    status_code=204,
    tags=["Users"],
    summary="Delete a user profile by ID (Admin only)",
    responses={
        204: {"description": "User profile deleted successfully"},
        **_unauthorized,
        **_forbidden,
        **_not_found,
        409: {"description": "The last administrator cannot be deleted"},
    },
)
async def delete_profile(userId: uuid.UUID, users: Users, admin: AdminPrincipal) -> Response:
    """Remove an account with its credentials and sessions."""
    await service.delete_user(users, admin, userId)
    return Response(status_code=204)


@router.put(
    "/profiles/{userId}/roles",
    response_model=UserResponse,
    tags=["Users"],
    summary="Set a user's roles (Admin only)",
    responses={
        **_invalid,
        **_unauthorized,
        **_forbidden,
        **_not_found,
        409: {"description": "Last administrator"},
    },
)
async def assign_roles(
    userId: uuid.UUID, body: RoleAssignment, users: Users, _admin: AdminPrincipal
) -> UserResponse:
    """Replace a user's roles; USER is always kept."""
    return to_response(await service.assign_roles(users, userId, body.roles))


@router.get(
    "/me",
    response_model=UserResponse,
    tags=["Users"],
    summary="The signed-in user's own profile",
    responses={**_unauthorized, **_not_found},
)
async def me(users: Users, principal: CurrentPrincipal) -> UserResponse:
    """The caller's profile."""
    return to_response(await service.get_profile(users, principal, principal.user_id))


@router.post(
    "/verify-email",
    status_code=204,
    tags=["Authentication"],
    summary="Confirm an email address with the link's token",
    dependencies=[Depends(public)],
    responses={204: {"description": "Email verified"}, **_invalid},
)
async def verify_email(body: EmailVerification, users: Users) -> Response:
    """Use a verification token, once, before it expires."""
    await service.verify_email(users, body.token)
    return Response(status_code=204)


@router.post(
    "/verification-email",
    status_code=202,
    response_model=Accepted,
    tags=["Authentication"],
    summary="Send a fresh verification link",
    responses={**_unauthorized},
)
async def resend_verification(users: Users, principal: CurrentPrincipal) -> Accepted:
    """Mail a new verification link to the signed-in user."""
    await service.resend_verification(users, principal)
    return Accepted(message="If the address still needs verifying, a new link is on its way.")


@router.post(
    "/password-reset",
    status_code=202,
    response_model=Accepted,
    tags=["Authentication"],
    summary="Ask for a password reset link",
    dependencies=[Depends(public)],
    responses={**_invalid},
)
async def request_password_reset(body: PasswordResetRequest, users: Users) -> Accepted:
    """Mail a reset link; the answer is the same whether or not the address has an account."""
    await service.request_password_reset(users, body.email)
    return Accepted(message="If the address has an account, a reset link is on its way.")


@router.post(
    "/password-reset/confirm",
    status_code=204,
    tags=["Authentication"],
    summary="Set a new password with a reset link's token",
    dependencies=[Depends(public)],
    responses={204: {"description": "Password changed"}, **_invalid},
)
async def confirm_password_reset(body: PasswordResetConfirmation, users: Users) -> Response:
    """Use a reset token to set a new password; every session ends."""
    await service.reset_password(users, body.token, body.newPassword)
    return Response(status_code=204)


@router.get(
    "/{userId}",
    response_model=UserResponse,
    tags=["Users"],
    summary="Get a user by ID",
    responses={**_unauthorized, **_not_found},
)
async def get_user(userId: uuid.UUID, users: Users, principal: CurrentPrincipal) -> UserResponse:
    """The same as ``GET /profiles/{userId}``, at the path the platform's API lists."""
    return to_response(await service.get_profile(users, principal, userId))


@router.put(
    "/{userId}",
    response_model=UserResponse,
    tags=["Users"],
    summary="Update a user by ID",
    responses={
        **_invalid,
        **_unauthorized,
        403: {"description": "Forbidden (cannot update another user's profile)"},
        **_not_found,
    },
)
async def update_user(
    userId: uuid.UUID, body: UserUpdateRequest, users: Users, principal: CurrentPrincipal
) -> UserResponse:
    """The same as ``PUT /profiles/{userId}``, at the path the platform's API lists."""
    return await update_profile(userId, body, users, principal)
