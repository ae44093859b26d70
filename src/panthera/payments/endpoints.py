"""Routes of the payments service: payments, refunds, provider webhooks, and the saga's calls."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy import func, select

from panthera.kernel.http.direct import Declined, direct_route, json_body, parsed
from panthera.kernel.http.paging import total_count_headers
from panthera.kernel.idempotency import (
    IDEMPOTENCY_HEADER,
    Claim,
    IdempotencyKeyHeader,
    checked_key,
    request_fingerprint,
)
from panthera.kernel.money import InvalidAmount, Money
from panthera.kernel.security.permissions import (
    AdminPrincipal,
    CurrentPrincipal,
    internal_only,
    is_internal_caller,
    public,
)
from panthera.payments import errors, presenters, refunds, repository, service, webhooks
from panthera.payments.cards import contains_card_number, refuse_card_numbers
from panthera.payments.deps import Payments, PaymentsDeps
from panthera.payments.models import REFUNDED_STATUSES, Payment, Refund
from panthera.payments.providers import InvalidWebhook
from panthera.payments.schemas import (
    InternalPaymentCreate,
    InternalRefund,
    PaymentCreate,
    PaymentOut,
    Reference,
    RefundCreate,
    RefundOut,
    WebhookAck,
)

router = APIRouter()
Responses = dict[int | str, dict[str, Any]]
_invalid: Responses = {400: {"description": "Invalid input"}}
_signed_in: Responses = {401: {"description": "Unauthorized"}}
_admin: Responses = {**_signed_in, 403: {"description": "Forbidden"}}
_missing: Responses = {404: {"description": "Not found"}}
_idempotent: Responses = {
    409: {"description": "The same Idempotency-Key is in flight, or the order is paid"},
    422: {"description": "The Idempotency-Key was used with another request"},
    502: {"description": "The payment provider refused the request"},
    503: {"description": "The payment provider did not answer; retry with the same key"},
}
INTERNAL_SCOPE = "internal"


def _amount(text: str, currency: str) -> Money:
    try:
        money = Money.parse(text, currency)
    except InvalidAmount as exc:
        raise errors.InvalidPaymentAmount(str(exc), field="amount") from exc
    if money.amount <= 0:
        raise errors.InvalidPaymentAmount("The amount must be more than zero.", field="amount")
    return money


def _user_scope(user_id: uuid.UUID) -> str:
    return f"user:{user_id}"


async def _view(payments: Payments, payment_id: uuid.UUID) -> PaymentOut:
    async with payments.read_session() as session:
        view = await service.payment_view(session, payment_id)
    if view is None:
        raise errors.PaymentNotFound()
    return presenters.payment_out(view.payment, view.refunds)


def _payment_request(
    body: PaymentCreate, user_id: uuid.UUID, request_key: str
) -> service.PaymentRequest:
    return service.PaymentRequest(
        order_reference=body.orderId,
        user_id=user_id,
        amount=_amount(body.amount, body.currency),
        token=body.paymentMethod,
        request_key=request_key,
    )


async def _payment_body(payments: Payments, payment: Payment) -> dict[str, Any]:
    """A payment as the API shows it; its refunds are read only when it may have any."""
    refunds: list[Refund] = []
    if payment.status in REFUNDED_STATUSES:
        async with payments.read_session() as session:
            refunds = await repository.refunds_of(session, [payment.id])
    return presenters.payment_out(payment, refunds).model_dump(mode="json")


async def _take_payment(
    payments: Payments, body: PaymentCreate, user_id: uuid.UUID, scope: str, key: str
) -> Response:
    request = _payment_request(body, user_id, f"{scope}:{key}")

    async def handle(_claim: Claim) -> tuple[int, Any]:
        payment = await service.create_payment(
            payments.uow,
            payments.provider,
            request,
            alone=payments.alone,
            written=payments.written,
        )
        return 201, await _payment_body(payments, payment)

    result = await payments.idempotency.run(
        scope=scope,
        key=key,
        request_hash=request_fingerprint("create_payment", body.model_dump(mode="json")),
        handler=handle,
    )
    return result.to_response()


@router.post(
    "/payments",
    status_code=201,
    response_model=PaymentOut,
    tags=["Payments"],
    summary="Pay for an order with a provider token",
    dependencies=[Depends(refuse_card_numbers)],
    responses={**_invalid, **_signed_in, **_idempotent},
)
async def create_payment(
    body: PaymentCreate,
    payments: Payments,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Take a payment; the same ``Idempotency-Key`` and body answer the first result again.

    A declined card is a payment too: 201 with ``status: failed`` and a ``failureCode``.
    With the test provider the outcome arrives shortly after (``status: processing``).
    """
    key = checked_key(idempotency_key)
    return await _take_payment(
        payments, body, principal.user_id, _user_scope(principal.user_id), key
    )


