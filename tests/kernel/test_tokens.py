"""ES256 access tokens: issuing, every refusal, JWKS fetching, rotation, the verified cache.

Each refused token is crafted by hand to differ from a valid one in exactly one way;
``test_hand_crafted_baseline_verifies`` shows the unaltered baseline is accepted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from panthera.kernel.security.tokens import (
    REQUIRED_CLAIMS,
    AccessClaims,
    InvalidToken,
    JwksClient,
    KeySource,
    SigningKey,
    StaticKeySource,
    TokenIssuer,
    TokenVerifier,
    jwks_document,
    rotate,
)

ISSUER = "panthera"
AUDIENCE = "panthera-api"
NOW = 1_800_000_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = SigningKey.generate(now=datetime.fromtimestamp(NOW - 3600, UTC))


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingKeySource:
    """Wraps a key source and counts lookups, to see when the cache was bypassed."""

    def __init__(self, inner: KeySource) -> None:
        self.inner = inner
        self.lookups = 0

    async def get_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        self.lookups += 1
        return await self.inner.get_key(kid)


class FakeAuthService:
    """Serves a JWKS document like the auth service's endpoint would."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.calls = 0
        self.fail = False

    async def fetch(self) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("auth service unavailable")
        return jwks_document(self.keys)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: object) -> str:
    return b64(json.dumps(value).encode())


def sign_es256(
    header: object, payload: object | bytes, private_key: ec.EllipticCurvePrivateKey
) -> str:
    """A compact JWS signed exactly as given, with no library deciding the header."""
    payload_segment = b64(payload) if isinstance(payload, bytes) else b64json(payload)
    signing_input = f"{b64json(header)}.{payload_segment}"
    r, s = decode_dss_signature(private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def valid_header(key: SigningKey = KEY) -> dict[str, Any]:
    return {"alg": "ES256", "typ": "at+jwt", "kid": key.kid}


def valid_claims() -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 600,
        "jti": "0f" * 16,
        "roles": ["customer"],
    }


def make_verifier(
    keys: tuple[SigningKey, ...] = (KEY,), clock: Clock | None = None, **options: Any
) -> TokenVerifier:
    return TokenVerifier(
        StaticKeySource(jwks_document(keys)),
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=clock or Clock(NOW),
        **options,
    )


def make_issuer(
    keys: list[SigningKey] | tuple[SigningKey, ...] = (KEY,), now: float = NOW
) -> TokenIssuer:
    return TokenIssuer(keys, issuer=ISSUER, audience=AUDIENCE, clock=Clock(now))


async def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify_access_token(token)
    return caught.value.reason


# --- issuing and accepting -------------------------------------------------------


async def test_issued_access_token_verifies() -> None:
    token = make_issuer().issue_access_token(
        "user-1", roles=["customer", "admin"], ttl_seconds=900, extra={"client_id": "web"}
    )

    claims = await make_verifier().verify_access_token(token)

    assert isinstance(claims, AccessClaims)
    assert claims.subject == "user-1"
    assert claims.roles == ("customer", "admin")
    assert claims.issued_at == NOW
    assert claims.expires_at == NOW + 900
    assert len(claims.jti) == 32
    assert int(claims.jti, 16) >= 0
    assert claims.raw["client_id"] == "web"
    assert claims.raw["iss"] == ISSUER
    assert claims.raw["aud"] == AUDIENCE
    assert claims.raw["nbf"] == NOW
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "typ": "at+jwt", "kid": KEY.kid}


def test_every_token_gets_its_own_jti() -> None:
    issuer = make_issuer()
    tokens = [issuer.issue_access_token("u", roles=[], ttl_seconds=60) for _ in range(3)]
    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}
    assert len(jtis) == 3


def test_issuer_refuses_to_override_standard_claims() -> None:
    issuer = make_issuer()
    with pytest.raises(ValueError, match="override"):
        issuer.issue_access_token("u", roles=[], ttl_seconds=60, extra={"exp": NOW + 10**9})
    with pytest.raises(ValueError, match="roles"):
        issuer.issue_access_token("u", roles=[], ttl_seconds=60, extra={"roles": ["admin"]})
    with pytest.raises(TypeError):
        issuer.issue_access_token("u", roles="admin", ttl_seconds=60)
    with pytest.raises(ValueError, match="ttl"):
        issuer.issue_access_token("u", roles=[], ttl_seconds=0)


