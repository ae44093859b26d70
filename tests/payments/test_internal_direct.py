"""The saga's payment route answers on its direct path exactly as FastAPI's endpoint does.

Each request is sent twice, once through the route (direct path first) and once through
FastAPI's endpoint alone, for orders (and idempotency keys) of the same length that
differ by one letter; a payment's timestamps are fixed, and its fresh ids are paired.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from panthera.kernel.http.direct import fastapi_only
from panthera.payments import service
from panthera.payments.schemas import InternalPaymentCreate
from tests.conftest import make_settings
from tests.direct_paths import (
    Answer,
    as_first,
    endpoint_calls,
    internal_token_headers,
    on_a_fixed_clock,
    reads_as_fastapi,
    route_of,
    stop_on_own_loop,
)
from tests.payments.conftest import PaymentsService, start_payments

PAYMENTS = "/internal/payments"
# Where a request's order goes (in its body and its idempotency key); each path has its own.
ORDER = "@ORDER@"
NOW = datetime(2031, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
USER = "5b7e2a4c-1d3f-4e6a-9b8c-7d6e5f4a3b2c"
MISSING = object()
CARD = "4242424242424242"


class _Payments:
    """A payments service of its own, on a loop of the test's own."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.service: PaymentsService = self.loop.run_until_complete(
            start_payments(make_settings(data_dir))
        )
        self.route = route_of(self.service.app, "POST", PAYMENTS)
        self.token = self.service.settings.internal_token.get_secret_value()
        self.numbers = itertools.count()

    def orders(self) -> tuple[str, str]:
        """Two fresh orders of the same length: the route's, and FastAPI's alone."""
        number = next(self.numbers)
        return f"oa{number:06d}", f"ob{number:06d}"

    def headers(
        self,
        auth: str = "good",
        content_type: str | None = "application/json",
        keys: tuple[str | bytes, ...] = (),
    ) -> list[tuple[str, str | bytes]]:
        headers = internal_token_headers(self.token, auth)
        if content_type is not None:
            headers.append(("content-type", content_type))
        headers.extend(("Idempotency-Key", key) for key in keys)
        return headers

    async def pay(self, body: bytes, headers: list[tuple[str, str | bytes]], order: str) -> Answer:
        def placed(value: str | bytes) -> str | bytes:
            if isinstance(value, bytes):
                return value.replace(ORDER.encode(), order.encode())
            return value.replace(ORDER, order)

        response = await self.service.client.post(
            PAYMENTS,
            content=placed(body),
            headers=[(name, placed(value)) for name, value in headers],
        )
        return Answer.of(response)

    async def steps(
        self, steps: list[tuple[bytes, list[tuple[str, str | bytes]]] | None]
    ) -> tuple[list[Answer], list[Answer], int]:
        """The answers to ``steps`` (a request, or None to let the provider's webhooks
        arrive) for one order through the route, then for another through FastAPI's
        endpoint alone (put as the route's answers), and how often the endpoint ran
        for the route."""
        ours, theirs = self.orders()
        routed: list[Answer] = []
        with endpoint_calls(self.route) as calls:
            for step in steps:
                if step is None:
                    await self.service.settle()
                else:
                    routed.append(await self.pay(*step, ours))
        endpoint: list[Answer] = []
        with fastapi_only(self.route):
            for step in steps:
                if step is None:
                    await self.service.settle()
                else:
                    endpoint.append(await self.pay(*step, theirs))
        assert await self.service.payment_count(order_reference=ours) == (
            await self.service.payment_count(order_reference=theirs)
        )
        return (
            routed,
            [as_first(a, b, {theirs: ours}) for a, b in zip(routed, endpoint, strict=True)],
            len(calls),
        )

    def close(self) -> None:
        stop_on_own_loop(self.loop, self.service.client, self.service.platform)


