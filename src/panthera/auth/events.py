"""Events the auth service publishes: its public contract."""

from __future__ import annotations

import uuid
from datetime import datetime

from panthera.kernel.events import EventContract


class UserLoggedIn(EventContract):
    event_type = "user.logged_in"
    version = 1

    user_id: uuid.UUID
    method: str
    logged_in_at: datetime

    def subject(self) -> str:
        return str(self.user_id)


class RefreshTokenReused(EventContract):
    """A rotated refresh token came back: likely stolen, so its whole family was revoked."""

    event_type = "auth.refresh_token_reused"
    version = 1

    user_id: uuid.UUID
    family_id: uuid.UUID
    detected_at: datetime

    def subject(self) -> str:
        return str(self.user_id)


class PasswordChanged(EventContract):
    event_type = "user.password_changed"
    version = 1

    user_id: uuid.UUID
    changed_at: datetime

    def subject(self) -> str:
        return str(self.user_id)


PUBLISHED = (UserLoggedIn, RefreshTokenReused, PasswordChanged)