async def test_hand_crafted_baseline_verifies() -> None:
    token = sign_es256(valid_header(), valid_claims(), KEY.private_key)
    claims = await make_verifier().verify_access_token(token)
    assert claims.subject == "user-1"
    assert claims.roles == ("customer",)


async def test_audience_list_containing_ours_is_accepted() -> None:
    token = sign_es256(
        valid_header(), {**valid_claims(), "aud": ["other", AUDIENCE]}, KEY.private_key
    )
    assert (await make_verifier().verify_access_token(token)).subject == "user-1"


async def test_generic_verify_for_other_token_kinds() -> None:
    token = make_issuer().issue("user-1", typ="verify-email+jwt", ttl_seconds=60)
    verifier = make_verifier()
    assert (await verifier.verify(token, typ="verify-email+jwt"))["sub"] == "user-1"
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify_access_token(token)
    assert caught.value.reason == "wrong_typ"


# --- refusals, each one difference away from the baseline ---------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
async def test_refuses_alg_none(alg: str) -> None:
    token = f"{b64json({**valid_header(), 'alg': alg})}.{b64json(valid_claims())}."
    assert await refusal(make_verifier(), token) == "alg_not_allowed"


async def test_refuses_hs256_signed_with_the_public_key_as_secret() -> None:
    public_pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64json({**valid_header(), 'alg': 'HS256'})}.{b64json(valid_claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert await refusal(make_verifier(), f"{signing_input}.{b64(mac)}") == "alg_not_allowed"


@pytest.mark.parametrize("alg", ["ES384", "ES512", "RS256", "PS256", "EdDSA", "HS256"])
async def test_refuses_every_other_alg_header(alg: str) -> None:
    token = sign_es256({**valid_header(), "alg": alg}, valid_claims(), KEY.private_key)
    assert await refusal(make_verifier(), token) == "alg_not_allowed"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param({"kid": "not-a-known-kid"}, "unknown_kid", id="unknown kid"),
        pytest.param({"kid": None}, "missing_kid", id="missing kid"),
        pytest.param({"kid": ""}, "missing_kid", id="empty kid"),
        pytest.param({"jku": "https://attacker.example/jwks.json"}, "forbidden_header", id="jku"),
        pytest.param({"x5u": "https://attacker.example/cert.pem"}, "forbidden_header", id="x5u"),
        pytest.param({"x5c": ["MIIBszCCAVmgAwIBAgI="]}, "forbidden_header", id="x5c"),
        pytest.param({"jwk": KEY.public_jwk()}, "forbidden_header", id="jwk"),
        pytest.param({"crit": ["b64"], "b64": True}, "forbidden_header", id="crit b64"),
        pytest.param({"b64": False}, "malformed", id="b64 false"),
        pytest.param({"typ": "refresh+jwt"}, "wrong_typ", id="refresh token typ"),
        pytest.param({"typ": "JWT"}, "wrong_typ", id="plain JWT (e.g. an id token)"),
        pytest.param({"typ": None}, "wrong_typ", id="missing typ"),
    ],
)
async def test_refuses_header(header: dict[str, Any], reason: str) -> None:
    crafted = {**valid_header(), **header}
    crafted = {name: value for name, value in crafted.items() if value is not None}
    token = sign_es256(crafted, valid_claims(), KEY.private_key)
    assert await refusal(make_verifier(), token) == reason


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
async def test_accepts_the_spellings_of_the_access_token_typ(typ: str) -> None:
    token = sign_es256({**valid_header(), "typ": typ}, valid_claims(), KEY.private_key)
    assert (await make_verifier().verify_access_token(token)).subject == "user-1"


