"""Turning events into messages: the recipients directory, rendering and the delivery log.

A handler renders each message and queues it as a delivery row in the same
transaction as the event's inbox record, so one event yields its messages
exactly once; :mod:`panthera.notifications.sender` then hands them to the
channels and retries them.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)
from sqlalchemy import Table, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from panthera.kernel.db import UnitOfWork, WrittenBeforeCommit
from panthera.kernel.sql import Transaction, among, json_column
from panthera.notifications.channels import EmailChannel, PushProvider, SmsProvider
from panthera.notifications.errors import DeliveryInFlight, DeliveryNotFound, RecipientNotFound
from panthera.notifications.models import Channel, Delivery, DeliveryStatus, Recipient
from panthera.notifications.unsubscribe import UnsubscribeTokens


@dataclass
class NotificationsDeps:
    email: EmailChannel
    sms: SmsProvider
    push: PushProvider
    templates: Environment
    sender: str
    base_url: str
    unsubscribe: UnsubscribeTokens
    # Wakes the sender loop; called once a transaction that queued messages commits.
    wake: Callable[[], None] = field(default=lambda: None)
    # Given the messages (their rows) a transaction queued once it commits, to send
    # them at once: they are queued leased to this process for ``take_up_lease``, so
    # no other sender takes them, and no transaction of its own has to lease them.
    # Without it they are queued due now, for whichever sender polls first.
    take_up: Callable[[list[dict[str, Any]]], None] | None = None
    take_up_lease: timedelta = timedelta(0)


def template_environment(overrides: Path | None = None) -> Environment:
    """The built-in templates, with a shop's own directory searched first."""
    paths = [str(overrides)] if overrides else []
    paths.append(str(Path(__file__).parent / "templates"))
    return Environment(
        loader=FileSystemLoader(paths),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
    )


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    short: str | None


def render(templates: Environment, template: str, context: dict[str, Any]) -> Rendered:
    """A message's subject, text and HTML bodies, and its short form for SMS and push if any."""
    subject = templates.get_template(f"{template}.subject.txt").render(context)
    text = templates.get_template(f"{template}.txt").render(context)
    html = templates.get_template(f"{template}.html").render(context)
    short: str | None = None
    # Without a short form the message is email only.
    with contextlib.suppress(TemplateNotFound):
        short = templates.get_template(f"{template}.short.txt").render(context).strip()
    return Rendered(subject=" ".join(subject.split()), text=text, html=html, short=short)


# --- The recipients directory -------------------------------------------------------------


_RECIPIENTS = cast(Table, Recipient.__table__)


def _remember(insert: Any) -> Any:
    # A newer revision moves the addresses; an older event arriving late, or the same
    # one again, changes nothing. The choices (channels, tokens) are the user's own
    # and no event moves them.
    statement = insert(_RECIPIENTS)
    moved = {
        name: statement.excluded[name]
        for name in ("email", "first_name", "last_name", "phone_number", "revision", "updated_at")
    }
    return statement.on_conflict_do_update(
        index_elements=["user_id"],
        set_=moved,
        where=_RECIPIENTS.c.revision < statement.excluded.revision,
    ).returning(_RECIPIENTS.c.marketing_email)


# By whether the statements run on PostgreSQL.
_REMEMBER = {True: _remember(pg_insert), False: _remember(sqlite_insert)}
_TAKES_MARKETING = select(_RECIPIENTS.c.marketing_email).where(
    _RECIPIENTS.c.user_id == bindparam("user_id")
)
_FORGET = delete(_RECIPIENTS).where(_RECIPIENTS.c.user_id == bindparam("user_id"))


async def remember_recipient(
    tx: Transaction,
    *,
    user_id: uuid.UUID,
    email: str,
    first_name: str,
    last_name: str,
    phone_number: str | None,
    revision: int,
) -> bool:
    """Copy a user's addresses; a stale revision (an older event arriving late) changes
    nothing. Whether the user takes mail that is not transactional."""
    # One atomic statement: the registration and a first update applied at once by
    # two consumers end with the newer addresses, whichever runs first.
    values = {
        "user_id": user_id,
        "email": email,
        "first_name": first_name,
        "last_name": last_name,
        "phone_number": phone_number,
        "push_tokens": [],
        "revision": revision,
        "marketing_email": True,
        "sms_enabled": False,
        "push_enabled": False,
        "updated_at": datetime.now(UTC),
    }
    written = await tx.sql.fetch_one(_REMEMBER[tx.sql.postgres], values)
    if written is not None:
        return bool(written[0])
    return bool(await tx.sql.fetch_value(_TAKES_MARKETING, {"user_id": user_id}))


async def forget_recipient(tx: Transaction, user_id: uuid.UUID) -> None:
    """A deleted account leaves no address or choice behind."""
    await tx.sql.execute(_FORGET, {"user_id": user_id})


async def find_recipient(uow: UnitOfWork, user_id: uuid.UUID) -> Recipient | None:
    return await uow.session.get(Recipient, user_id)


# --- Queuing messages ---------------------------------------------------------------------


