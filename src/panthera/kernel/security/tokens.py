"""Asymmetric (ES256) JSON Web Tokens: signing keys, issuing, verifying, key rotation.

The auth service alone holds private keys and issues access tokens (RFC 9068,
``typ: at+jwt``). Every other process verifies them with public keys read from
the auth service's JWKS document, so a compromised gateway or service can check
tokens but never mint them. Nothing here speaks HTTP: :class:`JwksClient` is
handed a ``fetch`` coroutine by its caller.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from types import MappingProxyType
from typing import Any, Final, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidJTIError,
    InvalidSignatureError,
    InvalidSubjectError,
    MissingRequiredClaimError,
    PyJWTError,
)
from jwt.types import Options

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ALGORITHM",
    "AccessClaims",
    "InvalidToken",
    "JwksClient",
    "KeySource",
    "SigningKey",
    "StaticKeySource",
    "TokenIssuer",
    "TokenVerifier",
    "jwks_document",
    "rotate",
]

log = logging.getLogger("panthera.security")

ALGORITHM: Final = "ES256"
ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 - a media type, not a secret
REQUIRED_CLAIMS: Final = ("exp", "iat", "nbf", "sub", "iss", "aud", "jti")
# Far above any token this platform issues; refuses absurd inputs before parsing.
MAX_TOKEN_LENGTH: Final = 8192

_RESERVED_CLAIMS: Final = frozenset(REQUIRED_CLAIMS)
# jku/x5u/x5c/jwk let the token's author choose the verification key: honouring
# any of them lets anyone with *a* key mint tokens, so their mere presence fails.
# crit and b64 change how a token is processed, in ways this platform never uses.
_FORBIDDEN_HEADERS: Final = frozenset({"jku", "x5u", "x5c", "jwk", "crit", "b64"})
# Time claims are checked below against the verifier's own clock, so that the
# verified-token cache and the expiry check agree on what "now" is.
_DECODE_OPTIONS: Final[Options] = {
    "verify_signature": True,
    "require": list(REQUIRED_CLAIMS),
    "verify_iss": True,
    "verify_aud": True,
    "verify_sub": True,
    "verify_jti": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
}
_P256_COORDINATE_BYTES: Final = 32
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+")


class InvalidToken(Exception):
    """A token was refused; ``reason`` is a stable machine code, safe to log.

    Codes: ``malformed``, ``alg_not_allowed``, ``forbidden_header``,
    ``missing_kid``, ``unknown_kid``, ``wrong_typ``, ``bad_signature``,
    ``missing_claim``, ``invalid_claim``, ``expired``, ``not_yet_valid``,
    ``wrong_issuer``, ``wrong_audience``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_members(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url_encode(numbers.x.to_bytes(_P256_COORDINATE_BYTES, "big")),
        "y": _b64url_encode(numbers.y.to_bytes(_P256_COORDINATE_BYTES, "big")),
    }


def _thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """The RFC 7638 JWK thumbprint: a kid that anyone can recompute from the key."""
    canonical = json.dumps(_public_members(key), sort_keys=True, separators=(",", ":"))
    return _b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True)
