"""Routes of the orders service: the seed's orders API, plus cancel, fulfilment and refunds."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import func, select

from panthera.kernel.http.direct import body_as, direct_route
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
    bearer_token,
    principal_of,
)
from panthera.kernel.security.principal import Principal
from panthera.kernel.sql import is_unique_violation
from panthera.orders import errors, presenters, service
from panthera.orders.clients import QuotedLine, Refused, Reservation, Unavailable
from panthera.orders.deps import Orders, OrdersDeps
from panthera.orders.models import Order, OrderItem
from panthera.orders.saga import record_payment
from panthera.orders.schemas import (
    CancelIn,
    OrderCreate,
    OrderCreated,
    OrderOut,
    OrderSummary,
    RefundIn,
    ShipmentIn,
)
from panthera.orders.states import CANCELLABLE, REFUNDABLE, CancelReason, OrderStatus

log = logging.getLogger("panthera.orders")
# The namespace of order ids derived from a buyer's Idempotency-Key.
_ORDER_IDS = uuid.UUID("4d1f2b0e-8a53-4c7e-9d26-1f0b7c3e5a90")
router = APIRouter()
Responses = dict[int | str, dict[str, Any]]
_invalid: Responses = {400: {"description": "Invalid input"}}
_signed_in: Responses = {401: {"description": "Unauthorized"}}
_admin: Responses = {**_signed_in, 403: {"description": "Forbidden"}}
_missing: Responses = {404: {"description": "Not found"}}
_conflict: Responses = {409: {"description": "The order's status does not allow it"}}
_idempotent: Responses = {
    409: {"description": "The same Idempotency-Key is in flight"},
    422: {"description": "The Idempotency-Key was used with another request"},
    503: {"description": "A service the order needs did not answer; retry with the same key"},
}
_Status = Annotated[OrderStatus | None, Query(description="Only orders in this status")]
_Limit = Annotated[int, Query(ge=1, le=100)]
_Offset = Annotated[int, Query(ge=0, le=100_000)]


def _scope(principal: Principal) -> str:
    return f"user:{principal.user_id}"


async def _owned(orders: Orders, principal: Principal, order_id: uuid.UUID) -> OrderOut:
    """The order as its owner or an admin sees it; anyone else finds nothing."""
    async with orders.read_session() as session:
        order = await service.find(session, order_id)
        if order is None or not principal.may_act_for(order.user_id):
            raise errors.OrderNotFound()
        return await presenters.order_out(session, order)


# ------------------------------------------------------------------- placing


async def _place_order(
    orders: OrdersDeps, principal: Principal, body: OrderCreate, idempotency_key: str | None
) -> Response:
    key = None if idempotency_key is None else checked_key(idempotency_key)
    request_key = None if key is None else f"{_scope(principal)}:{key}"

    async def handle(claim: Claim | None) -> tuple[int, Any]:
        created = await _place(orders, principal, body, request_key, claim)
        return 201, created.model_dump(mode="json")

    if key is None:
        status, payload = await handle(None)
        return _json(payload, status)
    result = await orders.idempotency.run(
        scope=_scope(principal),
        key=key,
        request_hash=request_fingerprint("place_order", body.model_dump(mode="json")),
        handler=handle,
    )
    return result.to_response()


async def _place_order_direct(request: Request) -> Response | None:
    """An order placed without FastAPI's per-request work, for a well-formed request with
    a bearer token; anything else goes to :func:`place_order`, which words the errors.

    The body is read before the token is checked, as FastAPI does: a request both
    malformed and unauthenticated gets FastAPI's answer, a well-formed one the
    same ``Unauthenticated`` from either path.
    """
    body = await body_as(OrderCreate, request)
    if body is None:
        return None
    token = bearer_token(request)
    if token is None:
        return None
    principal = await principal_of(request, token)
    return await _place_order(
        request.app.state.orders_deps, principal, body, request.headers.get(IDEMPOTENCY_HEADER)
    )


async def place_order(
    body: OrderCreate,
    request: Request,
    orders: Orders,
    principal: CurrentPrincipal,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Prices come from the catalog now, never from the request.

    The answer is ``PENDING``; stock is then reserved and the payment taken, and the
    order becomes ``CONFIRMED``, or ``CANCELLED`` with a ``cancelReason``. With an
    ``Idempotency-Key``, sending the same request again answers the first order.
    """
    return await _place_order(orders, principal, body, idempotency_key)


router.add_api_route(
    "/orders",
    place_order,
    methods=["POST"],
    status_code=201,
    response_model=OrderCreated,
    tags=["Orders"],
    summary="Place an order; it goes on from PENDING by itself",
    responses={**_invalid, **_signed_in, **_idempotent},
    route_class_override=direct_route(_place_order_direct),
)


