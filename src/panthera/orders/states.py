"""The rules of an order's life: its statuses, the moves between them, and the saga's steps.

The status is what the shopper and staff see. The saga step is what the orders
service still has to do about the order with other services: before it is
CONFIRMED (reserve stock, take the payment, make the sale final) and after it
is CANCELLED (give stock back, give money back). Both live on the order row, so
a process that dies mid-saga leaves the next one everything it needs to go on.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"
    REFUNDED = "REFUNDED"


ALLOWED_MOVES: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.CONFIRMED, OrderStatus.CANCELLED}),
    OrderStatus.CONFIRMED: frozenset(
        {OrderStatus.SHIPPED, OrderStatus.CANCELLED, OrderStatus.REFUNDED}
    ),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED, OrderStatus.REFUNDED}),
    OrderStatus.DELIVERED: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
}

# An order its owner may still call off: nothing has left the warehouse.
CANCELLABLE = frozenset({OrderStatus.PENDING, OrderStatus.CONFIRMED})
# An order whose payment went through: money can go back.
REFUNDABLE = frozenset({OrderStatus.CONFIRMED, OrderStatus.SHIPPED, OrderStatus.DELIVERED})
FINAL = frozenset({OrderStatus.CANCELLED, OrderStatus.REFUNDED})


def can_move(current: OrderStatus, target: OrderStatus) -> bool:
    """Whether an order in ``current`` may become ``target``."""
    return target in ALLOWED_MOVES[current]


class SagaStep(StrEnum):
    # Forward: hold the stock, take the money, make the sale final.
    RESERVE = "reserve"
    PAY = "pay"
    AWAIT_PAYMENT = "await_payment"
    COMMIT = "commit"
    # Compensation: stock back (a held reservation, or goods already sold), then money back.
    RELEASE = "release"
    REFUND = "refund"
    DONE = "done"


FORWARD_STEPS = frozenset({SagaStep.RESERVE, SagaStep.PAY, SagaStep.AWAIT_PAYMENT, SagaStep.COMMIT})
COMPENSATING_STEPS = frozenset({SagaStep.RELEASE, SagaStep.REFUND})


class CancelReason(StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    UNKNOWN_PRODUCT = "unknown_product"
    CARD_DECLINED = "card_declined"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    PAYMENT_ERROR = "payment_error"
    INVALID_PAYMENT_METHOD = "invalid_payment_method"
    RESERVATION_EXPIRED = "reservation_expired"
    TIMED_OUT = "timed_out"
    CANCELLED_BY_CUSTOMER = "cancelled_by_customer"
    CANCELLED_BY_STAFF = "cancelled_by_staff"


# The payments service's failure codes, as reasons a shopper is told.
_PAYMENT_FAILURES = {
    "card_declined": CancelReason.CARD_DECLINED,
    "insufficient_funds": CancelReason.INSUFFICIENT_FUNDS,
    "invalid_payment_method": CancelReason.INVALID_PAYMENT_METHOD,
}


def reason_for_payment_failure(code: str | None) -> CancelReason:
    """Why an order is cancelled when its payment failed with ``code``."""
    return _PAYMENT_FAILURES.get(code or "", CancelReason.PAYMENT_ERROR)


def reason_for_rejected_stock(code: str | None) -> CancelReason:
    """Why an order is cancelled when the catalog would not hold its stock."""
    if code == "unknown_product":
        return CancelReason.UNKNOWN_PRODUCT
    return CancelReason.OUT_OF_STOCK


def retry_delay_seconds(attempt: int, *, base: float = 0.5, cap: float = 60.0) -> float:
    """Exponential backoff before the ``attempt``-th retry of a saga step (1-based)."""
    # The exponent stops growing long before the cap would overflow a float.
    return float(min(cap, base * 2 ** min(max(0, attempt - 1), 32)))