@pytest.fixture(scope="module")
def payments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Payments]:
    yield from on_a_fixed_clock(
        service, NOW, lambda: _Payments(tmp_path_factory.mktemp("internal-direct"))
    )


def _body(**changes: Any) -> dict[str, Any]:
    body = {
        "orderId": ORDER,
        "userId": USER,
        "amount": "10.00",
        "currency": "USD",
        "paymentMethod": "tok_visa",
        **changes,
    }
    return {name: value for name, value in body.items() if value is not MISSING}


def _encoded(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


_GOOD: dict[str, list[Any]] = {
    "amount": ["10.00", "0.01", "19.99", "7", "1234.5"],
    "currency": ["USD", "USD", "EUR"],
    "paymentMethod": [
        "tok_visa",
        "tok_visa",
        "pm_card_mastercard",
        "tok_chargeDeclined",
        "tok_chargeDeclinedInsufficientFunds",
        "tok_unknown",
    ],
}
# One thing wrong with a well-formed request, by what it spoils.
_FLAWS: dict[str, list[Any]] = {
    "orderId": ["", "bad order", 5, None, MISSING, CARD, ORDER + "-" + "x" * 92],
    "userId": ["nope", 5, None, MISSING, USER.upper(), USER.replace("-", "")],
    "amount": ["0", "0.00", "-1", "abc", 10, "1.2345", "10.005", MISSING],
    "currency": ["usd", "US", "JPY", 840, MISSING],
    "paymentMethod": [
        "card_123",
        f"tok_{CARD}",
        f"{CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}",
    ],
    "cardNumber": [CARD, "no"],
}
_KEYS: list[tuple[str | bytes, ...]] = [
    (),
    (),
    (),
    (f"order-payment:{ORDER}",),
    ("",),
    ("bad key",),
    ("k" * 256,),
    ("ключ".encode(),),
    (f"order-payment:{ORDER}", "bad key"),
    ("bad key", f"order-payment:{ORDER}"),
]


@st.composite
def _bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A request as the saga sends one, or with one thing wrong with it."""
    changes = {name: draw(st.sampled_from(values)) for name, values in _GOOD.items()}
    flaw = draw(st.sampled_from([*[None] * len(_FLAWS), *_FLAWS]))
    if flaw is not None:
        changes[flaw] = draw(st.sampled_from(_FLAWS[flaw]))
    return _body(**changes)


def _damaged(raw: bytes, damage: int) -> bytes:
    if damage == 1:
        return raw[: len(raw) // 2]
    if damage == 2:
        return raw + b"]"
    if damage == 3:
        return b"\xef\xbb\xbf" + raw
    if damage == 4:
        # A card number in broken JSON: FastAPI's parse error, not the refusal, answers.
        return raw[:-1] + f', "x": "{CARD}"'.encode()
    return raw


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=_bodies(),
    damage=st.sampled_from([0] * 12 + [1, 2, 3, 4]),
    content_type=st.sampled_from(
        ["application/json"] * 6 + ["application/json; charset=utf-8", "text/plain", None]
    ),
    auth=st.sampled_from(["good"] * 7 + ["missing", "wrong", "good-then-wrong", "wrong-then-good"]),
    keys=st.sampled_from(_KEYS),
)
def test_a_payment_gets_the_same_answer_on_both_paths(
    payments: _Payments,
    body: dict[str, Any],
    damage: int,
    content_type: str | None,
    auth: str,
    keys: tuple[str | bytes, ...],
) -> None:
    raw = _damaged(_encoded(body), damage)
    headers = payments.headers(auth, content_type, keys)
    (routed,), (endpoint,), calls = payments.loop.run_until_complete(
        payments.steps([(raw, headers)])
    )
    assert routed == endpoint, (raw, headers)
    # What FastAPI's json.loads and validation read, the direct path reads the same.
    readable = reads_as_fastapi(InternalPaymentCreate, raw.replace(ORDER.encode(), b"oa000000"))
    taken = auth in ("good", "good-then-wrong") and content_type == "application/json"
    if taken and readable is not None:
        assert calls == 0, f"{raw!r} was left to FastAPI"


def _step(key: str | None = None, **changes: Any) -> tuple[bytes, tuple[str, ...]]:
    return _encoded(_body(**changes)), () if key is None else (key,)


# Sequences of the saga's requests for one order (None: the provider's webhooks arrive),
# and what each request must be answered: its status, and the payment's status or the code.
_SEQUENCES: dict[str, tuple[list[Any], list[tuple[int, str]]]] = {
    "sent again, the same payment": (
        [_step(), _step()],
        [(201, "processing"), (201, "processing")],
    ),
    "sent again once it succeeded": (
        [_step(f"order-payment:{ORDER}"), None, _step(f"order-payment:{ORDER}")],
        [(201, "processing"), (201, "succeeded")],
    ),
    "the same key asking for more": (
        [_step(f"order-payment:{ORDER}"), _step(f"order-payment:{ORDER}", amount="10.01")],
        [(201, "processing"), (422, "idempotency_key_reused")],
    ),
    "the same key for another payer": (
        [_step(), _step(userId=str(uuid.UUID(int=7)))],
        [(201, "processing"), (422, "idempotency_key_reused")],
    ),
    "another key once it is paid": (
        [_step(), None, _step("again")],
        [(201, "processing"), (409, "order_already_paid")],
    ),
    "declined, then another key": (
        [_step("one", paymentMethod="tok_chargeDeclined"), None, _step("one"), _step("two")],
        [(201, "processing"), (201, "failed"), (201, "processing")],
    ),
    "an unknown token fails at once": (
        [_step(paymentMethod="tok_unknown")],
        [(201, "failed")],
    ),
    "an empty key is the default one": (
        [_step(""), _step()],
        [(201, "processing"), (201, "processing")],
    ),
    "a malformed key": ([_step("bad key")], [(400, "invalid_idempotency_key")]),
    "a zero amount": ([_step(amount="0.00")], [(400, "invalid_amount")]),
    "too many decimals": ([_step(amount="10.005")], [(400, "invalid_amount")]),
}


def _answered(answers: list[Answer]) -> list[tuple[int, str]]:
    return [
        (answer.status, answer.json()["status" if answer.status < 300 else "code"])
        for answer in answers
    ]


@pytest.mark.parametrize("name", sorted(_SEQUENCES))
def test_the_saga_s_payments_take_the_direct_path(payments: _Payments, name: str) -> None:
    requests, expected = _SEQUENCES[name]
    steps = [
        None if step is None else (step[0], payments.headers(keys=step[1])) for step in requests
    ]
    routed, endpoint, calls = payments.loop.run_until_complete(payments.steps(steps))
    assert calls == 0, "a request was left to FastAPI"
    assert _answered(routed) == expected
    assert routed == endpoint


@pytest.mark.parametrize(
    "card",
    [f"tok_{CARD}", CARD, f"{CARD[:4]}-{CARD[4:8]}-{CARD[8:12]}-{CARD[12:]}"],
)
def test_a_card_number_is_refused_on_both_paths(payments: _Payments, card: str) -> None:
    steps = [(_encoded(_body(paymentMethod=card)), payments.headers())]
    (routed,), (endpoint,), calls = payments.loop.run_until_complete(payments.steps(steps))
    assert calls == 0
    assert _answered([routed]) == [(400, "card_data_refused")]
    assert card.encode() not in routed.body
    assert routed == endpoint


def test_a_request_the_direct_path_declines_reaches_the_endpoint(payments: _Payments) -> None:
    steps = [(_encoded(_body()), payments.headers(content_type="application/json; charset=utf-8"))]
    (routed,), (endpoint,), calls = payments.loop.run_until_complete(payments.steps(steps))
    assert calls == 1
    assert routed.status == 201
    assert routed == endpoint
