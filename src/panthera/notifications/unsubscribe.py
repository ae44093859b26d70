"""Signed unsubscribe links: anyone holding one may stop that user's optional mail, nothing more."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

from panthera.notifications.errors import InvalidUnsubscribeToken

_PURPOSE = b"panthera.notifications.unsubscribe.v1"
_MAC_BYTES = 16


class UnsubscribeTokens:
    """``base64url(user id || HMAC-SHA256(key, purpose || user id)[:16])``.

    The link must work from a mail client without signing in, for as long as the
    mail is kept, so it carries no expiry; it grants only "stop optional mail".
    """

    def __init__(self, secret: bytes) -> None:
        # A key of its own, derived from the platform secret: a token made for this
        # purpose is worthless for any other.
        self._key = hmac.new(secret, _PURPOSE, hashlib.sha256).digest()

    def _mac(self, user_id: uuid.UUID) -> bytes:
        return hmac.new(self._key, _PURPOSE + user_id.bytes, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, user_id: uuid.UUID) -> str:
        """The token of ``user_id``'s unsubscribe link."""
        raw = user_id.bytes + self._mac(user_id)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def verify(self, token: str) -> uuid.UUID:
        """The user a genuine token names; ``InvalidUnsubscribeToken`` otherwise."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError as exc:
            raise InvalidUnsubscribeToken() from exc
        if len(raw) != 16 + _MAC_BYTES:
            raise InvalidUnsubscribeToken()
        user_id = uuid.UUID(bytes=raw[:16])
        if not hmac.compare_digest(raw[16:], self._mac(user_id)):
            raise InvalidUnsubscribeToken()
        return user_id
