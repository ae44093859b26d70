"""The orders service's calls to the catalog and the payments service.

Every call the saga makes is idempotent on the other side, keyed by the order
id, so a call whose answer was lost (a timeout, a crash) is simply made again.
Failures come in two kinds: ``Unavailable`` (no answer, or 5xx: try again
later) and ``Refused`` (a 4xx with the platform's problem code: an answer).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    # What is held, priced: the lines of an order placed with this reservation.
    lines: list[QuotedLine] = field(default_factory=list)
    # A rejection's lines that name nothing that can be ordered.
    unknown: list[uuid.UUID] = field(default_factory=list)


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


def _quoted_line(line: dict[str, Any], currency: str) -> QuotedLine:
    return QuotedLine(
        product_id=uuid.UUID(line["productId"]),
        variant_id=uuid.UUID(line["variantId"]),
        sku=line["sku"],
        name=line["name"],
        category_id=uuid.UUID(line["categoryId"]) if line["categoryId"] else None,
        quantity=int(line["quantity"]),
        unit_price=int(line["unitPriceAmount"]),
        currency=currency,
    )


def _line(product_id: uuid.UUID | None, variant_id: uuid.UUID | None, quantity: int) -> Any:
    if variant_id is not None:
        return {"variantId": str(variant_id), "quantity": quantity}
    return {"productId": str(product_id), "quantity": quantity}


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
            json={"lines": [_line(p, v, q) for p, v, q in lines]},
        )
        return Quote(
            lines=[_quoted_line(line, line["currency"]) for line in body["lines"]],
            unknown=[uuid.UUID(found) for found in body["unknown"]],
        )

    async def reserve(
        self,
        reference: str,
        lines: Sequence[tuple[uuid.UUID | None, uuid.UUID | None, int]],
        ttl_seconds: int,
    ) -> Reservation:
        """Hold (product, variant or None, quantity) lines for ``reference``, all or none,
        at today's prices."""
        body = await _call(
            self._client,
            "POST",
            "/internal/reservations",
            json={
                "reference": reference,
                "lines": [_line(p, v, q) for p, v, q in lines],
                "ttlSeconds": ttl_seconds,
            },
        )
        if body["status"] == "rejected":
            return Reservation(
                held=False,
                reason=body.get("reason"),
                expires_at=None,
                unknown=[
                    uuid.UUID(found)
                    for problem in body.get("problems", [])
                    if body.get("reason") == "unknown_product"
                    and problem["available"] == 0
                    and (found := problem["variantId"] or problem["productId"])
                ],
            )
        expires = body.get("expiresAt")
        held = body["status"] in ("active", "committed")
        currency = body.get("currency") or ""
        return Reservation(
            held=held,
            reason=None if held else body["status"],
            expires_at=datetime.fromisoformat(expires) if expires else None,
            lines=[_quoted_line(line, currency) for line in body.get("lines", [])],
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