class SigningKey:
    """One ES256 (P-256) key pair of the auth service.

    Active keys may sign; retired ones (``active=False``) stay published in the
    JWKS only so that tokens they signed keep verifying until they expire.
    ``created_at`` must be timezone-aware.
    """

    kid: str
    # Kept out of repr so a logged key never leaks its private half.
    private_key_pem: bytes = field(repr=False)
    created_at: datetime
    active: bool = True

    def __post_init__(self) -> None:
        if not self.kid:
            raise ValueError("a signing key needs a kid")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        # Load now so a bad PEM fails where the key is built, not at first signature.
        _ = self.private_key

    @classmethod
    def generate(cls, *, now: datetime | None = None, kid: str | None = None) -> SigningKey:
        """A fresh P-256 key; its kid defaults to the key's RFC 7638 thumbprint."""
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cls(
            kid=kid or _thumbprint(private.public_key()),
            private_key_pem=pem,
            created_at=now or datetime.now(UTC),
        )

    @cached_property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The loaded private key (parsed once per instance)."""
        key = serialization.load_pem_private_key(self.private_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("signing keys must be EC P-256 keys (ES256)")
        return key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half, as used to verify."""
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public half as a JWK (RFC 7517/7518), ready for a JWKS document."""
        return {
            **_public_members(self.public_key()),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }

    def retire(self) -> SigningKey:
        """This key, kept for verification only."""
        return dataclasses.replace(self, active=False)


def jwks_document(keys: Iterable[SigningKey]) -> dict[str, list[dict[str, str]]]:
    """The JWKS (``{"keys": [...]}``) publishing the public half of every key given.

    Pass the output of :func:`rotate`: the active key and the retired ones whose
    tokens may still be alive. Private members never appear.
    """
    published: dict[str, dict[str, str]] = {}
    for key in keys:
        published.setdefault(key.kid, key.public_jwk())
    return {"keys": list(published.values())}


def _newest_active(keys: Iterable[SigningKey]) -> SigningKey | None:
    active = [key for key in keys if key.active]
    return max(active, key=lambda key: key.created_at) if active else None


def rotate(
    keys: Sequence[SigningKey],
    now: datetime,
    rotation_days: int,
    max_token_lifetime_seconds: int,
    *,
    generate: Callable[[datetime], SigningKey] | None = None,
) -> list[SigningKey]:
    """The key set to use from ``now`` on, newest first; the input is not changed.

    A new key is added when there is no active key or the newest active one is at
    least ``rotation_days`` old. Exactly one key stays active; the others are
    retired and kept for verification while tokens they signed may still be
    valid: until they are ``rotation_days + max_token_lifetime_seconds`` old, and
    in any case until ``max_token_lifetime_seconds`` after their successor was
    created (rotation may have run late, and the old key signed until then). Add
    any verifier leeway to ``max_token_lifetime_seconds``. ``generate`` makes the
    new key (default :meth:`SigningKey.generate`); inject it for deterministic tests.
    """
    if rotation_days <= 0:
        raise ValueError("rotation_days must be positive")
    if max_token_lifetime_seconds < 0:
        raise ValueError("max_token_lifetime_seconds must not be negative")
    rotation = timedelta(days=rotation_days)
    lifetime = timedelta(seconds=max_token_lifetime_seconds)

    current = _newest_active(keys)
    if current is None or now - current.created_at >= rotation:
        current = generate(now) if generate is not None else SigningKey.generate(now=now)
    by_kid = {key.kid: key for key in keys}
    by_kid[current.kid] = current
    timeline = sorted(by_kid.values(), key=lambda key: key.created_at)

    kept = [current]
    for index, key in enumerate(timeline):
        if key.kid == current.kid:
            continue
        successor_created = timeline[index + 1].created_at if index + 1 < len(timeline) else now
        retained_until = max(key.created_at + rotation, successor_created) + lifetime
        if now < retained_until:
            kept.append(key.retire() if key.active else key)
    return sorted(kept, key=lambda key: key.created_at, reverse=True)


class TokenIssuer:
    """Signs tokens with the newest active key of the set it is given.

    Build a new issuer after :func:`rotate` changes the key set.
    """

    def __init__(
        self,
        keys: Sequence[SigningKey],
        *,
        issuer: str,
        audience: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = _newest_active(keys)
        if key is None:
            raise ValueError("a token issuer needs an active signing key")
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self._clock = clock

    @property
    def kid(self) -> str:
        """The kid of the key new tokens are signed with."""
        return self._key.kid

    def issue(
        self,
        subject: str,
        *,
        typ: str,
        ttl_seconds: int,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed JWT of kind ``typ`` (the JOSE ``typ`` header) for ``subject``.

        ``claims`` are added to the standard ones (iss, aud, sub, iat, nbf, exp,
        jti), which they may not override.
        """
        if not subject:
            raise ValueError("a token needs a subject")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        extra = dict(claims or {})
        clash = _RESERVED_CLAIMS & extra.keys()
        if clash:
            raise ValueError(f"claims may not override {sorted(clash)}")
        now = int(self._clock())
        payload = {
            **extra,
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            payload,
            self._key.private_key,
            algorithm=ALGORITHM,
            headers={"kid": self._key.kid, "typ": typ},
        )

    def issue_access_token(
        self,
        subject: str,
        *,
        roles: Sequence[str],
        ttl_seconds: int,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """An RFC 9068 access token (``typ: at+jwt``) carrying ``roles``."""
        if isinstance(roles, str):
            raise TypeError("roles must be a sequence of role names, not one string")
        if extra is not None and "roles" in extra:
            raise ValueError("pass roles through the roles argument")
        return self.issue(
            subject,
            typ=ACCESS_TOKEN_TYPE,
            ttl_seconds=ttl_seconds,
            claims={**(extra or {}), "roles": list(roles)},
        )


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says. ``raw`` is a read-only view of all claims."""

    subject: str
    roles: tuple[str, ...]
    jti: str
    expires_at: int
    issued_at: int
    raw: Mapping[str, Any]


class KeySource(Protocol):
    """Where a verifier finds the public key a token names in its ``kid`` header."""

    async def get_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The P-256 public key called ``kid``, or None when there is none."""


def _public_key_from_jwk(entry: object) -> tuple[str, ec.EllipticCurvePublicKey] | None:
    """A usable (kid, key) from one JWKS entry, or None for anything else.

    Keys of other types, curves or uses are skipped rather than refused: a JWKS
    may legitimately publish keys meant for something else.
    """
    if not isinstance(entry, Mapping):
        return None
    kid, x, y = entry.get("kid"), entry.get("x"), entry.get("y")
    if (
        entry.get("kty") != "EC"
        or entry.get("crv") != "P-256"
        or entry.get("use", "sig") != "sig"
        or entry.get("alg", ALGORITHM) != ALGORITHM
        or not isinstance(kid, str)
        or not kid
        or not isinstance(x, str)
        or not isinstance(y, str)
    ):
        return None
    try:
        x_bytes, y_bytes = _b64url_decode(x), _b64url_decode(y)
        if len(x_bytes) != _P256_COORDINATE_BYTES or len(y_bytes) != _P256_COORDINATE_BYTES:
            return None
        # cryptography refuses points that are not on the curve.
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x_bytes, "big"), int.from_bytes(y_bytes, "big"), ec.SECP256R1()
        )
        return kid, numbers.public_key()
    except ValueError:
        return None