async def test_refuses_an_embedded_jwk_of_the_attackers_choosing() -> None:
    attacker = SigningKey.generate()
    embedded = {**valid_header(), "jwk": attacker.public_jwk()}
    token = sign_es256(embedded, valid_claims(), attacker.private_key)
    assert await refusal(make_verifier(), token) == "forbidden_header"
    # Without the header the attacker's signature is simply wrong for our kid.
    forged = sign_es256(valid_header(), valid_claims(), attacker.private_key)
    assert await refusal(make_verifier(), forged) == "bad_signature"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"exp": NOW}, "expired", id="expired"),
        pytest.param({"exp": NOW - 3600}, "expired", id="long expired"),
        pytest.param({"nbf": NOW + 60}, "not_yet_valid", id="nbf in the future"),
        pytest.param({"iat": NOW + 60}, "not_yet_valid", id="iat in the future"),
        pytest.param({"iss": "someone-else"}, "wrong_issuer", id="wrong iss"),
        pytest.param({"iss": "panther"}, "wrong_issuer", id="iss prefix"),
        pytest.param({"aud": "other-api"}, "wrong_audience", id="wrong aud"),
        pytest.param({"aud": ["other-api"]}, "wrong_audience", id="aud list without ours"),
        pytest.param({"exp": str(NOW + 600)}, "invalid_claim", id="exp as string"),
        pytest.param({"exp": True}, "invalid_claim", id="exp as boolean"),
        pytest.param({"sub": ""}, "invalid_claim", id="empty sub"),
        pytest.param({"sub": 42}, "invalid_claim", id="numeric sub"),
        pytest.param({"roles": "admin"}, "invalid_claim", id="roles as string"),
    ],
)
async def test_refuses_claims(changes: dict[str, Any], reason: str) -> None:
    token = sign_es256(valid_header(), {**valid_claims(), **changes}, KEY.private_key)
    assert await refusal(make_verifier(), token) == reason


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
async def test_refuses_missing_required_claim(claim: str) -> None:
    claims = valid_claims()
    del claims[claim]
    token = sign_es256(valid_header(), claims, KEY.private_key)
    assert await refusal(make_verifier(), token) == "missing_claim"


@pytest.mark.parametrize("bit", [0, 7, 200, 256, 511])
async def test_refuses_one_flipped_signature_bit(bit: int) -> None:
    token = make_issuer().issue_access_token("user-1", roles=[], ttl_seconds=60)
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    assert len(raw) == 64
    raw[bit // 8] ^= 1 << (bit % 8)
    tampered = f"{head}.{payload}.{b64(bytes(raw))}"
    assert tampered != token
    verifier = make_verifier()
    assert (await verifier.verify_access_token(token)).subject == "user-1"
    assert await refusal(verifier, tampered) == "bad_signature"


async def test_refuses_an_altered_payload() -> None:
    token = make_issuer().issue_access_token("user-1", roles=["customer"], ttl_seconds=60)
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    assert await refusal(make_verifier(), f"{head}.{b64json(claims)}.{signature}") == (
        "bad_signature"
    )


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-token", id="one segment"),
        pytest.param("a.b", id="two segments"),
        pytest.param("a.b.c", id="bad base64"),
        pytest.param("....", id="dots"),
        pytest.param(
            f"{b64json([1, 2])}.{b64json(valid_claims())}.AAAA", id="header not an object"
        ),
        pytest.param(f"{b64(b'{not json')}.{b64json(valid_claims())}.AAAA", id="header not json"),
        pytest.param("e" * 9000, id="too long"),
    ],
)
async def test_refuses_malformed(token: str) -> None:
    assert await refusal(make_verifier(), token) == "malformed"


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2, 3]"], ids=["not json", "not object"])
async def test_refuses_a_signed_payload_that_is_not_a_claims_object(payload: bytes) -> None:
    token = sign_es256(valid_header(), payload, KEY.private_key)
    assert await refusal(make_verifier(), token) == "malformed"


async def test_leeway_tolerates_small_clock_skew_only() -> None:
    token = sign_es256(valid_header(), {**valid_claims(), "nbf": NOW + 20}, KEY.private_key)
    assert await refusal(make_verifier(), token) == "not_yet_valid"
    lenient = make_verifier(leeway_seconds=30)
    assert (await lenient.verify_access_token(token)).subject == "user-1"


