"""A local stand-in for the parts of Stripe's API the adapter calls, as an httpx transport.

It checks what Stripe would check (bearer key, form encoding, an idempotency key on
every POST), replays an answer for a repeated ``Idempotency-Key``, answers test
tokens the way Stripe's test mode does, and retrieves the payment intents and
refunds it made (``GET /v1/payment_intents/{id}``, ``GET /v1/refunds/{id}``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx

API_KEY = "sk_test_panthera"
_DECLINES: dict[str, dict[str, Any]] = {
    "tok_chargeDeclined": {
        "code": "card_declined",
        "decline_code": "generic_decline",
        "message": "Your card was declined.",
    },
    "tok_chargeDeclinedInsufficientFunds": {
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    },
    "tok_chargeDeclinedProcessingError": {
        "code": "processing_error",
        "message": "An error occurred while processing your card.",
    },
}


@dataclass
class FakeStripe:
    requests: list[httpx.Request] = field(default_factory=list)
    # Answer this many requests with 500 first (as a flaky network would).
    fail_next: int = 0
    answers: dict[str, httpx.Response] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    # New intents of succeeding tokens stay "processing" (as a bank debit would)
    # until a test says otherwise.
    hold: bool = False

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def forms(self, path: str) -> list[dict[str, str]]:
        return [
            dict(parse_qsl(request.content.decode()))
            for request in self.requests
            if request.url.path == path
        ]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return _error(401, "invalid_request_error", None, "Invalid API Key provided")
        if request.method == "GET":
            if self.fail_next:
                self.fail_next -= 1
                return _error(500, "api_error", None, "Something went wrong on Stripe's end.")
            return self._retrieve(request.url.path)
        if request.method != "POST":
            return _error(405, "invalid_request_error", None, "Method not allowed")
        if request.content:
            assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        key = request.headers.get("Idempotency-Key")
        assert key, "every POST carries an Idempotency-Key"
        if self.fail_next:
            self.fail_next -= 1
            return _error(500, "api_error", None, "Something went wrong on Stripe's end.")
        if key in self.answers:
            replay = self.answers[key]
            return httpx.Response(
                replay.status_code, content=replay.content, headers=replay.headers
            )
        form = dict(parse_qsl(request.content.decode()))
        if request.url.path == "/v1/payment_intents":
            answer = self._payment_intent(form)
        elif request.url.path == "/v1/refunds":
            answer = self._refund(form)
        elif request.url.path.endswith("/cancel"):
            intent_id = request.url.path.split("/")[3]
            if intent_id in self.intents:
                self.intents[intent_id]["status"] = "canceled"
            answer = httpx.Response(200, json={"id": intent_id, "status": "canceled"})
        else:
            answer = _error(404, "invalid_request_error", "resource_missing", "Unrecognized URL")
        self.answers[key] = answer
        return answer

    def _payment_intent(self, form: dict[str, str]) -> httpx.Response:
        assert form["confirm"] == "true"
        assert form["payment_method_types[0]"] == "card"
        token = form.get("payment_method_data[card][token]")
        if token is None:
            method = form["payment_method"]
            token = "tok_" + method.removeprefix("pm_card_")
        else:
            assert form["payment_method_data[type]"] == "card"
        intent_id = f"pi_{uuid.uuid4().hex[:24]}"
        metadata = {
            key[len("metadata[") : -1]: value
            for key, value in form.items()
            if key.startswith("metadata[")
        }
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": int(form["amount"]),
            "currency": form["currency"],
            "metadata": metadata,
        }
        self.intents[intent_id] = intent
        if token in ("tok_visa", "tok_mastercard"):
            intent["status"] = "processing" if self.hold else "succeeded"
            return httpx.Response(200, json=intent)
        if token == "tok_threeDSecure2Required":
            intent["status"] = "requires_action"
            return httpx.Response(200, json=intent)
        if token in _DECLINES:
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = {"type": "card_error", **_DECLINES[token]}
            error = {"type": "card_error", **_DECLINES[token], "payment_intent": intent}
            return httpx.Response(402, json={"error": error})
        return _error(
            400,
            "invalid_request_error",
            "resource_missing",
            f"No such token: '{token}'",
            param="payment_method_data[card][token]",
        )

    def _refund(self, form: dict[str, str]) -> httpx.Response:
        intent = self.intents.get(form["payment_intent"])
        if intent is None or intent.get("status") != "succeeded":
            return _error(400, "invalid_request_error", "charge_not_refundable", "Not refundable")
        refunded = intent.setdefault("refunded", 0)
        amount = int(form.get("amount", intent["amount"] - refunded))
        if amount > intent["amount"] - refunded:
            return _error(400, "invalid_request_error", "amount_too_large", "Too much")
        intent["refunded"] = refunded + amount
        refund = {
            "id": f"re_{uuid.uuid4().hex[:24]}",
            "object": "refund",
            "amount": amount,
            "payment_intent": form["payment_intent"],
            "status": "succeeded",
        }
        self.refunds[refund["id"]] = refund
        return httpx.Response(200, json=refund)

    def _retrieve(self, path: str) -> httpx.Response:
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v1", "payment_intents"]:
            kind, found = "payment_intent", self.intents.get(parts[2])
        elif len(parts) == 3 and parts[:2] == ["v1", "refunds"]:
            kind, found = "refund", self.refunds.get(parts[2])
        else:
            return _error(404, "invalid_request_error", None, "Unrecognized URL")
        if found is None:
            return _error(
                404, "invalid_request_error", "resource_missing", f"No such {kind}: '{parts[2]}'"
            )
        return httpx.Response(200, json=found)


def _error(
    status: int, kind: str, code: str | None, message: str, *, param: str | None = None
) -> httpx.Response:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return httpx.Response(status, json={"error": error})