def _created(order: Order) -> OrderCreated:
    return OrderCreated(
        orderId=order.id,
        status=OrderStatus.PENDING,
        totalAmount=Money(order.total_amount, order.currency).format(),
        currency=order.currency,
    )


async def _place(
    orders: Orders,
    principal: Principal,
    body: OrderCreate,
    request_key: str | None,
    claim: Claim | None,
) -> OrderCreated:
    """``claim``: the request's Idempotency-Key, held; its answer is stored with the order."""
    if claim is not None and not claim.first and request_key is not None:
        # The key was taken over: the run before this one may have placed the order.
        # The same request ran before and its answer was lost (a process died after
        # the order was written): answer that order, as the first run would have.
        async with orders.database.reads() as sql:
            earlier = await service.placed_by(sql, request_key)
        if earlier is not None:
            return _created(earlier)
    # The order is PENDING from here on, the moment its stock began to be held.
    placed_at = service.now()
    wanted = [(item.productId, item.variantId, item.quantity) for item in body.items]
    # The stock is held and priced in one call, under the order's id: the saga starts
    # at the payment. Stock that is short still makes an order, at today's prices,
    # which the saga then calls off (the catalog answers its reserve step the same).
    # With an Idempotency-Key the order's id is the key's: a retry of a request whose
    # answer was lost after the stock was held (a process died) finds that
    # reservation under the same reference instead of holding the stock twice.
    order_id = uuid.uuid4() if request_key is None else uuid.uuid5(_ORDER_IDS, request_key)
    try:
        held = await orders.catalog.reserve(str(order_id), wanted, orders.saga.reservation_ttl)
    except Unavailable:
        # No answer (the stock may be held all the same): priced without holding, the
        # order's reserve step asks again under the same reference, retried as any step.
        held = Reservation(held=False, reason="no_answer", expires_at=None)
    except Refused as exc:
        raise errors.UnknownProduct(exc.detail) from exc
    if held.held:
        lines, currency = _in_request_order(held.lines, wanted), held.lines[0].currency
    elif held.reason == "unknown_product":
        raise _unknown(held.unknown)
    elif held.reason == "mixed_currencies":
        raise errors.MixedCurrencies()
    else:
        lines, currency = await _quoted(orders, wanted)
    try:
        async with orders.transaction() as tx:
            order, items = service.new_order(
                user_id=principal.user_id,
                lines=lines,
                currency=currency,
                shipping_address=body.shippingAddress,
                payment_method=body.paymentMethod,
                request_key=request_key,
                order_id=order_id,
                reserved_until=held.expires_at if held.held else None,
                placed_at=placed_at,
            )
            # The lease goes in with the order; the first step starts from the lines
            # written here, without reading them back.
            orders.saga.take_up_after_commit(tx, order, items)
            created = _created(order)
            if claim is not None:
                answer = created.model_dump(mode="json")
                await orders.idempotency.answer_in(tx.sql, claim, 201, answer)
            await service.place(tx, order, items)
    except Exception as exc:
        if held.held and request_key is None:
            # No order holds the stock and no retry will: it goes back now rather than
            # when it expires. With a key, a retry (or the run that overlapped this one
            # and placed the order) holds it under the same reference.
            await _give_back(orders, order_id)
        # A run of the same request that overlapped this one wrote its order first.
        if request_key is None or not is_unique_violation(exc):
            raise
        async with orders.database.reads() as sql:
            earlier = await service.placed_by(sql, request_key)
        if earlier is None:
            raise
        return _created(earlier)
    return created


def _in_request_order(
    lines: list[QuotedLine], wanted: list[tuple[uuid.UUID, uuid.UUID | None, int]]
) -> list[QuotedLine]:
    """The held lines (one per variant, in the catalog's lock order) in the order the
    request named them."""
    ordered: list[QuotedLine] = []
    for product_id, variant_id, _ in wanted:
        for line in lines:
            named = line.variant_id == variant_id if variant_id else line.product_id == product_id
            if named and line not in ordered:
                ordered.append(line)
                break
    return ordered + [line for line in lines if line not in ordered]


def _unknown(unknown: list[uuid.UUID]) -> errors.UnknownProduct:
    return errors.UnknownProduct(
        "These cannot be ordered: " + ", ".join(str(found) for found in unknown),
        unknown=[str(found) for found in unknown],
    )