# --- the verified-token cache ------------------------------------------------------


async def test_cache_answers_repeat_verifications() -> None:
    source = CountingKeySource(StaticKeySource(jwks_document([KEY])))
    verifier = TokenVerifier(source, issuer=ISSUER, audience=AUDIENCE, clock=Clock(NOW))
    token = make_issuer().issue_access_token("user-1", roles=[], ttl_seconds=60)

    first = await verifier.verify_access_token(token)
    second = await verifier.verify_access_token(token)

    assert second == first
    assert source.lookups == 1
    with pytest.raises(TypeError):
        first.raw["sub"] = "someone-else"  # type: ignore[index]


@pytest.mark.parametrize("leeway", [0, 30])
async def test_cache_never_serves_an_expired_token(leeway: int) -> None:
    clock = Clock(NOW)
    source = CountingKeySource(StaticKeySource(jwks_document([KEY])))
    verifier = TokenVerifier(
        source, issuer=ISSUER, audience=AUDIENCE, clock=clock, leeway_seconds=leeway
    )
    token = make_issuer(now=NOW).issue_access_token("user-1", roles=[], ttl_seconds=60)

    await verifier.verify_access_token(token)
    clock.advance(59)
    await verifier.verify_access_token(token)
    assert source.lookups == 1

    clock.advance(1)  # now == exp: the cached entry must not answer any more
    if leeway:
        await verifier.verify_access_token(token)  # full verification, within leeway
        assert source.lookups == 2
        clock.advance(leeway)
        assert await refusal(verifier, token) == "expired"
        assert source.lookups == 3
    else:
        assert await refusal(verifier, token) == "expired"
        assert source.lookups == 2


async def test_cache_is_bounded_least_recently_used_first() -> None:
    source = CountingKeySource(StaticKeySource(jwks_document([KEY])))
    verifier = TokenVerifier(
        source, issuer=ISSUER, audience=AUDIENCE, clock=Clock(NOW), cache_size=2
    )
    issuer = make_issuer()
    first, second, third = (
        issuer.issue_access_token(f"user-{n}", roles=[], ttl_seconds=60) for n in range(3)
    )
    for token in (first, second, third):
        await verifier.verify_access_token(token)
    assert source.lookups == 3

    await verifier.verify_access_token(third)
    assert source.lookups == 3
    await verifier.verify_access_token(first)  # evicted by the third
    assert source.lookups == 4


# --- key sources ------------------------------------------------------------------