# Built once per dialect; a repeat of an event's message inserts nothing, and
# only the ids really inserted come back.
_QUEUE = {
    postgres: insert(cast(Table, Delivery.__table__))
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(Delivery.__table__.c.id)
    for postgres, insert in ((True, pg_insert), (False, sqlite_insert))
}


@dataclass(frozen=True)
class _Notice:
    """A message about a user's order, to address once the user's choices are read."""

    event_id: uuid.UUID
    user_id: uuid.UUID
    template: str
    context: dict[str, Any]
    data: dict[str, str] | None


class _Queued:
    """The messages a transaction queued, inserted together by ``write_queued``."""

    def __init__(self) -> None:
        self.deps: NotificationsDeps | None = None
        self.rows: dict[uuid.UUID, dict[str, Any]] = {}
        self.notices: list[_Notice] = []
        # The rows inserted, for the sender once the transaction commits.
        self.inserted: list[dict[str, Any]] = []

    def take_up_after_commit(self, tx: Transaction, rows: list[dict[str, Any]]) -> None:
        """Have ``rows`` (inserted deliveries) sent once ``tx`` commits."""
        assert self.deps is not None
        if not rows:
            return
        if not self.inserted:
            take_up, inserted = self.deps.take_up, self.inserted
            if take_up is None:
                tx.on_commit(self.deps.wake)
            else:
                tx.on_commit(lambda: take_up(inserted))
        self.inserted.extend(rows)


# Messages left unwritten would be lost for good with their event recorded as applied.
_QUEUED = WrittenBeforeCommit(
    "queued notifications", _Queued, lambda found: bool(found.rows or found.notices)
)


def _queued(deps: NotificationsDeps, tx: Transaction) -> _Queued:
    found = _QUEUED.of(tx)
    found.deps = deps
    return found


async def write_queued(tx: Transaction) -> None:
    """Insert the messages the transaction queued, in one statement, before it commits."""
    found = _QUEUED.gathered(tx)
    if found is None or found.deps is None:
        return
    deps = found.deps
    if found.notices:
        notices, found.notices = found.notices, []
        await _address(deps, tx, notices)
    if not found.rows:
        return
    rows, found.rows = found.rows, {}
    written = await tx.sql.fetch_many(_QUEUE[tx.sql.postgres], list(rows.values()))
    inserted = {row[0] for row in written}
    found.take_up_after_commit(
        tx, [row for delivery_id, row in rows.items() if delivery_id in inserted]
    )


async def queue(
    deps: NotificationsDeps,
    tx: Transaction,
    *,
    event_id: uuid.UUID,
    user_id: uuid.UUID | None,
    channel: Channel,
    to: str,
    template: str,
    rendered: Rendered,
    transactional: bool,
    unsubscribe_url: str | None = None,
    data: dict[str, str] | None = None,
) -> uuid.UUID:
    """Add one message to the delivery log, due now; idempotent per event, template and address.

    Its id is derived from the event: a repeat of the same event finds the same
    row, and queues nothing more. The row is written by ``write_queued``, which
    the transaction must await before it commits.
    """
    delivery_id = uuid.uuid5(event_id, f"{template}:{channel}:{to}")
    if channel is Channel.EMAIL:
        content: dict[str, Any] = {"text": rendered.text, "html": rendered.html}
        if unsubscribe_url:
            content["unsubscribe_url"] = unsubscribe_url
    else:
        content = {"text": rendered.short or rendered.subject, "data": data or {}}
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "id": delivery_id,
        "event_id": event_id,
        "user_id": user_id,
        "channel": channel.value,
        "recipient": to,
        "template": template,
        "subject": rendered.subject,
        "transactional": transactional,
        "content": content,
        "status": DeliveryStatus.QUEUED.value,
        "attempts": 0,
        "next_attempt_at": now if deps.take_up is None else now + deps.take_up_lease,
        "last_error": None,
        "created_at": now,
        "sent_at": None,
    }
    # Inserted with the transaction's other messages just before it commits:
    # one round trip for a batch of events rather than one per message.
    _queued(deps, tx).rows.setdefault(delivery_id, row)
    return delivery_id


async def send_email(
    deps: NotificationsDeps,
    tx: Transaction,
    *,
    event_id: uuid.UUID,
    user_id: uuid.UUID | None,
    to: str,
    template: str,
    context: dict[str, Any],
    transactional: bool = True,
) -> uuid.UUID:
    """Render one email and queue it for the sender; the delivery's id."""
    values = {**context, "base_url": deps.base_url}
    unsubscribe_url = None
    if not transactional and user_id is not None:
        token = deps.unsubscribe.issue(user_id)
        unsubscribe_url = f"{deps.base_url}/api/v1/notifications/unsubscribe?token={token}"
        values["unsubscribe_url"] = unsubscribe_url
    rendered = render(deps.templates, template, values)
    return await queue(
        deps,
        tx,
        event_id=event_id,
        user_id=user_id,
        channel=Channel.EMAIL,
        to=to,
        template=template,
        rendered=rendered,
        transactional=transactional,
        unsubscribe_url=unsubscribe_url,
    )