async def _quoted(
    orders: Orders, wanted: list[tuple[uuid.UUID, uuid.UUID | None, int]]
) -> tuple[list[QuotedLine], str]:
    """Today's prices of ``wanted``, held or not."""
    try:
        quote = await orders.catalog.quote(wanted)
    except Unavailable as exc:
        raise errors.UpstreamUnavailable("The catalog did not answer.") from exc
    except Refused as exc:
        raise errors.UnknownProduct(exc.detail) from exc
    if quote.unknown:
        raise _unknown(quote.unknown)
    currencies = {line.currency for line in quote.lines}
    if len(currencies) != 1:
        raise errors.MixedCurrencies()
    return quote.lines, currencies.pop()


async def _give_back(orders: Orders, order_id: uuid.UUID) -> None:
    try:
        await orders.catalog.call_off(str(order_id), "order_not_placed")
    except (Unavailable, Refused):
        log.warning(
            "stock held for an order that was not placed is left to expire",
            extra={"order_id": str(order_id)},
        )


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


# ------------------------------------------------------------------- reading


async def _summaries(
    orders: Orders, request: Request, conditions: list[Any], limit: int, offset: int
) -> Response:
    item_count = (
        select(func.coalesce(func.sum(OrderItem.quantity), 0))
        .where(OrderItem.order_id == Order.id)
        .scalar_subquery()
    )
    async with orders.read_session() as session:
        total = await session.scalar(select(func.count()).select_from(Order).where(*conditions))
        rows = (
            await session.execute(
                select(Order, item_count)
                .where(*conditions)
                .order_by(Order.created_at.desc(), Order.id)
                .limit(limit)
                .offset(offset)
            )
        ).all()
    body = [presenters.summary(order, count).model_dump(mode="json") for order, count in rows]
    return _json(
        body, headers=total_count_headers(request, total=total or 0, limit=limit, offset=offset)
    )


@router.get(
    "/orders",
    response_model=list[OrderSummary],
    tags=["Orders"],
    summary="Every order, newest first (administrators)",
    responses={**_invalid, **_admin},
)
async def list_orders(
    request: Request,
    orders: Orders,
    admin: AdminPrincipal,
    status: _Status = None,
    userId: Annotated[uuid.UUID | None, Query()] = None,
    limit: _Limit = 20,
    offset: _Offset = 0,
) -> Response:
    """Filtered by ``status`` and ``userId``; the total is in ``X-Total-Count``."""
    conditions: list[Any] = []
    if status is not None:
        conditions.append(Order.status == status)
    if userId is not None:
        conditions.append(Order.user_id == userId)
    return await _summaries(orders, request, conditions, limit, offset)


@router.get(
    "/orders/user/{userId}",
    response_model=list[OrderSummary],
    tags=["Orders"],
    summary="A user's orders, newest first (that user or an administrator)",
    responses={**_invalid, **_signed_in, **_missing},
)
async def orders_of_user(
    userId: uuid.UUID,
    request: Request,
    orders: Orders,
    principal: CurrentPrincipal,
    status: _Status = None,
    limit: _Limit = 20,
    offset: _Offset = 0,
) -> Response:
    """Someone else's orders are not found, rather than forbidden."""
    if not principal.may_act_for(userId):
        raise errors.OrderNotFound()
    conditions: list[Any] = [Order.user_id == userId]
    if status is not None:
        conditions.append(Order.status == status)
    return await _summaries(orders, request, conditions, limit, offset)


@router.get(
    "/orders/{orderId}",
    response_model=OrderOut,
    tags=["Orders"],
    summary="One order with its lines and history (its owner or an administrator)",
    responses={**_invalid, **_signed_in, **_missing},
)
async def get_order(orderId: uuid.UUID, orders: Orders, principal: CurrentPrincipal) -> OrderOut:
    """Someone else's order is not found, rather than forbidden: its id tells nothing."""
    return await _owned(orders, principal, orderId)


# --------------------------------------------------------------- changing it


@router.post(
    "/orders/{orderId}/cancel",
    response_model=OrderOut,
    tags=["Orders"],
    summary="Cancel an order that has not shipped (its owner or an administrator)",
    responses={**_invalid, **_signed_in, **_missing, **_conflict},
)
async def cancel_order(
    orderId: uuid.UUID, orders: Orders, principal: CurrentPrincipal, body: CancelIn | None = None
) -> OrderOut:
    """Stock goes back and a payment is refunded in full. Cancelling twice is harmless."""
    await _owned(orders, principal, orderId)
    async with orders.uow() as uow:
        order = await service.load(uow.session, orderId, for_update=True)
        if order.status != OrderStatus.CANCELLED:
            if OrderStatus(order.status) not in CANCELLABLE:
                raise errors.NotCancellable(f"The order is {order.status}.")
            by_owner = principal.user_id == order.user_id
            await service.cancel(
                uow,
                order,
                CancelReason.CANCELLED_BY_CUSTOMER if by_owner else CancelReason.CANCELLED_BY_STAFF,
                actor=str(principal.user_id),
                message=body.message if body else None,
            )
            orders.saga.take_up_after_commit(uow, order)
            await uow.commit()
    return await _owned(orders, principal, orderId)