@router.get(
    "/payments",
    response_model=list[PaymentOut],
    tags=["Payments"],
    summary="Payments: your own, or anyone's for an administrator",
    responses={**_invalid, **_signed_in},
)
async def list_payments(
    request: Request,
    payments: Payments,
    principal: CurrentPrincipal,
    orderId: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Response:
    """Newest first; the total is in ``X-Total-Count``."""
    conditions = []
    if not principal.is_admin:
        conditions.append(Payment.user_id == principal.user_id)
    if orderId is not None:
        conditions.append(Payment.order_reference == orderId)
    async with payments.read_session() as session:
        total = await session.scalar(select(func.count()).select_from(Payment).where(*conditions))
        rows = list(
            (
                await session.execute(
                    select(Payment)
                    .where(*conditions)
                    .order_by(Payment.created_at.desc(), Payment.id)
                    .limit(limit)
                    .offset(offset)
                )
            ).scalars()
        )
        refunds = await repository.refunds_of(session, [row.id for row in rows])
    by_payment: dict[uuid.UUID, list[Any]] = {}
    for refund in refunds:
        by_payment.setdefault(refund.payment_id, []).append(refund)
    body = [
        presenters.payment_out(row, by_payment.get(row.id, [])).model_dump(mode="json")
        for row in rows
    ]
    return Response(
        orjson.dumps(body),
        media_type="application/json",
        headers=total_count_headers(request, total=total or 0, limit=limit, offset=offset),
    )


@router.get(
    "/payments/{paymentId}",
    response_model=PaymentOut,
    tags=["Payments"],
    summary="One payment with its refunds (its owner or an administrator)",
    responses={**_invalid, **_signed_in, **_missing},
)
async def get_payment(
    paymentId: uuid.UUID, payments: Payments, principal: CurrentPrincipal
) -> PaymentOut:
    """Someone else's payment is not found, rather than forbidden: its id tells nothing."""
    found = await _view(payments, paymentId)
    if not principal.may_act_for(found.userId):
        raise errors.PaymentNotFound()
    return found


@router.post(
    "/payments/{paymentId}/refunds",
    status_code=201,
    response_model=RefundOut,
    tags=["Payments"],
    summary="Refund all or part of a payment (Admin only)",
    dependencies=[Depends(refuse_card_numbers)],
    responses={**_invalid, **_admin, **_missing, **_idempotent},
)
async def refund_payment(
    paymentId: uuid.UUID,
    body: RefundCreate,
    payments: Payments,
    admin: AdminPrincipal,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Without ``amount``, all that is left; more than is left: 409 ``refund_exceeds_capture``."""
    key = checked_key(idempotency_key)
    async with payments.read_session() as session:
        payment = await repository.payment(session, paymentId)
    if payment is None:
        raise errors.PaymentNotFound()
    amount = _amount(body.amount, payment.currency).amount if body.amount is not None else None
    scope = _user_scope(admin.user_id)
    request = refunds.RefundRequest(
        amount=amount, reason=body.reason, requested_by=admin.user_id, request_key=f"{scope}:{key}"
    )

    async def handle(_claim: Claim) -> tuple[int, Any]:
        paid, refund = await refunds.refund_payment(
            payments.uow, payments.provider, paymentId, request
        )
        return 201, presenters.refund_out(refund, paid.currency).model_dump(mode="json")

    result = await payments.idempotency.run(
        scope=scope,
        key=key,
        request_hash=request_fingerprint(
            "refund_payment", {"paymentId": str(paymentId), **body.model_dump(mode="json")}
        ),
        handler=handle,
    )
    return result.to_response()


@router.post(
    "/webhooks/{provider}",
    response_model=WebhookAck,
    tags=["Webhooks"],
    summary="Events from the payment provider (signed; Stripe's scheme)",
    dependencies=[Depends(public)],
    responses={**_invalid, **_missing},
)
async def receive_webhook(provider: str, request: Request, payments: Payments) -> WebhookAck:
    """Verified by its signature, applied once per event id; a redelivery answers 200 again."""
    if provider != payments.provider.name:
        raise errors.UnknownProvider()
    body = await request.body()
    try:
        outcome = await webhooks.receive_webhook(
            payments.uow,
            payments.provider,
            request.headers,
            body,
            transaction=payments.transaction,
            written=payments.written,
        )
    except InvalidWebhook as exc:
        raise errors.InvalidWebhookSignature(reason=exc.reason) from exc
    return WebhookAck(received=True, duplicate=outcome == webhooks.DUPLICATE, outcome=outcome)


# ------------------------------------------------------- the orders saga's calls


async def _pay_for_order(
    payments: PaymentsDeps, body: InternalPaymentCreate, idempotency_key: str | None
) -> Response:
    key = checked_key(idempotency_key or f"payment:{body.orderId}")
    request = _payment_request(body, body.userId, f"{INTERNAL_SCOPE}:{key}")
    payment = await service.create_payment(
        payments.uow,
        payments.provider,
        request,
        alone=payments.alone,
        written=payments.written,
    )
    return Response(
        orjson.dumps(await _payment_body(payments, payment)),
        status_code=201,
        media_type="application/json",
    )


async def _pay_for_order_direct(request: Request) -> Response | None:
    """The orders saga's payment without FastAPI's per-request work, for a well-formed
    request; anything else goes to :func:`create_payment_for_order`."""
    if not is_internal_caller(request):
        return None
    try:
        raw = await json_body(request)
        if contains_card_number(raw):
            # Refused by the route's own dependency, before any model sees the number
            # (or, when the JSON is broken too, answered with FastAPI's parse error).
            raise Declined
        body = parsed(InternalPaymentCreate, raw)
    except Declined:
        return None
    return await _pay_for_order(
        request.app.state.payments_deps, body, request.headers.get(IDEMPOTENCY_HEADER)
    )


async def create_payment_for_order(
    body: InternalPaymentCreate,
    payments: Payments,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Idempotent by order: the key defaults to ``payment:<orderId>``.

    No idempotency key row: the payment itself, unique by order and key, is the
    record of the request. Sent again, it answers that payment as it is now (422
    ``idempotency_key_reused`` if it asks for another amount, currency, payer or
    token); while another payment of the order is live, 409.
    """
    return await _pay_for_order(payments, body, idempotency_key)


router.add_api_route(
    "/internal/payments",
    create_payment_for_order,
    methods=["POST"],
    status_code=201,
    response_model=PaymentOut,
    include_in_schema=False,
    dependencies=[Depends(internal_only), Depends(refuse_card_numbers)],
    route_class_override=direct_route(_pay_for_order_direct),
)


@router.post(
    "/internal/payments/{reference}/refund",
    response_model=PaymentOut,
    include_in_schema=False,
    dependencies=[Depends(internal_only), Depends(refuse_card_numbers)],
)
async def refund_order(
    reference: Annotated[Reference, Path()],
    payments: Payments,
    body: InternalRefund | None = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Refund the order's payment, all that is left or ``amount``; repeating it is harmless."""
    key = checked_key(idempotency_key or f"refund:{reference}")
    request = body or InternalRefund()

    async def handle(_claim: Claim) -> tuple[int, Any]:
        amount = None
        if request.amount is not None:
            async with payments.read_session() as session:
                payment = await repository.latest_payment_of_order(session, reference)
            if payment is None:
                raise errors.PaymentNotFound()
            amount = _amount(request.amount, payment.currency).amount
        view = await refunds.refund_order(
            payments.uow,
            payments.provider,
            reference,
            reason=request.reason,
            request_key=f"{INTERNAL_SCOPE}:{key}",
            amount=amount,
        )
        return 200, presenters.payment_out(view.payment, view.refunds).model_dump(mode="json")

    result = await payments.idempotency.run(
        scope=INTERNAL_SCOPE,
        key=key,
        request_hash=request_fingerprint(
            "refund_order",
            {"reference": reference, "reason": request.reason, "amount": request.amount},
        ),
        handler=handle,
    )
    return result.to_response()


@router.get(
    "/internal/payments/{reference}",
    response_model=PaymentOut,
    include_in_schema=False,
    dependencies=[Depends(internal_only)],
)
async def payment_of_order(reference: Annotated[Reference, Path()], payments: Payments) -> Response:
    """The order's payment that went through or is under way, else its latest attempt."""
    async with payments.read_session() as session:
        payment = await repository.payment_of_order(session, reference)
    if payment is None:
        raise errors.PaymentNotFound()
    return Response(
        orjson.dumps(await _payment_body(payments, payment)), media_type="application/json"
    )
