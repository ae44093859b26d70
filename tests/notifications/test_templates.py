"""Every template renders with realistic data, and a shop's own directory overrides them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from panthera.notifications.handlers import (
    TEMPLATES,
    _cancelled_context,
    _order_context,
    _refund_context,
    _shipped_context,
    money,
)
from panthera.notifications.service import render, template_environment
from panthera.orders.events import OrderCancelled, OrderConfirmed, OrderDelivered, OrderShipped
from panthera.payments.events import PaymentRefunded
from tests.notifications.conftest import NOW, line

ORDER_ID = uuid.UUID("5f1c2a34-9b7e-4d2c-8a11-0c4b6e7d9f20")
USER_ID = uuid.uuid4()
BASE = {"base_url": "https://shop.example", "first_name": "Ada"}
ITEMS = (line("Trail running shoe", 2, 8950), line("Merino socks & liners", 3, 1200))
ORDER = {
    "order_id": ORDER_ID,
    "user_id": USER_ID,
    "total_amount": 21500,
    "currency": "EUR",
    "revision": 3,
    "occurred_at": NOW,
}


def _contexts() -> dict[str, dict[str, Any]]:
    link = {
        "first_name": "Ada",
        "token": "tok_" + "x" * 40,
        "expires_at": datetime(2026, 11, 22, 14, 30, tzinfo=UTC),
    }
    return {
        "welcome": {
            "unsubscribe_url": "https://shop.example/api/v1/notifications/unsubscribe?token=abc"
        },
        "email_verification": link,
        "password_reset": link,
        "registration_attempted": {},
        "order_confirmed": _order_context(
            OrderConfirmed(status="CONFIRMED", items=ITEMS, payment_id=uuid.uuid4(), **ORDER)
        ),
        "order_shipped": _shipped_context(
            OrderShipped(
                status="SHIPPED", tracking_number="1Z999AA10123456784", carrier="UPS", **ORDER
            )
        ),
        "order_delivered": _order_context(OrderDelivered(status="DELIVERED", **ORDER)),
        "order_cancelled": _cancelled_context(
            OrderCancelled(
                status="CANCELLED", reason="card_declined", message=None, items=ITEMS, **ORDER
            )
        ),
        "refund_issued": _refund_context(
            PaymentRefunded(
                payment_id=uuid.uuid4(),
                order_reference=str(ORDER_ID),
                user_id=USER_ID,
                amount=21500,
                currency="EUR",
                provider="test",
                revision=2,
                occurred_at=NOW,
                refund_id=uuid.uuid4(),
                refund_amount=8950,
                amount_refunded=8950,
                fully_refunded=False,
                reason="requested_by_customer",
            )
        ),
    }


EXPECTED = {
    "welcome": ["Welcome to Panthera, Ada", "unsubscribe?token=abc"],
    "email_verification": ["/account/verify-email?token=tok_"],
    "password_reset": ["/account/reset-password?token=tok_"],
    "registration_attempted": ["/account/forgot-password"],
    "order_confirmed": ["5F1C2A34", "Trail running shoe", "179.00 EUR", "215.00 EUR"],
    "order_shipped": ["5F1C2A34", "1Z999AA10123456784", "UPS"],
    "order_delivered": ["5F1C2A34", "delivered"],
    "order_cancelled": ["5F1C2A34", "the card was declined", "215.00 EUR"],
    "refund_issued": ["89.50 EUR", "5F1C2A34", "215.00 EUR"],
}


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_renders_with_realistic_data(template: str) -> None:
    rendered = render(template_environment(), template, {**BASE, **_contexts()[template]})
    assert rendered.subject
    assert "\n" not in rendered.subject
    assert "{{" not in rendered.text + rendered.html
    for fragment in EXPECTED[template]:
        assert fragment in rendered.subject + rendered.text, (template, fragment)
    assert rendered.html.lstrip().startswith("<!doctype html>")
    assert "Hello Ada" in rendered.text
    assert "Hello Ada" in rendered.html
    if template.startswith(("order_", "refund_")):
        assert rendered.short
        assert len(rendered.short) <= 160
    # HTML escapes what the data says; text keeps it as it is.
    if template in {"order_confirmed", "order_cancelled"}:
        assert "Merino socks &amp; liners" in rendered.html
        assert "Merino socks & liners" in rendered.text


def test_optional_mail_carries_the_unsubscribe_link_in_both_bodies() -> None:
    rendered = render(template_environment(), "welcome", {**BASE, **_contexts()["welcome"]})
    assert "unsubscribe?token=abc" in rendered.text
    assert "unsubscribe?token=abc" in rendered.html


def test_a_shops_directory_overrides_one_template_and_keeps_the_others(tmp_path: Path) -> None:
    (tmp_path / "order_shipped.subject.txt").write_text("Your parcel {{ order_reference }} left")
    (tmp_path / "_layout.html").write_text(
        "<!doctype html><html><body class='brand'>{% block content %}{% endblock %}</body></html>"
    )
    environment = template_environment(tmp_path)
    context = {**BASE, **_contexts()["order_shipped"]}
    rendered = render(environment, "order_shipped", context)
    assert rendered.subject == "Your parcel 5F1C2A34 left"
    assert "class='brand'" in rendered.html
    assert "1Z999AA10123456784" in rendered.text  # the built-in body still


def test_amounts_are_exact_and_unknown_currencies_do_not_break_a_message() -> None:
    assert money(1999, "USD") == "19.99 USD"
    assert money(1500, "JPY") == "1500 JPY"
    assert money(1500, "XXX").startswith("1500 XXX")
