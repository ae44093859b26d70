"""Where messages go. Embedded: ``.eml`` files a developer can open; SMTP comes with its adapter."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Protocol


class EmailChannel(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Deliver one message or raise."""


def build_message(
    *, sender: str, to: str, subject: str, text: str, html: str, message_id: str
) -> EmailMessage:
    """A multipart/alternative email with a plain-text and an HTML body."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # One id per delivery: a redelivered event produces the same message, not a second one.
    message["Message-ID"] = f"<{message_id}@panthera.local>"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class FileOutbox:
    """Writes each message as ``<dir>/<delivery id>.eml``; rewriting one is harmless."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._write, message)

    def _write(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = str(message["Message-ID"]).strip("<>").split("@")[0]
        target = self.directory / f"{name}.eml"
        partial = target.with_suffix(".eml.partial")
        partial.write_bytes(message.as_bytes())
        # A rename is atomic: a reader never sees half a message.
        partial.replace(target)
