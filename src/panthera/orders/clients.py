"""The orders service's calls to the catalog and the payments service.

Every call the saga makes is idempotent on the other side, keyed by the order
id, so a call whose answer was lost (a timeout, a crash) is simply made again.
Failures come in two kinds: ``Unavailable`` (no answer, or 5xx: try again
later) and ``Refused`` (a 4xx with the platform's problem code: an answer).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from panthera.kernel.http.client import CallFailed, ServiceCaller, ServiceDirectory


class Unavailable(Exception):
    """The other service did not answer usefully; the same call may be made again."""


class Refused(Exception):
    """The other service answered no, with a problem code."""

    def __init__(self, status: int, code: str, detail: str | None) -> None:
        super().__init__(f"{status} {code}: {detail or ''}")
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class QuotedLine:
    product_id: uuid.UUID
    variant_id: uuid.UUID
    sku: str
    name: str
    category_id: uuid.UUID | None
    quantity: int
    unit_price: int
    currency: str


@dataclass(frozen=True)
class Quote:
    lines: list[QuotedLine]
    unknown: list[uuid.UUID]


@dataclass(frozen=True)
class Reservation:
    held: bool
    reason: str | None
    expires_at: datetime | None


@dataclass(frozen=True)
class PaymentState:
    payment_id: uuid.UUID
    status: str
    failure_code: str | None
    revision: int
    amount_refunded: str


def _payment_state(body: dict[str, Any]) -> PaymentState:
    return PaymentState(
        payment_id=uuid.UUID(body["paymentId"]),
        status=body["status"],
        failure_code=body.get("failureCode"),
        revision=int(body["revision"]),
        amount_refunded=body["amountRefunded"],
    )


async def _call(caller: ServiceCaller, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    try:
        answer = await caller.request(method, path, **kwargs)
    except CallFailed as exc:
        raise Unavailable(f"{method} {path}: {exc}") from exc
    if answer.status >= 500:
        raise Unavailable(f"{method} {path}: {answer.status}")
    if answer.status >= 400:
        try:
            problem = orjson.loads(answer.body)
        except ValueError:
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        raise Refused(
            answer.status,
            str(problem.get("code", "refused")),
            problem.get("detail") if isinstance(problem.get("detail"), str) else None,
        )
    if answer.status == 204 or not answer.body:
        return {}
    body: dict[str, Any] = orjson.loads(answer.body)
    return body


class CatalogClient:
    def __init__(self, directory: ServiceDirectory) -> None:
        self._directory = directory

    @property
    def _client(self) -> ServiceCaller:
        return self._directory.caller("catalog")

    async def quote(self, lines: list[tuple[uuid.UUID, uuid.UUID | None, int]]) -> Quote:
        """Today's price of (product, variant or None, quantity) lines."""
        body = await _call(
            self._client,
            "POST",
            "/internal/quotes",
            json={
                "lines": [
                    {"variantId": str(v), "quantity": q}
                    if v is not None
                    else {"productId": str(p), "quantity": q}
                    for p, v, q in lines
                ]
            },
        )
        return Quote(
            lines=[
                QuotedLine(
                    product_id=uuid.UUID(line["productId"]),
                    variant_id=uuid.UUID(line["variantId"]),
                    sku=line["sku"],
                    name=line["name"],
                    category_id=uuid.UUID(line["categoryId"]) if line["categoryId"] else None,
                    quantity=int(line["quantity"]),
                    unit_price=int(line["unitPriceAmount"]),
                    currency=line["currency"],
                )
                for line in body["lines"]
            ],
            unknown=[uuid.UUID(found) for found in body["unknown"]],
        )

    async def reserve(
        self, reference: str, lines: list[tuple[uuid.UUID, int]], ttl_seconds: int
    ) -> Reservation:
        body = await _call(
            self._client,
            "POST",
            "/internal/reservations",
            json={
                "reference": reference,
                "lines": [{"variantId": str(v), "quantity": q} for v, q in lines],
                "ttlSeconds": ttl_seconds,
            },
        )
        if body["status"] == "rejected":
            return Reservation(held=False, reason=body.get("reason"), expires_at=None)
        expires = body.get("expiresAt")
        return Reservation(
            held=body["status"] in ("active", "committed"),
            reason=None if body["status"] in ("active", "committed") else body["status"],
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )

    async def commit(self, reference: str) -> None:
        await _call(self._client, "POST", f"/internal/reservations/{reference}/commit")

    async def call_off(self, reference: str, reason: str) -> str:
        body = await _call(
            self._client,
            "POST",
            f"/internal/reservations/{reference}/call-off",
            params={"reason": reason},
        )
        return str(body["status"])


class PaymentsClient:
    def __init__(self, directory: ServiceDirectory) -> None:
        self._directory = directory

    @property
    def _client(self) -> ServiceCaller:
        return self._directory.caller("payments")

    async def pay(
        self, *, order_id: uuid.UUID, user_id: uuid.UUID, amount: str, currency: str, token: str
    ) -> PaymentState:
        body = await _call(
            self._client,
            "POST",
            "/internal/payments",
            json={
                "orderId": str(order_id),
                "userId": str(user_id),
                "amount": amount,
                "currency": currency,
                "paymentMethod": token,
            },
            headers={"Idempotency-Key": f"order-payment:{order_id}"},
        )
        return _payment_state(body)

    async def payment_of(self, order_id: uuid.UUID) -> PaymentState | None:
        try:
            body = await _call(self._client, "GET", f"/internal/payments/{order_id}")
        except Refused as exc:
            if exc.status == 404:
                return None
            raise
        return _payment_state(body)

    async def refund(
        self, order_id: uuid.UUID, *, key: str, reason: str, amount: str | None = None
    ) -> PaymentState | None:
        """Refund ``amount`` (or all that is left); None when the order has no payment."""
        payload: dict[str, Any] = {"reason": reason}
        if amount is not None:
            payload["amount"] = amount
        try:
            body = await _call(
                self._client,
                "POST",
                f"/internal/payments/{order_id}/refund",
                json=payload,
                headers={"Idempotency-Key": key},
            )
        except Refused as exc:
            if exc.status == 404:
                return None
            raise
        return _payment_state(body)
