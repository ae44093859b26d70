"""Routes of the notifications service: the delivery log for staff."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response

from panthera.kernel.http.paging import total_count_headers
from panthera.kernel.security.permissions import AdminPrincipal
from panthera.notifications.models import Delivery
from panthera.notifications.schemas import DeliveryResponse
from panthera.notifications.service import list_deliveries

router = APIRouter()


def _to_response(delivery: Delivery) -> DeliveryResponse:
    return DeliveryResponse(
        id=delivery.id,
        eventId=delivery.event_id,
        userId=delivery.user_id,
        channel=delivery.channel,
        recipient=delivery.recipient,
        template=delivery.template,
        subject=delivery.subject,
        status=delivery.status,
        attempts=delivery.attempts,
        lastError=delivery.last_error,
        createdAt=delivery.created_at,
        sentAt=delivery.sent_at,
    )


@router.get(
    "/deliveries",
    response_model=list[DeliveryResponse],
    tags=["Deliveries"],
    summary="The delivery log, newest first (Admin only)",
    responses={401: {"description": "Unauthorized"}, 403: {"description": "Forbidden"}},
)
async def deliveries(
    request: Request,
    _admin: AdminPrincipal,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """Every message sent or tried, paged; the total is in ``X-Total-Count``."""
    rows, total = await list_deliveries(request.app.state.runtime.uow, limit=limit, offset=offset)
    body = [_to_response(row).model_dump(mode="json") for row in rows]
    return Response(
        orjson.dumps(body),
        media_type="application/json",
        headers=total_count_headers(request, total=total, limit=limit, offset=offset),
    )