async def test_static_key_source_skips_keys_it_cannot_use() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    good = KEY.public_jwk()
    document = {
        "keys": [
            {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
            {
                "kty": "EC",
                "crv": "P-384",
                "kid": "p384",
                "x": b64(p384.x.to_bytes(48, "big")),
                "y": b64(p384.y.to_bytes(48, "big")),
            },
            {**good, "kid": "off-curve", "y": b64((1).to_bytes(32, "big"))},
            {**good, "kid": "encryption", "use": "enc"},
            {**good, "kid": "other-alg", "alg": "ES384"},
            "not an object",
            good,
        ]
    }
    source = StaticKeySource(document)
    assert await source.get_key(KEY.kid) is not None
    for kid in ("rsa", "p384", "off-curve", "encryption", "other-alg"):
        assert await source.get_key(kid) is None
    with pytest.raises(ValueError, match="keys"):
        StaticKeySource({"keys": "nope"})


async def test_jwks_client_caches_the_document() -> None:
    auth = FakeAuthService(KEY)
    client = JwksClient(auth.fetch, cache_seconds=300, clock=Clock(0))

    key = await client.get_key(KEY.kid)
    assert key is not None
    assert key.public_numbers() == KEY.public_key().public_numbers()
    await client.get_key(KEY.kid)
    assert auth.calls == 1


async def test_jwks_client_refetches_on_unknown_kid_after_rotation() -> None:
    clock = Clock(0)
    old = KEY
    auth = FakeAuthService(old)
    client = JwksClient(auth.fetch, cache_seconds=300, clock=clock)
    assert await client.get_key(old.kid) is not None

    new = SigningKey.generate()
    auth.keys = [new, old]
    clock.advance(10)

    assert await client.get_key(new.kid) is not None
    assert auth.calls == 2
    assert await client.get_key(old.kid) is not None
    assert auth.calls == 2


async def test_jwks_client_rate_limits_refetches_for_unknown_kids() -> None:
    clock = Clock(0)
    auth = FakeAuthService(KEY)
    client = JwksClient(auth.fetch, cache_seconds=300, min_refresh_interval_seconds=10, clock=clock)
    await client.get_key(KEY.kid)

    for n in range(100):
        assert await client.get_key(f"garbage-{n}") is None
    assert auth.calls == 1

    clock.advance(9.9)
    assert await client.get_key("garbage") is None
    assert auth.calls == 1
    clock.advance(0.1)
    assert await client.get_key("garbage") is None
    assert await client.get_key("more-garbage") is None
    assert auth.calls == 2


async def test_jwks_client_concurrent_lookups_share_one_fetch() -> None:
    auth = FakeAuthService(KEY)
    client = JwksClient(auth.fetch, cache_seconds=300, clock=Clock(0))
    found = await asyncio.gather(
        client.get_key(KEY.kid), *(client.get_key(f"garbage-{n}") for n in range(50))
    )
    assert found[0] is not None
    assert found[1:] == [None] * 50
    assert auth.calls == 1


async def test_jwks_client_lookups_during_a_fetch_wait_for_its_result() -> None:
    clock = Clock(0)
    old = KEY
    auth = FakeAuthService(old)
    client = JwksClient(auth.fetch, cache_seconds=300, clock=clock)
    await client.get_key(old.kid)
    new = SigningKey.generate()
    auth.keys = [new, old]
    clock.advance(10)

    found = await asyncio.gather(*(client.get_key(new.kid) for _ in range(20)))

    assert all(key is not None for key in found)
    assert auth.calls == 2


async def test_jwks_client_refreshes_a_stale_cache_and_keeps_keys_if_that_fails() -> None:
    clock = Clock(0)
    auth = FakeAuthService(KEY)
    client = JwksClient(auth.fetch, cache_seconds=300, clock=clock)
    await client.get_key(KEY.kid)

    clock.advance(301)
    auth.fail = True
    assert await client.get_key(KEY.kid) is not None  # last good keys still serve
    assert auth.calls == 2

    clock.advance(10)
    auth.fail = False
    auth.keys = []  # the key was withdrawn: a successful refresh forgets it
    assert await client.get_key(KEY.kid) is None
    assert auth.calls == 3


async def test_jwks_client_recovers_after_a_failed_first_fetch() -> None:
    clock = Clock(0)
    auth = FakeAuthService(KEY)
    auth.fail = True
    client = JwksClient(auth.fetch, cache_seconds=300, clock=clock)
    assert await client.get_key(KEY.kid) is None
    assert await client.get_key(KEY.kid) is None
    assert auth.calls == 1

    auth.fail = False
    clock.advance(10)
    assert await client.get_key(KEY.kid) is not None
    assert auth.calls == 2


async def test_jwks_client_treats_a_malformed_document_as_a_failed_fetch() -> None:
    async def fetch() -> dict[str, Any]:
        return {"not": "a jwks"}

    client = JwksClient(fetch, cache_seconds=300, clock=Clock(0))
    assert await client.get_key(KEY.kid) is None


# --- keys, JWKS and rotation --------------------------------------------------------


def test_public_jwk_and_jwks_document_hold_only_public_members() -> None:
    jwk = KEY.public_jwk()
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    assert len(jwk["x"]) == len(jwk["y"]) == 43
    assert jwks_document([KEY, KEY]) == {"keys": [jwk]}
    assert "PRIVATE" not in repr(KEY)


def test_public_jwk_verifies_tokens_independently_of_this_module() -> None:
    token = make_issuer().issue_access_token("user-1", roles=[], ttl_seconds=60)
    public = jwt.PyJWK(KEY.public_jwk())
    claims = jwt.decode(
        token,
        public,
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == "user-1"


def test_signing_key_refuses_other_curves_and_naive_times() -> None:
    p384_pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="P-256"):
        SigningKey(kid="k", private_key_pem=p384_pem, created_at=T0)
    with pytest.raises(ValueError, match="timezone"):
        SigningKey(kid="k", private_key_pem=KEY.private_key_pem, created_at=datetime(2026, 1, 1))


def named(kid: str) -> Callable[[datetime], SigningKey]:
    return lambda at: SigningKey.generate(now=at, kid=kid)


def test_issuer_signs_with_the_newest_active_key() -> None:
    old = SigningKey.generate(now=T0, kid="old")
    new = SigningKey.generate(now=T0 + timedelta(days=1), kid="new")
    assert make_issuer([new, old]).kid == "new"
    assert make_issuer([old, new]).kid == "new"
    assert make_issuer([old, new.retire()]).kid == "old"
    with pytest.raises(ValueError, match="active"):
        make_issuer([old.retire()])


def test_rotate_creates_a_first_key() -> None:
    keys = rotate([], T0, 30, 900, generate=named("first"))
    assert [(key.kid, key.active, key.created_at) for key in keys] == [("first", True, T0)]


def test_rotate_keeps_a_young_key() -> None:
    key = SigningKey.generate(now=T0, kid="k1")
    assert rotate([key], T0 + timedelta(days=29, hours=23), 30, 900) == [key]


async def test_rotation_keeps_tokens_of_the_previous_key_valid() -> None:
    old = SigningKey.generate(now=T0, kid="k1")
    rotated_at = T0 + timedelta(days=30)
    old_token = make_issuer([old], now=rotated_at.timestamp() - 1).issue_access_token(
        "user-1", roles=[], ttl_seconds=900
    )

    keys = rotate([old], rotated_at, 30, 900, generate=named("k2"))

    assert [(key.kid, key.active) for key in keys] == [("k2", True), ("k1", False)]
    assert [jwk["kid"] for jwk in jwks_document(keys)["keys"]] == ["k2", "k1"]
    new_token = make_issuer(keys, now=rotated_at.timestamp()).issue_access_token(
        "user-2", roles=[], ttl_seconds=900
    )
    assert jwt.get_unverified_header(new_token)["kid"] == "k2"
    verifier = make_verifier(tuple(keys), clock=Clock(rotated_at.timestamp() + 600))
    assert (await verifier.verify_access_token(old_token)).subject == "user-1"
    assert (await verifier.verify_access_token(new_token)).subject == "user-2"


def test_rotation_drops_the_previous_key_once_its_tokens_have_expired() -> None:
    old = SigningKey.generate(now=T0, kid="k1")
    rotated_at = T0 + timedelta(days=30)
    keys = rotate([old], rotated_at, 30, 900, generate=named("k2"))

    still = rotate(keys, rotated_at + timedelta(seconds=899), 30, 900)
    assert [key.kid for key in still] == ["k2", "k1"]
    later = rotate(still, rotated_at + timedelta(seconds=900), 30, 900)
    assert [key.kid for key in later] == ["k2"]
    assert jwks_document(later) == {"keys": [keys[0].public_jwk()]}


def test_late_rotation_keeps_the_previous_key_for_its_last_tokens() -> None:
    old = SigningKey.generate(now=T0, kid="k1")
    rotated_at = T0 + timedelta(days=40)  # nothing rotated for ten extra days
    keys = rotate([old], rotated_at, 30, 900, generate=named("k2"))

    assert [key.kid for key in rotate(keys, rotated_at + timedelta(seconds=899), 30, 900)] == [
        "k2",
        "k1",
    ]
    assert [key.kid for key in rotate(keys, rotated_at + timedelta(seconds=900), 30, 900)] == ["k2"]


def test_rotate_does_not_change_its_input() -> None:
    old = SigningKey.generate(now=T0, kid="k1")
    given = [old]
    rotate(given, T0 + timedelta(days=31), 30, 900, generate=named("k2"))
    assert given == [old]
    assert old.active