# What telling users takes, read without loading their directory entries as objects.
_ADDRESSES = {
    postgres: select(
        Recipient.user_id,
        Recipient.email,
        Recipient.first_name,
        Recipient.phone_number,
        Recipient.push_tokens,
        Recipient.sms_enabled,
        Recipient.push_enabled,
    ).where(among(_RECIPIENTS.c.user_id, "user_ids", postgres))
    for postgres in (True, False)
}


async def notify_user(
    deps: NotificationsDeps,
    tx: Transaction,
    *,
    event_id: uuid.UUID,
    user_id: uuid.UUID,
    template: str,
    context: dict[str, Any],
    data: dict[str, str] | None = None,
) -> None:
    """A transactional message about a user's order: email, plus SMS and push where opted in.

    The user's addresses and choices are read by ``write_queued`` for all the
    transaction's messages at once, as it commits, rather than one round trip per
    event. Without a directory entry then (an account deleted since, or an event from
    before this service knew the user) there is nobody to write to: nothing is queued.
    """
    _queued(deps, tx).notices.append(_Notice(event_id, user_id, template, context, data))


async def _address(deps: NotificationsDeps, tx: Transaction, notices: list[_Notice]) -> None:
    """Render and queue each notice for its user's channels, the users read in one go."""
    user_ids = list(dict.fromkeys(notice.user_id for notice in notices))
    found = await tx.sql.fetch(_ADDRESSES[tx.sql.postgres], {"user_ids": user_ids})
    recipients = {row.user_id: row for row in found}
    for notice in notices:
        recipient = recipients.get(notice.user_id)
        if recipient is None:
            continue
        values = {**notice.context, "base_url": deps.base_url, "first_name": recipient.first_name}
        rendered = render(deps.templates, notice.template, values)
        common: dict[str, Any] = {
            "event_id": notice.event_id,
            "user_id": notice.user_id,
            "template": notice.template,
            "rendered": rendered,
            "transactional": True,
        }
        await queue(deps, tx, channel=Channel.EMAIL, to=recipient.email, **common)
        if recipient.sms_enabled and recipient.phone_number:
            await queue(deps, tx, channel=Channel.SMS, to=recipient.phone_number, **common)
        if recipient.push_enabled:
            for token in json_column(recipient.push_tokens):
                await queue(deps, tx, channel=Channel.PUSH, to=token, data=notice.data, **common)


# --- Preferences --------------------------------------------------------------------------


async def update_preferences(
    uow: UnitOfWork, user_id: uuid.UUID, changes: dict[str, Any]
) -> Recipient:
    """Change a user's channel choices; only the fields given change."""
    recipient = await uow.session.get(Recipient, user_id, with_for_update=True)
    if recipient is None:
        raise RecipientNotFound()
    for name in ("marketing_email", "sms_enabled", "push_enabled"):
        if name in changes:
            setattr(recipient, name, bool(changes[name]))
    if "push_tokens" in changes:
        # Order kept, repeats dropped: one device, one message.
        recipient.push_tokens = list(dict.fromkeys(changes["push_tokens"]))
    recipient.updated_at = datetime.now(UTC)
    return recipient


async def unsubscribe(uow: UnitOfWork, user_id: uuid.UUID) -> None:
    """Stop the mail that is not transactional; an unknown user is already unsubscribed."""
    recipient = await uow.session.get(Recipient, user_id, with_for_update=True)
    if recipient is not None and recipient.marketing_email:
        recipient.marketing_email = False
        recipient.updated_at = datetime.now(UTC)


# --- The delivery log ---------------------------------------------------------------------


async def list_deliveries(
    uow: UnitOfWork,
    *,
    limit: int,
    offset: int,
    status: DeliveryStatus | None = None,
    user_id: uuid.UUID | None = None,
) -> tuple[Sequence[Delivery], int]:
    """The delivery log, newest first, optionally of one status or one user."""
    conditions = []
    if status is not None:
        conditions.append(Delivery.status == status.value)
    if user_id is not None:
        conditions.append(Delivery.user_id == user_id)
    total = (
        await uow.session.execute(select(func.count()).select_from(Delivery).where(*conditions))
    ).scalar_one()
    rows = (
        await uow.session.execute(
            select(Delivery)
            .where(*conditions)
            .order_by(Delivery.created_at.desc(), Delivery.id)
            .limit(limit)
            .offset(offset)
        )
    ).scalars()
    return list(rows), int(total)


async def resend(uow: UnitOfWork, delivery_id: uuid.UUID) -> Delivery:
    """Queue a message again, now, with a fresh budget of attempts."""
    delivery = await uow.session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise DeliveryNotFound()
    if delivery.status == DeliveryStatus.QUEUED.value:
        raise DeliveryInFlight()
    delivery.status = DeliveryStatus.QUEUED.value
    delivery.attempts = 0
    delivery.next_attempt_at = datetime.now(UTC)
    return delivery
