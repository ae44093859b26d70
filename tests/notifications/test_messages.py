"""Events in, messages out: exactly once each, on the channels each user chose."""

from __future__ import annotations

import uuid
from typing import Any

from panthera.orders.events import OrderCancelled, OrderConfirmed, OrderPlaced, OrderShipped
from panthera.payments.events import PaymentRefunded
from tests.conftest import Account, Platform, make_admin, register_and_login, unique_email
from tests.notifications.conftest import (
    NOW,
    MailServer,
    ProviderEndpoint,
    deliver_again,
    line,
    publish,
    send_due,
)


def _order(user_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    return {
        "order_id": uuid.uuid4(),
        "user_id": user_id,
        "total_amount": 17900,
        "currency": "USD",
        "revision": 2,
        "occurred_at": NOW,
        **changes,
    }


async def _deliveries(platform: Platform, admin: Account, **query: Any) -> list[dict[str, Any]]:
    response = await platform.client.get(
        "/api/v1/notifications/deliveries",
        params={"limit": 200, **query},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def test_sign_up_mails_a_welcome_and_a_verification_once_each(
    smtp_platform: Platform, smtp_server: MailServer
) -> None:
    account = await register_and_login(smtp_platform.client)
    await send_due(smtp_platform)
    subjects = sorted(message["Subject"] for message in smtp_server.to(account.email))
    assert subjects == ["Confirm your email address", "Welcome to Panthera, Test"]
    welcome = next(m for m in smtp_server.to(account.email) if "Welcome" in m["Subject"])
    # Optional mail offers one-click unsubscribing; transactional mail does not.
    assert "unsubscribe?token=" in welcome["List-Unsubscribe"]
    verification = next(m for m in smtp_server.to(account.email) if "Confirm" in m["Subject"])
    assert verification["List-Unsubscribe"] is None


async def test_order_events_mail_the_user_once_whatever_the_redeliveries(
    smtp_platform: Platform, smtp_server: MailServer, provider: ProviderEndpoint
) -> None:
    admin = await make_admin(smtp_platform)
    shopper = await register_and_login(smtp_platform.client)
    await send_due(smtp_platform)
    order = _order(shopper.id)
    items = (line(),)
    placed = await publish(
        smtp_platform,
        OrderPlaced(status="PENDING", items=items, shipping_address="1 Main St", **order),
        "orders",
    )
    confirmed = await publish(
        smtp_platform,
        OrderConfirmed(status="CONFIRMED", items=items, payment_id=uuid.uuid4(), **order),
        "orders",
    )
    shipped = await publish(
        smtp_platform,
        OrderShipped(status="SHIPPED", tracking_number="1Z999", carrier="UPS", **order),
        "orders",
    )
    for envelope in (placed, confirmed, shipped, confirmed, shipped):
        await deliver_again(smtp_platform, envelope)
    await send_due(smtp_platform)
    subjects = sorted(message["Subject"] for message in smtp_server.to(shopper.email))
    reference = str(order["order_id"]).replace("-", "")[:8].upper()
    assert subjects == [
        "Confirm your email address",
        f"Order {reference} is confirmed",
        f"Order {reference} is on its way",
        "Welcome to Panthera, Test",
    ]
    # Text and push are opt-in: none went out.
    assert provider.requests == []
    log = await _deliveries(smtp_platform, admin, userId=str(shopper.id))
    assert {row["status"] for row in log} == {"sent"}
    assert all(row["attempts"] == 1 for row in log)


async def test_texts_and_pushes_go_where_the_user_opted_in(
    smtp_platform: Platform, smtp_server: MailServer, provider: ProviderEndpoint
) -> None:
    shopper = await register_and_login(smtp_platform.client)
    await smtp_platform.settle()
    # The phone number comes from the users service's profile.
    updated = await smtp_platform.client.put(
        f"/api/v1/users/profiles/{shopper.id}",
        json={"phoneNumber": "+15551234567"},
        headers=shopper.headers,
    )
    assert updated.status_code == 200, updated.text
    await smtp_platform.settle()
    chosen = await smtp_platform.client.put(
        f"/api/v1/notifications/preferences/{shopper.id}",
        json={"sms": True, "push": True, "pushTokens": ["device-token-aaaa", "device-token-bbbb"]},
        headers=shopper.headers,
    )
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["phoneNumber"] == "+15551234567"
    order = _order(shopper.id)
    envelope = await publish(
        smtp_platform,
        OrderCancelled(
            status="CANCELLED",
            reason="out_of_stock",
            message=None,
            items=(line(),),
            **order,
        ),
        "orders",
    )
    await deliver_again(smtp_platform, envelope)
    await send_due(smtp_platform)
    texts = [r for r in provider.requests if r["kind"] == "sms"]
    pushes = [r for r in provider.requests if r["kind"] == "push"]
    assert len(texts) == 1
    assert len(pushes) == 2
    [text] = texts
    assert text["path"] == "/2010-04-01/Accounts/AC123/Messages.json"
    assert text["authorization"].startswith("Basic ")
    assert text["form"]["To"] == "+15551234567"
    assert text["form"]["From"] == "+15550000000"
    assert "cancelled: some items are out of stock" in text["form"]["Body"]
    assert {p["json"]["message"]["token"] for p in pushes} == {
        "device-token-aaaa",
        "device-token-bbbb",
    }
    assert pushes[0]["authorization"] == "Bearer fcm-token"
    assert pushes[0]["json"]["message"]["data"]["orderId"] == str(order["order_id"])
    assert [m["Subject"] for m in smtp_server.to(shopper.email) if "cancelled" in m["Subject"]]


async def test_a_refund_is_told_once_per_refund(
    smtp_platform: Platform, smtp_server: MailServer
) -> None:
    shopper = await register_and_login(smtp_platform.client)
    await smtp_platform.settle()
    refund = {
        "payment_id": uuid.uuid4(),
        "order_reference": str(uuid.uuid4()),
        "user_id": shopper.id,
        "amount": 17900,
        "currency": "USD",
        "provider": "test",
        "occurred_at": NOW,
        "amount_refunded": 17900,
        "fully_refunded": True,
        "reason": "requested_by_customer",
    }
    first = await publish(
        smtp_platform,
        PaymentRefunded(refund_id=uuid.uuid4(), refund_amount=17900, revision=3, **refund),
        "payments",
    )
    await deliver_again(smtp_platform, first)
    await send_due(smtp_platform)
    refunds = [m for m in smtp_server.to(shopper.email) if "Refund" in m["Subject"]]
    assert [m["Subject"] for m in refunds] == [
        f"Refund of 179.00 USD for order {refund['order_reference'].replace('-', '')[:8].upper()}"
    ]


async def test_unsubscribing_stops_optional_mail_but_not_order_mail(
    smtp_platform: Platform, smtp_server: MailServer
) -> None:
    shopper = await register_and_login(smtp_platform.client)
    await send_due(smtp_platform)
    welcome = next(m for m in smtp_server.to(shopper.email) if "Welcome" in m["Subject"])
    link = welcome["List-Unsubscribe"].strip("<>")
    token = link.split("token=", 1)[1]
    # The one-click POST a mail client sends, through the gateway, without signing in.
    response = await smtp_platform.client.post(
        f"/api/v1/notifications/unsubscribe?token={token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    preferences = await smtp_platform.client.get(
        f"/api/v1/notifications/preferences/{shopper.id}", headers=shopper.headers
    )
    assert preferences.json()["marketingEmail"] is False
    # A forged or altered token is refused in the platform's error shape.
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    refused = await smtp_platform.client.get(f"/api/v1/notifications/unsubscribe?token={forged}")
    assert refused.status_code == 400
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "invalid_unsubscribe_token"
    # Transactional mail still goes.
    await publish(
        smtp_platform,
        OrderConfirmed(status="CONFIRMED", items=(line(),), payment_id=None, **_order(shopper.id)),
        "orders",
    )
    await send_due(smtp_platform)
    assert any("confirmed" in m["Subject"] for m in smtp_server.to(shopper.email))


async def test_preferences_belong_to_their_user(smtp_platform: Platform) -> None:
    alice = await register_and_login(smtp_platform.client)
    bob = await register_and_login(smtp_platform.client)
    await smtp_platform.settle()
    path = f"/api/v1/notifications/preferences/{bob.id}"
    assert (await smtp_platform.client.get(path, headers=alice.headers)).status_code == 404
    changed = await smtp_platform.client.put(path, json={"sms": True}, headers=alice.headers)
    assert changed.status_code == 404
    mine = await smtp_platform.client.get(path, headers=bob.headers)
    assert mine.status_code == 200
    assert mine.json()["sms"] is False
    extra = await smtp_platform.client.put(path, json={"email": "x@y.z"}, headers=bob.headers)
    assert extra.status_code == 400


async def test_a_deleted_account_leaves_no_recipient_and_gets_no_mail(
    smtp_platform: Platform, smtp_server: MailServer
) -> None:
    admin = await make_admin(smtp_platform)
    shopper = await register_and_login(smtp_platform.client, email=unique_email("gone"))
    await send_due(smtp_platform)
    before = len(smtp_server.to(shopper.email))
    deleted = await smtp_platform.client.delete(
        f"/api/v1/users/profiles/{shopper.id}", headers=admin.headers
    )
    assert deleted.status_code in {200, 204}, deleted.text
    await smtp_platform.settle()
    await publish(
        smtp_platform,
        OrderConfirmed(status="CONFIRMED", items=(line(),), payment_id=None, **_order(shopper.id)),
        "orders",
    )
    await send_due(smtp_platform)
    assert len(smtp_server.to(shopper.email)) == before
    gone = await smtp_platform.client.get(
        f"/api/v1/notifications/preferences/{shopper.id}", headers=admin.headers
    )
    assert gone.status_code == 404
