"""Turning events into messages: render the template, log the delivery, hand it to the channel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import func, select

from panthera.kernel.db import UnitOfWork
from panthera.notifications.channels import EmailChannel, build_message
from panthera.notifications.models import Delivery

SUBJECTS = {
    "email_verification": "Confirm your email address",
    "password_reset": "Reset your password",
    "registration_attempted": "About your account",
}


@dataclass
class NotificationsDeps:
    email: EmailChannel
    templates: Environment
    sender: str
    base_url: str


def template_environment(overrides: Path | None = None) -> Environment:
    """The built-in templates, with a shop's own directory searched first."""
    paths = [str(overrides)] if overrides else []
    paths.append(str(Path(__file__).parent / "templates"))
    return Environment(
        loader=FileSystemLoader(paths),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
    )


async def send_email(
    deps: NotificationsDeps,
    uow: UnitOfWork,
    *,
    event_id: uuid.UUID,
    user_id: uuid.UUID | None,
    to: str,
    template: str,
    context: dict[str, Any],
) -> Delivery:
    """Render and send one email, and record it in the delivery log (same transaction)."""
    values = {**context, "base_url": deps.base_url}
    text = deps.templates.get_template(f"{template}.txt").render(values)
    html = deps.templates.get_template(f"{template}.html").render(values)
    # Derived from the event, so a redelivered event rewrites the same message.
    delivery_id = uuid.uuid5(event_id, template)
    subject = SUBJECTS[template]
    now = datetime.now(UTC)
    delivery = await uow.session.get(Delivery, delivery_id)
    if delivery is None:
        delivery = Delivery(
            id=delivery_id,
            event_id=event_id,
            user_id=user_id,
            channel="email",
            recipient=to,
            template=template,
            subject=subject,
            status="queued",
            attempts=0,
            created_at=now,
        )
        uow.session.add(delivery)
    delivery.attempts += 1
    message = build_message(
        sender=deps.sender,
        to=to,
        subject=subject,
        text=text,
        html=html,
        message_id=str(delivery_id),
    )
    await deps.email.send(message)
    delivery.status = "sent"
    delivery.sent_at = datetime.now(UTC)
    return delivery


async def list_deliveries(
    uow_factory: Any, *, limit: int, offset: int
) -> tuple[Sequence[Delivery], int]:
    """The delivery log, newest first."""
    async with uow_factory() as uow:
        total = (await uow.session.execute(select(func.count()).select_from(Delivery))).scalar_one()
        rows = (
            await uow.session.execute(
                select(Delivery).order_by(Delivery.created_at.desc()).limit(limit).offset(offset)
            )
        ).scalars()
        return list(rows), int(total)
