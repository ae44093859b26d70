# common-passwords.txt.gz: the first 10,000 entries, lowercased, of the "passwords"
# frequency list in the zxcvbn 4.5.0 package on PyPI (zxcvbn-python,
# https://github.com/dwolfhub/zxcvbn-python, MIT License, Copyright (c) 2016 Daniel
# Wolf; a port of Dropbox's zxcvbn, also MIT licensed). One password a line, most
# common first.
"""Password hashing (argon2id) and the platform's password policy."""

from __future__ import annotations

import asyncio
import gzip
import secrets
from collections.abc import Collection
from functools import cache
from importlib import resources
from typing import Final

import argon2
from argon2.exceptions import VerificationError

__all__ = [
    "COMMON",
    "INVALID_CHARACTERS",
    "MATCHES_EMAIL",
    "TOO_LONG",
    "TOO_SHORT",
    "PasswordHasher",
    "PasswordPolicy",
    "common_passwords",
]

# Problem codes returned by PasswordPolicy.check.
TOO_SHORT: Final = "too_short"
TOO_LONG: Final = "too_long"
COMMON: Final = "common"
MATCHES_EMAIL: Final = "matches_email"
INVALID_CHARACTERS: Final = "invalid_characters"

_COMMON_PASSWORDS_FILE: Final = "common-passwords.txt.gz"
_SALT_BYTES: Final = 16
_HASH_BYTES: Final = 32


class PasswordHasher:
    """argon2id hashing with a 16-byte random salt and a 32-byte hash.

    The defaults are OWASP's minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
    Every call costs tens of milliseconds of CPU: from async code use the
    ``*_async`` variants, which run in a worker thread.
    """

    def __init__(
        self, *, memory_cost: int = 19_456, time_cost: int = 2, parallelism: int = 1
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=_HASH_BYTES,
            salt_len=_SALT_BYTES,
            type=argon2.Type.ID,
        )
        # Made with the same parameters as real hashes, so checking a password
        # against it costs what checking a real one does.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))

    def hash(self, password: str) -> str:
        """The encoded hash (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``) to store."""
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash``; False, never an error, otherwise.

        Hashes of other argon2 variants or parameters still verify; follow a
        success with :meth:`needs_rehash`.
        """
        try:
            return self._hasher.verify(stored_hash, password)
        # ValueError covers malformed hashes (InvalidHashError) and text that
        # cannot be encoded (lone surrogates).
        except (VerificationError, ValueError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether ``stored_hash`` differs from what :meth:`hash` makes now.

        True for weaker (or merely different) costs, salt or hash lengths, for
        argon2i and argon2d hashes, and for anything unparsable.
        """
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except ValueError:
            return True

    def dummy_verify(self, password: str) -> bool:
        """Spend the time of a real verification, then return False.

        Call it when the account does not exist, so that the response time does
        not tell an unknown email from a wrong password.
        """
        self.verify(self._dummy_hash, password)
        return False

    async def hash_async(self, password: str) -> str:
        """:meth:`hash`, off the event loop."""
        return await asyncio.to_thread(self.hash, password)

    async def verify_async(self, stored_hash: str, password: str) -> bool:
        """:meth:`verify`, off the event loop."""
        return await asyncio.to_thread(self.verify, stored_hash, password)

    async def dummy_verify_async(self, password: str) -> bool:
        """:meth:`dummy_verify`, off the event loop."""
        return await asyncio.to_thread(self.dummy_verify, password)


@cache
def common_passwords() -> frozenset[str]:
    """The bundled common-password list, lowercased; read once, on first use."""
    data = resources.files(__package__ or "panthera.kernel.security").joinpath(
        _COMMON_PASSWORDS_FILE
    )
    text = gzip.decompress(data.read_bytes()).decode("utf-8")
    return frozenset(line for line in text.splitlines() if line)


class PasswordPolicy:
    """What a new password must satisfy; :meth:`check` lists the problems found.

    Passwords are taken exactly as typed: nothing is trimmed or normalized, and
    length counts characters (code points), not bytes.
    """

    def __init__(
        self,
        *,
        min_length: int = 8,
        max_length: int = 128,
        common: Collection[str] | None = None,
    ) -> None:
        if not 0 < min_length <= max_length:
            raise ValueError("need 0 < min_length <= max_length")
        self.min_length = min_length
        self.max_length = max_length
        # None means the bundled list, loaded lazily so importing this costs nothing.
        self._common = frozenset(entry.lower() for entry in common) if common is not None else None

    def check(self, password: str, *, email: str | None = None) -> list[str]:
        """The problem codes for ``password`` (empty when it is acceptable).

        Codes: ``too_short``, ``too_long``, ``invalid_characters`` (not encodable
        as UTF-8), ``common`` (in the common-password list, ignoring case) and
        ``matches_email`` (the email or its local part, ignoring case).
        """
        problems: list[str] = []
        if len(password) < self.min_length:
            problems.append(TOO_SHORT)
        if len(password) > self.max_length:
            problems.append(TOO_LONG)
        try:
            password.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(INVALID_CHARACTERS)
        lowered = password.lower()
        common = self._common if self._common is not None else common_passwords()
        if lowered in common:
            problems.append(COMMON)
        if email:
            address = email.strip().lower()
            local_part = address.rpartition("@")[0]
            if lowered == address or (local_part and lowered == local_part):
                problems.append(MATCHES_EMAIL)
        return problems
