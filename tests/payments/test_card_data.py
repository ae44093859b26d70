"""Card numbers are refused at the door: never stored, never logged, never echoed."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from panthera.payments.cards import contains_card_number, luhn_valid
from tests.payments.conftest import PaymentsService

PANS = ("4242424242424242", "4000056655665556", "378282246310005", "5555555555554444")


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424242",
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        '{"number": "4111111111111111"}',
        "card 3782 822463 10005 exp",
        "6011111111111117",
    ],
)
def test_card_numbers_are_recognised(text: str) -> None:
    assert contains_card_number(text.encode())


@pytest.mark.parametrize(
    "text",
    [
        str(uuid.UUID("123e4567-e89b-12d3-a456-426614174000")),
        "order-2026-000123",
        "4242424242424241",  # fails the Luhn check
        "1700000000",  # a timestamp
        "424242424242",  # too short
        "19.99",
        "tok_visa",
    ],
)
def test_other_numbers_are_not(text: str) -> None:
    assert not contains_card_number(text.encode())


def test_no_order_id_looks_like_a_card_number() -> None:
    # One UUID in about 2,600 has groups of digits only that pass the checksum,
    # e.g. ...-3193-4050-8230-6...: an order id must never be refused as card data.
    digits_only = "8a1b2c3d-3193-4050-8230-6e5f4a3b2c1d"
    assert not contains_card_number(f'{{"orderId": "{digits_only}"}}'.encode())
    for _ in range(20_000):
        assert not contains_card_number(str(uuid.uuid4()).encode())
    # The same digits outside a UUID are still a card number.
    assert contains_card_number(b"4242-4242-4242-4242 with 8a1b2c3d-3193-4050-8230-6e5f4a3b2c1d")


def test_luhn() -> None:
    assert luhn_valid(b"79927398713")
    assert not luhn_valid(b"79927398710")


def database_bytes(payments: PaymentsService) -> bytes:
    path = Path(payments.settings.database_url_for("payments").split("///", 1)[1])
    return b"".join(
        candidate.read_bytes()
        for candidate in path.parent.glob(path.name + "*")
        if candidate.is_file()
    )


async def test_bodies_with_card_numbers_are_refused_and_kept_nowhere(
    payments: PaymentsService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user, admin = payments.caller(), payments.admin()
    paid = await payments.pay(user)
    attempts = [
        (
            "/payments",
            {"orderId": "o-1", "amount": "1.00", "currency": "USD", "paymentMethod": PANS[0]},
        ),
        (
            "/payments",
            {"orderId": PANS[1], "amount": "1.00", "currency": "USD", "paymentMethod": "tok_visa"},
        ),
        (
            "/payments",
            {
                "orderId": "o-2",
                "amount": "1.00",
                "currency": "USD",
                "paymentMethod": "tok_visa",
                "card": {"number": "3782 822463 10005", "cvc": "123"},
            },
        ),
        (f"/payments/{paid['paymentId']}/refunds", {"reason": f"card {PANS[3]} was stolen"}),
    ]
    for path, body in attempts:
        response = await payments.client.post(
            path, json=body, headers=(admin if "refunds" in path else user).with_key("pan-key")
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "card_data_refused"
        for pan in PANS:
            assert pan not in response.text
    internal = await payments.client.post(
        "/internal/payments",
        json={
            "orderId": "o-3",
            "userId": str(user.user_id),
            "amount": "1.00",
            "currency": "USD",
            "paymentMethod": "tok_visa",
            "note": "5555-5555-5555-4444",
        },
        headers=payments.internal_headers,
    )
    assert internal.status_code == 400
    assert await payments.payment_count() == 1
    stored = database_bytes(payments)
    assert uuid.UUID(paid["paymentId"]).hex.encode() in stored  # the file is the right one
    service_logs = " ".join(
        f"{record.getMessage()} {record.__dict__}"
        for record in caplog.records
        if record.name.startswith("panthera")
    )
    for pan in PANS:
        assert pan.encode() not in stored
        assert pan not in service_logs
    assert b"3782 822463 10005" not in stored


async def test_a_card_number_as_order_reference_in_a_path_is_refused(
    payments: PaymentsService,
) -> None:
    response = await payments.client.post(
        f"/internal/payments/{PANS[0]}/refund", headers=payments.internal_headers
    )
    assert response.status_code == 400
    assert await payments.payment_count() == 0
