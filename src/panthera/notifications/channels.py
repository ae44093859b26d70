"""Where messages go: SMTP for email, providers' HTTP APIs for SMS and push, or files.

Each channel either returns (the provider took the message) or raises: a
:class:`PermanentFailure` when retrying cannot help, anything else when a later
try may succeed.
"""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
import orjson

from panthera.kernel.settings import Settings, SmtpSecurity


class PermanentFailure(Exception):
    """The provider refused the message for good (an address that does not exist...)."""


class EmailChannel(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Deliver one message or raise."""


class SmsProvider(Protocol):
    async def send_sms(self, *, to: str, body: str, message_id: str) -> None:
        """Hand one text message to the provider or raise."""


class PushProvider(Protocol):
    async def send_push(
        self, *, token: str, title: str, body: str, data: dict[str, str], message_id: str
    ) -> None:
        """Hand one push notification to the provider or raise."""


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    unsubscribe_url: str | None = None,
) -> EmailMessage:
    """A multipart/alternative email with a plain-text and an HTML body."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # One id per delivery: a retried message is recognisably the same message.
    message["Message-ID"] = f"<{message_id}@panthera.local>"
    if unsubscribe_url:
        # RFC 8058 one-click unsubscribe, which mail clients show as a button.
        message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class FileOutbox:
    """Writes each message under a directory a developer can open; rewriting one is harmless.

    Email as ``<delivery id>.eml``, texts as ``.sms.json``, pushes as ``.push.json``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> None:
        name = str(message["Message-ID"]).strip("<>").split("@")[0]
        await asyncio.to_thread(self._write, f"{name}.eml", message.as_bytes())

    async def send_sms(self, *, to: str, body: str, message_id: str) -> None:
        document = {"to": to, "body": body}
        await asyncio.to_thread(self._write, f"{message_id}.sms.json", orjson.dumps(document))

    async def send_push(
        self, *, token: str, title: str, body: str, data: dict[str, str], message_id: str
    ) -> None:
        document = {"token": token, "title": title, "body": body, "data": data}
        await asyncio.to_thread(self._write, f"{message_id}.push.json", orjson.dumps(document))

    def _write(self, name: str, content: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / name
        partial = target.with_name(name + ".partial")
        partial.write_bytes(content)
        # A rename is atomic: a reader never sees half a message.
        partial.replace(target)


class SmtpEmail:
    """Sends through an SMTP relay, one connection per message.

    A message counts as sent only once the server has answered 250 to its DATA;
    a refused, dropped or timed-out connection raises and the message is retried.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: SmtpSecurity = SmtpSecurity.STARTTLS,
        username: str = "",
        password: str = "",
        timeout_seconds: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.timeout_seconds = timeout_seconds
        self.tls_context = tls_context

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpEmail:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value(),
            timeout_seconds=settings.smtp_timeout_seconds,
        )

    async def send(self, message: EmailMessage) -> None:
        options: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "timeout": self.timeout_seconds,
            "use_tls": self.security is SmtpSecurity.TLS,
            # Never fall back to plain text when STARTTLS was asked for.
            "start_tls": self.security is SmtpSecurity.STARTTLS,
        }
        if self.tls_context is not None:
            options["tls_context"] = self.tls_context
        if self.username:
            options["username"] = self.username
            options["password"] = self.password
        try:
            await aiosmtplib.send(message, **options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            if all(error.code >= 500 for error in exc.recipients):
                raise PermanentFailure(f"recipient refused: {exc.recipients[0].message}") from exc
            raise
        except aiosmtplib.SMTPDataError as exc:
            if exc.code >= 500:
                raise PermanentFailure(f"message refused: {exc.code} {exc.message}") from exc
            raise
