"""Routes of the notifications service: the delivery log for staff, preferences for users."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from panthera.kernel.db import UnitOfWork
from panthera.kernel.http.paging import total_count_headers
from panthera.kernel.security.permissions import AdminPrincipal, CurrentPrincipal, public
from panthera.notifications import service
from panthera.notifications.deps import Notifications
from panthera.notifications.errors import RecipientNotFound
from panthera.notifications.models import Delivery, DeliveryStatus, Recipient
from panthera.notifications.schemas import (
    DeliveryResponse,
    PreferencesResponse,
    PreferencesUpdate,
    Unsubscribed,
)

router = APIRouter()
Responses = dict[int | str, dict[str, Any]]
_admin: Responses = {401: {"description": "Unauthorized"}, 403: {"description": "Forbidden"}}
_missing: Responses = {404: {"description": "Not found"}}
_invalid: Responses = {400: {"description": "Invalid input"}}


def _uow(request: Request) -> UnitOfWork:
    uow: UnitOfWork = request.app.state.runtime.uow()
    return uow


def _delivery(delivery: Delivery) -> DeliveryResponse:
    return DeliveryResponse(
        id=delivery.id,
        eventId=delivery.event_id,
        userId=delivery.user_id,
        channel=delivery.channel,
        recipient=delivery.recipient,
        template=delivery.template,
        subject=delivery.subject,
        transactional=delivery.transactional,
        status=delivery.status,
        attempts=delivery.attempts,
        nextAttemptAt=delivery.next_attempt_at,
        lastError=delivery.last_error,
        createdAt=delivery.created_at,
        sentAt=delivery.sent_at,
    )


def _preferences(recipient: Recipient) -> PreferencesResponse:
    return PreferencesResponse(
        userId=recipient.user_id,
        email=recipient.email,
        phoneNumber=recipient.phone_number,
        marketingEmail=recipient.marketing_email,
        sms=recipient.sms_enabled,
        push=recipient.push_enabled,
        pushTokens=list(recipient.push_tokens),
        updatedAt=recipient.updated_at,
    )


@router.get(
    "/deliveries",
    response_model=list[DeliveryResponse],
    tags=["Deliveries"],
    summary="The delivery log, newest first (Admin only)",
    responses={**_admin, **_invalid},
)
async def deliveries(
    request: Request,
    _admin: AdminPrincipal,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    status: DeliveryStatus | None = None,
    userId: uuid.UUID | None = None,
) -> Response:
    """Every message sent, queued or failed, paged; the total is in ``X-Total-Count``."""
    async with _uow(request) as uow:
        rows, total = await service.list_deliveries(
            uow, limit=limit, offset=offset, status=status, user_id=userId
        )
    body = [_delivery(row).model_dump(mode="json") for row in rows]
    return Response(
        orjson.dumps(body),
        media_type="application/json",
        headers=total_count_headers(request, total=total, limit=limit, offset=offset),
    )


@router.post(
    "/deliveries/{deliveryId}/resend",
    status_code=202,
    response_model=DeliveryResponse,
    tags=["Deliveries"],
    summary="Send a message again (Admin only)",
    responses={**_admin, **_missing, 409: {"description": "Still queued"}},
)
async def resend(
    deliveryId: uuid.UUID, request: Request, notifications: Notifications, _admin: AdminPrincipal
) -> DeliveryResponse:
    """Queues the same message, now, with a fresh set of attempts; 409 while it is queued."""
    async with _uow(request) as uow:
        delivery = await service.resend(uow, deliveryId)
        await uow.commit()
    notifications.wake()
    return _delivery(delivery)


@router.get(
    "/preferences/{userId}",
    response_model=PreferencesResponse,
    tags=["Preferences"],
    summary="A user's notification choices (the user or an administrator)",
    responses={**_admin, **_missing},
)
async def get_preferences(
    userId: uuid.UUID, request: Request, principal: CurrentPrincipal
) -> PreferencesResponse:
    """Which channels a user's messages use; someone else's answer 404."""
    if not principal.may_act_for(userId):
        raise RecipientNotFound()
    async with _uow(request) as uow:
        recipient = await service.find_recipient(uow, userId)
    if recipient is None:
        raise RecipientNotFound()
    return _preferences(recipient)


@router.put(
    "/preferences/{userId}",
    response_model=PreferencesResponse,
    tags=["Preferences"],
    summary="Change a user's notification choices (the user or an administrator)",
    responses={**_admin, **_missing, **_invalid},
)
async def put_preferences(
    userId: uuid.UUID, body: PreferencesUpdate, request: Request, principal: CurrentPrincipal
) -> PreferencesResponse:
    """Only the fields sent change. Order and account mail always goes, whatever the choices."""
    if not principal.may_act_for(userId):
        raise RecipientNotFound()
    changes: dict[str, Any] = {}
    for name, column in (
        ("marketingEmail", "marketing_email"),
        ("sms", "sms_enabled"),
        ("push", "push_enabled"),
        ("pushTokens", "push_tokens"),
    ):
        value = getattr(body, name)
        if value is not None:
            changes[column] = value
    async with _uow(request) as uow:
        recipient = await service.update_preferences(uow, userId, changes)
        await uow.commit()
    return _preferences(recipient)


async def _unsubscribe(request: Request, notifications: Notifications, token: str) -> Unsubscribed:
    user_id = notifications.unsubscribe.verify(token)
    async with _uow(request) as uow:
        await service.unsubscribe(uow, user_id)
        await uow.commit()
    return Unsubscribed(unsubscribed=True)


@router.get(
    "/unsubscribe",
    response_model=Unsubscribed,
    tags=["Preferences"],
    summary="Stop optional mail, from the link in a message",
    dependencies=[Depends(public)],
    responses=_invalid,
)
async def unsubscribe_link(
    request: Request,
    notifications: Notifications,
    token: Annotated[str, Query(min_length=10, max_length=200)],
) -> Unsubscribed:
    """The signed link names the user; order and account mail keeps coming."""
    return await _unsubscribe(request, notifications, token)


@router.post(
    "/unsubscribe",
    response_model=Unsubscribed,
    tags=["Preferences"],
    summary="One-click unsubscribe (RFC 8058), from a mail client's button",
    dependencies=[Depends(public)],
    responses=_invalid,
)
async def unsubscribe_one_click(
    request: Request,
    notifications: Notifications,
    token: Annotated[str, Query(min_length=10, max_length=200)],
) -> Unsubscribed:
    """What mail clients post to the ``List-Unsubscribe`` address."""
    return await _unsubscribe(request, notifications, token)
