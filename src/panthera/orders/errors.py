"""The orders' errors."""

from __future__ import annotations

from panthera.kernel.errors import Conflict, InvalidInput, NotFound, PantheraError


class OrderNotFound(NotFound):
    code = "order_not_found"
    title = "Order not found"


class UnknownProduct(InvalidInput):
    code = "unknown_product"
    title = "A product of the order does not exist or cannot be ordered"


class MixedCurrencies(InvalidInput):
    code = "mixed_currencies"
    title = "An order's products must all be priced in one currency"


class TransitionNotAllowed(Conflict):
    code = "transition_not_allowed"
    title = "The order cannot make that change in its current status"

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"An order that is {current} cannot become {target}.")


class NotCancellable(Conflict):
    code = "order_not_cancellable"
    title = "The order can no longer be cancelled"


class NotRefundable(Conflict):
    code = "order_not_refundable"
    title = "Only a paid order that is not cancelled can be refunded"


class RefundTooLarge(InvalidInput):
    code = "refund_exceeds_total"
    title = "The refund is more than what is left of the order's payment"


class PaymentStillOpen(Conflict):
    code = "payment_in_progress"
    title = "The order's payment is still waiting for the provider; retry shortly"


class UpstreamUnavailable(PantheraError):
    status = 503
    code = "upstream_unavailable"
    title = "A service the order depends on did not answer; retry with the same Idempotency-Key"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})
