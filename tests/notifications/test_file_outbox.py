"""The file outbox takes a batch of mail in one go, each message with its own outcome."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest

from panthera.notifications import channels
from panthera.notifications.channels import FileOutbox, build_message
from panthera.notifications.sender import DeliverySender, Outgoing, RetryPolicy
from panthera.notifications.service import NotificationsDeps, template_environment
from panthera.notifications.unsubscribe import UnsubscribeTokens


def _mail(message_id: str) -> Any:
    return build_message(
        sender="shop@example.com",
        to="ada@example.com",
        subject=f"Order {message_id}",
        text="Thanks",
        html="<p>Thanks</p>",
        message_id=message_id,
    )


async def test_send_many_writes_each_message_and_reports_each_failure(tmp_path: Path) -> None:
    outbox = FileOutbox(tmp_path)
    # A directory where the second message's file should go: that write fails alone.
    (tmp_path / "second.eml").mkdir()

    outcomes = await outbox.send_many([_mail("first"), _mail("second"), _mail("third")])

    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], OSError)
    for name in ("first", "third"):
        written = message_from_bytes((tmp_path / f"{name}.eml").read_bytes())
        assert written["Subject"] == f"Order {name}"


async def test_the_sender_hands_a_batch_of_mail_over_together(tmp_path: Path) -> None:
    outbox = FileOutbox(tmp_path)
    handed: list[int] = []
    send_many = outbox.send_many

    async def counting(messages: Any) -> list[Exception | None]:
        handed.append(len(messages))
        return await send_many(messages)

    outbox.send_many = counting  # type: ignore[method-assign]
    deps = NotificationsDeps(
        email=outbox,
        sms=outbox,
        push=outbox,
        templates=template_environment(),
        sender="shop@example.com",
        base_url="http://shop.test",
        unsubscribe=UnsubscribeTokens(b"key"),
    )
    sender = DeliverySender(
        transactions=lambda: None,  # type: ignore[arg-type,return-value]
        deps=deps,
        policy=RetryPolicy(),
        skip_locked=False,
    )
    now = datetime.now(UTC)

    def outgoing(channel: str, content: dict[str, Any]) -> Outgoing:
        return Outgoing(
            id=uuid.uuid4(),
            channel=channel,
            recipient="ada@example.com",
            subject="Your order",
            content=content,
            attempts=0,
            created_at=now,
            lease_until=now + timedelta(minutes=1),
        )

    mails = [outgoing("email", {"text": "t", "html": "<p>h</p>"}) for _ in range(3)]
    broken = outgoing("email", {"text": "no html"})
    text = outgoing("sms", {"text": "t", "data": {}})

    outcomes = await sender._email_together([*mails, broken, text])

    assert handed == [3]
    assert {delivery.id for delivery in mails} <= set(outcomes)
    assert all(outcomes[delivery.id] is None for delivery in mails)
    # A message that cannot be built fails on its own; other channels are left out.
    assert isinstance(outcomes[broken.id], KeyError)
    assert text.id not in outcomes
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        f"{delivery.id}.eml" for delivery in mails
    )


def test_a_message_is_written_as_the_email_package_would_write_it() -> None:
    stock = email_policy.compat32.clone(max_line_length=998)
    for subject in ("Your order  ABCD1234; shipped", " padded ", "x" * 1200):
        message = build_message(
            sender="Shop <shop@example.com>",
            to="ada@example.com",
            subject=subject,
            text="Thanks\n",
            html="<p>Thanks</p>\n",
            message_id=str(uuid.uuid4()),
            unsubscribe_url="https://shop.example/unsubscribe?token=a.b-c",
        )
        # Header lines that fit are written as they are, the long one folded.
        assert message.as_bytes() == message.as_bytes(policy=stock)


def test_the_boundary_is_one_no_body_contains(monkeypatch: pytest.MonkeyPatch) -> None:
    """A boundary the bodies happen to contain is left to the email package to choose."""
    taken = uuid.UUID("00000000-0000-4000-8000-000000000001")
    monkeypatch.setattr(channels.uuid, "uuid4", lambda: taken)
    plain = build_message(
        sender="shop@example.com",
        to="ada@example.com",
        subject="Order",
        text="Thanks\n",
        html="<p>Thanks</p>\n",
        message_id="one",
    )
    assert plain.get_boundary() == f"=_{taken.hex}"
    quoting = build_message(
        sender="shop@example.com",
        to="ada@example.com",
        subject="Order",
        text=f"A line that quotes --=_{taken.hex} as it is\n",
        html="<p>Thanks</p>\n",
        message_id="two",
    )
    written = quoting.as_bytes()
    boundary = quoting.get_boundary()
    assert boundary is not None
    assert boundary != f"=_{taken.hex}"
    parsed = message_from_bytes(written)
    parts = [part.get_payload(decode=True) for part in parsed.walk() if not part.is_multipart()]
    assert parts == [f"A line that quotes --=_{taken.hex} as it is\n".encode(), b"<p>Thanks</p>\n"]
