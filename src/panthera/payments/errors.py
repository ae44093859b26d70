"""The payments' errors."""

from panthera.kernel.errors import Conflict, InvalidInput, NotFound, PantheraError
from panthera.kernel.idempotency import IdempotencyKeyReused


class PaymentNotFound(NotFound):
    code = "payment_not_found"
    title = "Payment not found"


class InvalidPaymentAmount(InvalidInput):
    code = "invalid_amount"
    title = "Invalid amount"


class CardDataRefused(InvalidInput):
    code = "card_data_refused"
    title = "Card numbers are never accepted"


class OrderAlreadyPaid(Conflict):
    code = "order_already_paid"
    title = "The order already has a payment that went through or is under way"


class PaymentRequestMismatch(IdempotencyKeyReused):
    """The request that made a payment, sent again asking for something else.

    The same code as any key reused with another request: to its caller it is one.
    """

    def __init__(self) -> None:
        super().__init__(
            "This key already paid for the order with another amount, currency, payer or token."
        )


class PaymentInProgress(Conflict):
    code = "payment_in_progress"
    title = "A payment of this order is still waiting for the provider"


class PaymentNotRefundable(Conflict):
    code = "payment_not_refundable"
    title = "Only a payment that succeeded can be refunded"


class RefundExceedsCapture(Conflict):
    code = "refund_exceeds_capture"
    title = "The refund is more than what is left of the payment"


class UnknownProvider(NotFound):
    code = "unknown_provider"
    title = "No such payment provider here"


class InvalidWebhookSignature(InvalidInput):
    code = "invalid_webhook"
    title = "The webhook is not signed by the provider, or is too old"


class PaymentProviderUnavailable(PantheraError):
    status = 503
    code = "payment_provider_unavailable"
    title = "The payment provider did not answer; retry with the same Idempotency-Key"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "2"})


class PaymentProviderError(PantheraError):
    status = 502
    code = "payment_provider_error"
    title = "The payment provider refused the request"