async def _staff_move(
    orders: Orders, admin: Principal, order_id: uuid.UUID, target: OrderStatus, **fields: Any
) -> OrderOut:
    async with orders.uow() as uow:
        order = await service.load(uow.session, order_id, for_update=True)
        if order.status != target:
            for name, value in fields.items():
                setattr(order, name, value)
            await service.move(uow, order, target, actor=str(admin.user_id))
            await uow.commit()
    return await _owned(orders, admin, order_id)


@router.post(
    "/orders/{orderId}/ship",
    response_model=OrderOut,
    tags=["Orders"],
    summary="Mark a confirmed order shipped, with its tracking number (administrators)",
    responses={**_invalid, **_admin, **_missing, **_conflict},
)
async def ship_order(
    orderId: uuid.UUID, body: ShipmentIn, orders: Orders, admin: AdminPrincipal
) -> OrderOut:
    return await _staff_move(
        orders,
        admin,
        orderId,
        OrderStatus.SHIPPED,
        tracking_number=body.trackingNumber,
        carrier=body.carrier,
    )


@router.post(
    "/orders/{orderId}/deliver",
    response_model=OrderOut,
    tags=["Orders"],
    summary="Mark a shipped order delivered (administrators)",
    responses={**_invalid, **_admin, **_missing, **_conflict},
)
async def deliver_order(orderId: uuid.UUID, orders: Orders, admin: AdminPrincipal) -> OrderOut:
    return await _staff_move(orders, admin, orderId, OrderStatus.DELIVERED)


@router.post(
    "/orders/{orderId}/refund",
    response_model=OrderOut,
    tags=["Orders"],
    summary="Give money back for a paid order, all or part (administrators)",
    responses={**_invalid, **_admin, **_missing, **_conflict, **_idempotent},
)
async def refund_order(
    orderId: uuid.UUID,
    orders: Orders,
    admin: AdminPrincipal,
    body: RefundIn | None = None,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Requires an ``Idempotency-Key``: a refund sent twice is given once."""
    key = checked_key(idempotency_key)
    request = body or RefundIn()

    async def handle(_claim: Claim) -> tuple[int, Any]:
        view = await _refund(orders, admin, orderId, request, key)
        return 200, view.model_dump(mode="json")

    result = await orders.idempotency.run(
        scope=_scope(admin),
        key=key,
        request_hash=request_fingerprint(
            "refund_order", {"order": str(orderId), **request.model_dump(mode="json")}
        ),
        handler=handle,
    )
    return result.to_response()


async def _refund(
    orders: Orders, admin: Principal, order_id: uuid.UUID, body: RefundIn, key: str
) -> OrderOut:
    async with orders.read_session() as session:
        order = await service.load(session, order_id)
    if OrderStatus(order.status) not in REFUNDABLE:
        raise errors.NotRefundable(f"The order is {order.status}.")
    amount = None
    if body.amount is not None:
        try:
            money = Money.parse(body.amount, order.currency)
        except InvalidAmount as exc:
            raise errors.RefundTooLarge(str(exc), field="amount") from exc
        if money.amount <= 0 or money.amount > order.total_amount - order.amount_refunded:
            raise errors.RefundTooLarge(field="amount")
        amount = money.format()
    try:
        payment = await orders.payments.refund(
            order_id, key=f"staff:{admin.user_id}:{key}", reason=body.reason, amount=amount
        )
    except Unavailable as exc:
        raise errors.UpstreamUnavailable("The payments service did not answer.") from exc
    except Refused as exc:
        if exc.code == "payment_in_progress":
            raise errors.PaymentStillOpen() from exc
        if exc.code == "refund_exceeds_capture":
            raise errors.RefundTooLarge(exc.detail, field="amount") from exc
        raise errors.NotRefundable(exc.detail) from exc
    if payment is None:
        raise errors.NotRefundable("The order has no payment.")
    async with orders.uow() as uow:
        locked = await service.load(uow.session, order_id, for_update=True)
        if payment.revision > locked.payment_revision:
            record_payment(locked, payment)
            await service.apply_refunded(
                uow,
                locked,
                amount_refunded=Money.parse(payment.amount_refunded, locked.currency).amount,
                reason=body.reason,
                actor=str(admin.user_id),
            )
        await uow.commit()
    return await _owned(orders, admin, order_id)
