"""Where messages go: SMTP for email, providers' HTTP APIs for SMS and push, or files.

Each channel either returns (the provider took the message) or raises: a
:class:`PermanentFailure` when retrying cannot help, anything else when a later
try may succeed.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Sequence
from email import charset as email_charset
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
import orjson

from panthera.kernel.settings import Settings, SmtpSecurity


class PermanentFailure(Exception):
    """The provider refused the message for good (an address that does not exist...)."""


class EmailChannel(Protocol):
    async def send(self, message: Message) -> None:
        """Deliver one message or raise."""


class SmsProvider(Protocol):
    async def send_sms(self, *, to: str, body: str, message_id: str) -> None:
        """Hand one text message to the provider or raise."""


class PushProvider(Protocol):
    async def send_push(
        self, *, token: str, title: str, body: str, data: dict[str, str], message_id: str
    ) -> None:
        """Hand one push notification to the provider or raise."""


# SMTP's limit on a line, line ending excluded (RFC 5321 4.5.3.1.6).
_MAX_7BIT_LINE = 998


class _Compat32OneLine(Compat32):
    """compat32 writing a header that fits on its line as it is.

    compat32 passes every header through ``email.header.Header`` to fold it,
    which was most of the time spent writing a message out; for a printable
    ASCII value that fits on one line its result is that same line.
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (
            isinstance(value, str)
            and value.isascii()
            and value.isprintable()
            and len(name) + len(value) + 2 <= (self.max_line_length or 0)
        ):
            return f"{name}: {value}{self.linesep}"
        folded: str = super()._fold(name, value, sanitize)  # type: ignore[misc]
        return folded


# Headers kept on one line, as long as SMTP allows: a folded URL or id would
# come back from some parsers with the folding's whitespace in it.
_LEGACY = _Compat32OneLine(max_line_length=_MAX_7BIT_LINE)
_UTF8_QUOTED_PRINTABLE = email_charset.Charset("utf-8")
# Readable in a mail's source, unlike base64, and safe for any line length.
_UTF8_QUOTED_PRINTABLE.body_encoding = email_charset.QP


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    unsubscribe_url: str | None = None,
) -> Message:
    """A multipart/alternative email with a plain-text and an HTML body."""
    headers = {
        "From": sender,
        "To": to,
        "Subject": subject,
        "Date": formatdate(localtime=False, usegmt=True),
        # One id per delivery: a retried message is recognisably the same message.
        "Message-ID": f"<{message_id}@panthera.local>",
    }
    if unsubscribe_url:
        # RFC 8058 one-click unsubscribe, which mail clients show as a button.
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if not all(value.isascii() and value.isprintable() for value in headers.values()):
        # Words and addresses beyond ASCII need the encoding rules of the
        # header registry, which parses every header and is slow for it.
        return _encoded_message(headers, text, html)
    # ASCII headers are taken as they are: the legacy API stores and writes
    # them without parsing each into a structured header first.
    message = MIMEMultipart("alternative", boundary=_boundary_for(text, html), policy=_LEGACY)
    for name, value in headers.items():
        message[name] = value
    message.attach(_text_part(text, "plain"))
    message.attach(_text_part(html, "html"))
    return message


def _boundary_for(*bodies: str) -> str | None:
    """A random boundary the bodies do not contain; None leaves the choice to the generator.

    The generator's own draws a number and scans the whole message with a regular
    expression compiled for it, a fifth of writing a message out. ``=_`` cannot
    begin a line of quoted-printable, and a plain body is searched for it here.
    """
    boundary = f"=_{uuid.uuid4().hex}"
    return None if any(boundary in body for body in bodies) else boundary


def _text_part(body: str, subtype: str) -> MIMEText:
    if body.isascii() and all(len(line) <= _MAX_7BIT_LINE for line in body.splitlines()):
        return MIMEText(body, subtype, "us-ascii", policy=_LEGACY)
    return MIMEText(body, subtype, _UTF8_QUOTED_PRINTABLE, policy=_LEGACY)  # type: ignore[arg-type]


def _encoded_message(headers: dict[str, str], text: str, html: str) -> EmailMessage:
    message = EmailMessage()
    for name, value in headers.items():
        message[name] = value
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class FileOutbox:
    """Writes each message under a directory a developer can open; rewriting one is harmless.

    Email as ``<delivery id>.eml``, texts as ``.sms.json``, pushes as ``.push.json``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: Message) -> None:
        await asyncio.to_thread(self._write, self._eml_name(message), message.as_bytes())

    async def send_many(self, messages: Sequence[Message]) -> list[Exception | None]:
        """Write several messages; for each, None once written, else why not.

        One trip to a worker thread for the lot: the hand-off to the thread
        pool costs more than writing a small file.
        """
        files = [(self._eml_name(message), message.as_bytes()) for message in messages]
        return await asyncio.to_thread(self._write_all, files)

    @staticmethod
    def _eml_name(message: Message) -> str:
        return str(message["Message-ID"]).strip("<>").split("@")[0] + ".eml"

    def _write_all(self, files: list[tuple[str, bytes]]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        for name, content in files:
            try:
                self._write(name, content)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

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

    async def send(self, message: Message) -> None:
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