def _parse_jwks(document: object) -> dict[str, ec.EllipticCurvePublicKey]:
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError("a JWKS document is an object with a 'keys' list")
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for entry in entries:
        parsed = _public_key_from_jwk(entry)
        if parsed is not None:
            keys.setdefault(parsed[0], parsed[1])
    return keys


class StaticKeySource:
    """Keys from a JWKS document known up front (tests, or the auth service itself)."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = _parse_jwks(jwks)

    async def get_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The key called ``kid``, or None."""
        return self._keys.get(kid)


class JwksClient:
    """Keys from the auth service's JWKS, cached, refetched when a new kid appears.

    A kid missing from the cache triggers a refetch, so a rotation is picked up
    without a restart; but fetches (failed ones included) happen at most once per
    ``min_refresh_interval_seconds``, so a flood of tokens with made-up kids
    cannot hammer the auth service. When a refetch fails the last good keys keep
    being used: they cannot be forged, and refusing every request while the auth
    service is briefly down would be worse. ``fetch`` should apply its own timeout:
    concurrent lookups wait for the one fetch in flight.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Mapping[str, Any]]],
        *,
        cache_seconds: int,
        min_refresh_interval_seconds: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._cache_seconds = cache_seconds
        self._min_interval = min_refresh_interval_seconds
        self._clock = clock
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def get_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The key called ``kid``, refetching the JWKS if it is unknown or stale."""
        key = self._keys.get(kid)
        if key is not None and self._fresh():
            return key
        await self._refresh()
        return self._keys.get(kid)

    def _fresh(self) -> bool:
        return (
            self._fetched_at is not None and self._clock() - self._fetched_at < self._cache_seconds
        )

    def _throttled(self) -> bool:
        return (
            self._attempted_at is not None
            and self._clock() - self._attempted_at < self._min_interval
        )

    async def _refresh(self) -> None:
        # Throttled and nothing in flight: answer from what is known, at once. With
        # a fetch in flight, wait for it (its result may hold the kid), then the
        # check under the lock stops the waiters from fetching again.
        if self._throttled() and not self._lock.locked():
            return
        async with self._lock:
            if self._throttled():
                return
            self._attempted_at = self._clock()
            try:
                keys = _parse_jwks(await self._fetch())
            except Exception:
                log.warning(
                    "fetching the JWKS failed; keeping the keys already known", exc_info=True
                )
                return
            self._keys = keys
            self._fetched_at = self._clock()


