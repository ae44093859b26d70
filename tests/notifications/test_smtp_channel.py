"""The SMTP channel against a real local SMTP server: auth, STARTTLS and the failures."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from panthera.kernel.settings import SmtpSecurity
from panthera.notifications.channels import SmtpEmail, build_message
from tests.notifications.conftest import MailServer, _Handler, free_port


def _message(to: str = "ada@example.com") -> Message:
    return build_message(
        sender="Shop <no-reply@shop.example>",
        to=to,
        subject="Order 5F1C2A34 is confirmed",
        text="Thank you",
        html="<p>Thank you</p>",
        message_id=str(uuid.uuid4()),
    )


async def test_sends_with_login(smtp_server: MailServer) -> None:
    channel = SmtpEmail(
        host="127.0.0.1",
        port=smtp_server.port,
        security=SmtpSecurity.NONE,
        username="shop",
        password="s3cret-password",
    )
    await channel.send(_message())
    assert smtp_server.logins == ["shop"]
    [received] = smtp_server.to("ada@example.com")
    assert received["Subject"] == "Order 5F1C2A34 is confirmed"
    assert received.get_body(preferencelist=("plain",)).get_content().strip() == "Thank you"


async def test_a_wrong_password_is_an_error_to_retry(smtp_server: MailServer) -> None:
    channel = SmtpEmail(
        host="127.0.0.1",
        port=smtp_server.port,
        security=SmtpSecurity.NONE,
        username="shop",
        password="wrong",
    )
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await channel.send(_message())
    assert smtp_server.received == []


async def test_a_refused_connection_raises() -> None:
    channel = SmtpEmail(host="127.0.0.1", port=free_port(), security=SmtpSecurity.NONE)
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await channel.send(_message())


async def test_a_dropped_connection_raises(smtp_server: MailServer) -> None:
    smtp_server.failures.append("drop")
    channel = SmtpEmail(host="127.0.0.1", port=smtp_server.port, security=SmtpSecurity.NONE)
    with pytest.raises(aiosmtplib.SMTPException):
        await channel.send(_message())
    assert smtp_server.received == []


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def starttls_server(tls_files: tuple[Path, Path]) -> Iterator[MailServer]:
    """A server that refuses mail until the client has upgraded with STARTTLS."""
    cert_file, key_file = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    server = MailServer(port=free_port())
    controller = Controller(
        _Handler(server),
        hostname="localhost",
        port=server.port,
        tls_context=server_context,
        require_starttls=True,
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


async def test_starttls_upgrades_before_sending(
    starttls_server: MailServer, tls_files: tuple[Path, Path]
) -> None:
    trusted = ssl.create_default_context(cafile=str(tls_files[0]))
    channel = SmtpEmail(
        host="localhost",
        port=starttls_server.port,
        security=SmtpSecurity.STARTTLS,
        tls_context=trusted,
    )
    await channel.send(_message())
    assert len(starttls_server.received) == 1


async def test_starttls_refuses_a_certificate_it_cannot_trust(
    starttls_server: MailServer,
) -> None:
    channel = SmtpEmail(host="localhost", port=starttls_server.port)
    with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError)):
        await channel.send(_message())
    assert starttls_server.received == []


async def test_without_starttls_the_server_refuses_the_mail(starttls_server: MailServer) -> None:
    channel = SmtpEmail(host="localhost", port=starttls_server.port, security=SmtpSecurity.NONE)
    with pytest.raises(aiosmtplib.SMTPException):
        await channel.send(_message())
    assert starttls_server.received == []


@pytest.mark.parametrize(
    ("subject", "text", "html"),
    [
        ("Order 5F1C2A34 is confirmed", "Thank you\n", "<p>Thank you</p>"),
        # Beyond ASCII in a header, and in a body: encoded, read back the same.
        ("Commande 5F1C2A34 confirmée", "Merci, 12,50 €\n", "<p>Grüße</p>"),
        # A line longer than SMTP allows cannot travel as it is.
        ("Order 5F1C2A34 is confirmed", "Thank you\n", "<p>" + "x" * 1500 + "</p>"),
    ],
)
def test_a_message_reads_back_as_it_was_built(subject: str, text: str, html: str) -> None:
    unsubscribe = "https://shop.example/api/v1/notifications/unsubscribe?token=" + "t" * 80
    message = build_message(
        sender="Shop <no-reply@shop.example>",
        to="ada@example.com",
        subject=subject,
        text=text,
        html=html,
        message_id="5f1c2a34",
        unsubscribe_url=unsubscribe,
    )
    raw = message.as_bytes()
    assert all(len(line) <= 998 for line in raw.splitlines())
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["From"] == "Shop <no-reply@shop.example>"
    assert parsed["To"] == "ada@example.com"
    assert parsed["Subject"] == subject
    assert parsed["Message-ID"] == "<5f1c2a34@panthera.local>"
    assert parsed["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Date"] is not None
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed.get_body(preferencelist=("plain",)).get_content() == text
    assert parsed.get_body(preferencelist=("html",)).get_content().rstrip("\n") == html


def test_a_header_cannot_be_smuggled_into_a_message() -> None:
    with pytest.raises(ValueError, match="linefeed"):
        build_message(
            sender="Shop <no-reply@shop.example>",
            to="ada@example.com",
            subject="Hello\r\nBcc: everyone@example.com",
            text="t",
            html="<p>t</p>",
            message_id="5f1c2a34",
        )
