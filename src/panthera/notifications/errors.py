"""The notifications service's errors."""

from panthera.kernel.errors import Conflict, InvalidInput, NotFound


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"
    title = "Delivery not found"


class DeliveryInFlight(Conflict):
    code = "delivery_in_flight"
    title = "The message is still queued for sending"


class RecipientNotFound(NotFound):
    code = "recipient_not_found"
    title = "No notification preferences for this user"


class InvalidUnsubscribeToken(InvalidInput):
    code = "invalid_unsubscribe_token"
    title = "The unsubscribe link is invalid"