def _accepted_types(typ: str) -> frozenset[str]:
    # RFC 7515 §4.1.9: "typ" is compared case-insensitively and may omit "application/".
    lowered = typ.lower()
    return frozenset({lowered, f"application/{lowered}"})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class TokenVerifier:
    """Checks tokens signed by the auth service; refuses anything doubtful.

    Successful access-token verifications are memoized (bounded LRU keyed by the
    token string) because the gateway verifies every request; an entry is served
    only while the token is unexpired by the verifier's clock. A key removed from
    the JWKS therefore stops verifying cached tokens only when they expire.
    """

    def __init__(
        self,
        jwks: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway_seconds: int = 0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        self._keys = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[str, AccessClaims] = OrderedDict()

    async def verify_access_token(self, token: str) -> AccessClaims:
        """The claims of a valid access token; raises :class:`InvalidToken` otherwise."""
        cached = self._cache.get(token)
        if cached is not None:
            if self._clock() < cached.expires_at:
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
        claims = await self.verify(token, typ=ACCESS_TOKEN_TYPE)
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise InvalidToken("invalid_claim")
        access = AccessClaims(
            subject=claims["sub"],
            roles=tuple(roles),
            jti=claims["jti"],
            expires_at=claims["exp"],
            issued_at=claims["iat"],
            raw=MappingProxyType(claims),
        )
        self._remember(token, access)
        return access

    def clear_cache(self) -> None:
        """Forget every memoized verification (after revoking a key, say)."""
        self._cache.clear()

    def _remember(self, token: str, claims: AccessClaims) -> None:
        if self._cache_size <= 0:
            return
        self._cache[token] = claims
        self._cache.move_to_end(token)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def verify(self, token: str, *, typ: str) -> dict[str, Any]:
        """The claims of a valid token of kind ``typ``; raises :class:`InvalidToken`.

        Not memoized; :meth:`verify_access_token` is the hot path.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as exc:
            raise InvalidToken("malformed") from exc
        kid = self._check_header(header, typ)
        key = await self._keys.get_key(kid)
        if key is None:
            raise InvalidToken("unknown_kid")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options=_DECODE_OPTIONS,
            )
        except InvalidSignatureError as exc:
            raise InvalidToken("bad_signature") from exc
        except InvalidAlgorithmError as exc:
            raise InvalidToken("alg_not_allowed") from exc
        except MissingRequiredClaimError as exc:
            raise InvalidToken("missing_claim") from exc
        except InvalidIssuerError as exc:
            raise InvalidToken("wrong_issuer") from exc
        except InvalidAudienceError as exc:
            raise InvalidToken("wrong_audience") from exc
        except (InvalidSubjectError, InvalidJTIError) as exc:
            raise InvalidToken("invalid_claim") from exc
        except PyJWTError as exc:
            raise InvalidToken("malformed") from exc
        self._check_claims(claims)
        return claims

    def _check_header(self, header: Mapping[str, Any], typ: str) -> str:
        # The header is unauthenticated here: it only selects what to refuse and
        # which of our own keys to try, never how to verify.
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("alg_not_allowed")
        if _FORBIDDEN_HEADERS & header.keys():
            raise InvalidToken("forbidden_header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("missing_kid")
        token_type = header.get("typ")
        if not isinstance(token_type, str) or token_type.lower() not in _accepted_types(typ):
            raise InvalidToken("wrong_typ")
        return kid

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        # PyJWT has checked iss and aud already; checking again costs nothing and
        # keeps these rules independent of how a PyJWT release interprets them.
        if claims["iss"] != self._issuer:
            raise InvalidToken("wrong_issuer")
        audience = claims["aud"]
        if audience != self._audience and not (
            isinstance(audience, list) and self._audience in audience
        ):
            raise InvalidToken("wrong_audience")
        for name in ("sub", "jti"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise InvalidToken("invalid_claim")
        expires, not_before, issued = claims["exp"], claims["nbf"], claims["iat"]
        if not (_is_int(expires) and _is_int(not_before) and _is_int(issued)):
            raise InvalidToken("invalid_claim")
        now = self._clock()
        if expires <= now - self._leeway:
            raise InvalidToken("expired")
        if not_before > now + self._leeway or issued > now + self._leeway:
            raise InvalidToken("not_yet_valid")
