"""Events the users service publishes: its public contract."""

from __future__ import annotations

import uuid
from datetime import datetime

from panthera.kernel.events import EventContract


class UserRegistered(EventContract):
    event_type = "user.registered"
    version = 1

    user_id: uuid.UUID
    email: str
    first_name: str
    last_name: str
    roles: list[str]
    email_verified: bool
    registered_at: datetime

    def subject(self) -> str:
        return str(self.user_id)


class UserUpdated(EventContract):
    """A profile, role or verification change; ``revision`` orders a user's updates."""

    event_type = "user.updated"
    version = 1

    user_id: uuid.UUID
    revision: int
    email: str
    first_name: str
    last_name: str
    phone_number: str | None
    roles: list[str]
    email_verified: bool
    changed: list[str]
    updated_at: datetime

    def subject(self) -> str:
        return str(self.user_id)


class UserDeleted(EventContract):
    event_type = "user.deleted"
    version = 1

    user_id: uuid.UUID
    deleted_at: datetime

    def subject(self) -> str:
        return str(self.user_id)


class _AccountLink(EventContract):
    """A single-use link to mail: the token travels so the notifications service can."""

    user_id: uuid.UUID
    email: str
    first_name: str
    token: str
    expires_at: datetime

    def subject(self) -> str:
        return str(self.user_id)


class EmailVerificationRequested(_AccountLink):
    """Carries the single-use token so the notifications service can mail the link."""

    event_type = "user.email_verification_requested"
    version = 1


class PasswordResetRequested(_AccountLink):
    """Carries the single-use reset token so the notifications service can mail the link."""

    event_type = "user.password_reset_requested"
    version = 1


class RegistrationAttemptedForExistingAccount(EventContract):
    """Someone tried to register an address that has an account: its owner is told."""

    event_type = "user.registration_attempted"
    version = 1

    user_id: uuid.UUID
    email: str
    first_name: str
    attempted_at: datetime

    def subject(self) -> str:
        return str(self.user_id)


PUBLISHED = (
    UserRegistered,
    UserUpdated,
    UserDeleted,
    EmailVerificationRequested,
    PasswordResetRequested,
    RegistrationAttemptedForExistingAccount,
)
